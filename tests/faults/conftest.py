"""The fault suite's fixtures: a tiny project pushing a tiny app, quick client retries, and the
run's seed and injection count in the terminal summary (see faultlib.py and README.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultlib import DEFAULT_INJECTIONS, SETTINGS, TALLY

from process_fixtures import TINY_APP
from support import enter_project

TINY_TOML = """[app]
name = "tiny"
run = "python3 app.py --port {port}"  # the tiny app reads $PORT
health_path = "/health"
health_timeout_s = 10

[verify]
disabled = ["modules", "api", "database", "performance", "security"]

[approval]
required = 1
allow_self_approval = true

[distribution]
waves = [50, 100]
max_failure_ratio = 0.5
wave_timeout_s = 45
auto_rollback = false
"""


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``deploy`` client retries a dead server three times with 0.2 s, 0.4 s, 0.8 s pauses;
    the suite kills servers a hundred times, so it retries after 10 ms instead."""
    from ashat.transport import client

    real = client.AgentClient.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backoff_s", 0.01)
        real(self, *args, **kwargs)

    monkeypatch.setattr(client.AgentClient, "__init__", init)


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """``tiny_project(signing_key)``: a project whose tree is the tiny app (it notes its start
    and answers /health with its release), as the cwd, acting as alice; its root."""

    def make(signing_key: Path) -> Path:
        root = tmp_path / "alpha"
        root.mkdir()
        (root / "ashat.toml").write_text(TINY_TOML)
        (root / "app.py").write_text(TINY_APP)
        (root / "files").mkdir()
        return enter_project(root, monkeypatch, signing_key)

    return make


TIMEOUT_S = 600  # per crash test at the CI size, on a busy 2-core machine; scaled up with it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The crash tests' time grows with the injections asked (ASHAT_FAULT_LONG: tenfold)."""
    here = Path(__file__).parent
    scale = max(1.0, SETTINGS.injections / DEFAULT_INJECTIONS)
    for item in items:
        if (
            item.path.is_relative_to(here)
            and item.name.startswith("test_")
            and "crash" in (item.path.name)
        ):
            item.add_marker(pytest.mark.timeout(int(TIMEOUT_S * scale)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.total:
        terminalreporter.write_sep("-", "fault suite")
        terminalreporter.write_line(
            f"ASHAT_FAULT_SEED={SETTINGS.seed}: {TALLY.total} injections "
            f"(asked {SETTINGS.injections}); by test {TALLY.by_test}"
        )
        terminalreporter.write_line(f"by point {dict(sorted(TALLY.by_point.items()))}")
