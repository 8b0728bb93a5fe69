"""Fixtures of the browser tests: the real agents, mainframes and ``ashat serve`` processes
of the integration tests, and a headless Chromium driven by Playwright for Python.

The process fixtures (``agent_factory``, ``serve_process``, ``hello_fleet``, …) come from
tests/process_fixtures.py, registered by tests/conftest.py. The browser is Debian's
``chromium`` (or ``$ASHAT_CHROMIUM``), never a download: the tests skip, saying why, where
it or Playwright cannot be found.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
