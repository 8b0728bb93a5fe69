"""Fixtures of the browser tests: the real agents, mainframes and ``ashat serve`` processes
of the integration tests, and a headless Chromium driven by Playwright for Python.

The integration fixtures live in ``tests/integration/conftest.py``; the test directories are
not packages, so that file is loaded here under a name of its own and its fixtures named
again. The browser is Debian's ``chromium`` (or ``$ASHAT_CHROMIUM``), never a download: the
tests skip, saying why, where it or Playwright cannot be found.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
# It imports tests/integration/support.py, importable as pytest makes it for its own tests.
if str(_PATH.parent) not in sys.path:
    sys.path.append(str(_PATH.parent))
_SPEC = importlib.util.spec_from_file_location("ashat_integration_fixtures", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
integration = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = integration
_SPEC.loader.exec_module(integration)

agent_factory = integration.agent_factory
mainframe_factory = integration.mainframe_factory
serve_process = integration.serve_process
hello_fleet = integration.hello_fleet

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """``$ASHAT_CHROMIUM``, else Debian's ``chromium`` on the PATH."""
    explicit = os.environ.get("ASHAT_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for one module (each test opens its own context). Not longer:
    Playwright's sync API holds an event loop in this thread while it runs, which later
    tests calling ``asyncio.run`` must not find."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install -e '.[test]'")
    exe = chromium_path()
    if exe is None:
        pytest.skip(
            "Chromium not found (apt-get install chromium, or set ASHAT_CHROMIUM): .ci/run "
            "installs it where apt-get is available"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: ``$ASHAT_E2E_SCREENSHOTS`` to keep them, else tmp."""
    keep = os.environ.get("ASHAT_E2E_SCREENSHOTS")
    d = Path(keep) if keep else tmp_path / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d
