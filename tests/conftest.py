"""Fixtures shared by every test directory: a real store on a temp SQLite file, a settable
clock, and a project directory for driving the CLI; and, from ``process_fixtures.py``, the
real processes on loopback (agents, mainframes, ``ashat serve``, a whole hello fleet) that
the integration, fault and browser tests start. Plain helpers are in ``support.py``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ashat.store.db import Database
from ashat.store.store import Store

pytest_plugins = ["process_fixtures"]  # tests/process_fixtures.py: tests/ is on sys.path


class FakeClock:
    """A :class:`ashat.workflow.ports.Clock` that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ashat.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(Database(db_url))
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project (``ashat.toml``) as the cwd, acting as ``alice``, without colour."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.setenv("ASHAT_USER", "alice")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("ASHAT_DB", raising=False)
    return root
