"""``@pytest.mark.alone``: a test whose verdict times the machine runs while no other does.

With pytest-xdist (``-n 2``) two tests share the machine's two cores. Most do not care; a
test that judges a measured latency does: the Performance Baseline check of a second
``deploy verify`` compares the app's p95 with the first run's, and another process's load
in one run and not in the other reads as a regression (it did, once in five runs).

Every worker of one run shares two lock files, in a directory the controller makes for the
run (``PYTEST_ALONE_DIR``, which its workers inherit) and removes at its end. A test takes the
turnstile, then the room: a plain test shares the room and lets the turnstile go at once;
an ``alone`` test holds the turnstile (so no plain test starts behind it) and takes the
room for itself, which it gets once the other worker's current test ends. Waiting is
outside the test's own timeout. In one process (no xdist) nothing is locked.

The rule is kept, not hoped for: under xdist, a test not marked ``alone`` that judges a
p95 against a stored baseline fails and says to mark it (``_judged_unmarked``). Tests that
run the check in a subprocess (the docs' scenarios) are marked where they are collected.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
LOCKS = "PYTEST_ALONE_DIR"
_made = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: runs while no other test runs (under pytest-xdist): its verdict times the "
        "machine (tests/alone.py)",
    )
    if WORKER is None and config.getoption("numprocesses", default=None):
        # Before the workers start (xdist starts them at session start): they inherit it.
        config.stash[_made] = os.environ[LOCKS] = tempfile.mkdtemp(prefix="ashat-tests-alone-")


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_made, None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


@contextmanager
def _locked(path: str, how: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # closing lets the lock go


@contextmanager
def _turn(alone: bool) -> Iterator[None]:
    base = os.path.join(os.environ[LOCKS], "tests")
    with ExitStack() as held:
        with _locked(base + ".turnstile", fcntl.LOCK_EX):
            held.enter_context(_locked(base + ".room", fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        yield


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Generator[None, None, None]:
    if WORKER is None or LOCKS not in os.environ:
        yield
        return
    with _turn(item.get_closest_marker("alone") is not None):
        yield


@pytest.fixture(autouse=True)
def _judged_unmarked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Under xdist, fail a test that judges a p95 against a baseline but is not ``alone``.

    Noted when it happens and failed at teardown: the check may run on a worker thread.
    """
    if WORKER is None or request.node.get_closest_marker("alone") is not None:
        yield
        return
    from ashat.verify import performance

    judge = performance.regression_verdict
    judged: list[float] = []

    def watched(p95: float, runs: list[float] | None, max_regression: float | None) -> Any:
        if runs and max_regression is not None:
            judged.append(p95)
        return judge(p95, runs, max_regression)

    monkeypatch.setattr(performance, "regression_verdict", watched)
    yield
    if judged:
        pytest.fail(
            "this test judges a p95 against a stored baseline while another test may load "
            "the machine: mark it @pytest.mark.alone (tests/alone.py)"
        )
