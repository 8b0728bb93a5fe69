"""``@pytest.mark.alone``: a test whose verdict times the machine runs with nothing else.

With pytest-xdist (``-n 2``) two tests share the machine's two cores, and each keeps the
processes of its module's fixtures running (a fleet of mainframes polling, say). Most tests
do not care; a test that judges a measured latency does: the Performance Baseline check of
a second ``deploy verify`` compares the app's p95 with the first run's, and load in one run
and not in the other reads as a regression. It did, in three of eight full runs: twice
while the other process ran a test, once while that process only waited on a lock with its
module's fleet still polling.

So under xdist the workers leave the ``alone`` tests out, and once they are done the
controller runs those in one more pytest process of their own (``-n 0 -m alone``, the same
arguments otherwise), with no other test and no other fixture running; its output follows
the workers', and a failure there fails the run. In one process (``-n 0``) they run in
their place, as any other.

The rule is kept, not hoped for: under xdist, a test not marked ``alone`` that judges a
p95 against a stored baseline fails and says to mark it (``_judged_unmarked``). Tests that
run the check in a subprocess (the docs' scenarios) are marked where they are collected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
NO_TESTS = 5  # pytest's exit status when nothing was collected


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: runs with no other test running (after the others, under pytest-xdist): "
        "its verdict times the machine (tests/alone.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if WORKER is None:
        return
    alone = [item for item in items if item.get_closest_marker("alone") is not None]
    if alone:  # the controller runs them when the workers are done
        config.hook.pytest_deselected(items=alone)
        items[:] = [item for item in items if item.get_closest_marker("alone") is None]


def _xdist(config: pytest.Config) -> bool:
    return WORKER is None and bool(config.getoption("numprocesses", default=None))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _xdist(config) or exitstatus not in (0, 1, NO_TESTS) or session.shouldstop:
        return
    args = [*config.invocation_params.args, "-n", "0", "-m", "alone"]
    sys.stdout.flush()
    print("\nthe tests that time the machine, alone (tests/alone.py):", flush=True)
    code = subprocess.call(
        [sys.executable, "-m", "pytest", *args], cwd=config.invocation_params.dir
    )
    if code not in (0, NO_TESTS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif code == 0 and exitstatus == NO_TESTS:  # every test selected was an alone one
        session.exitstatus = pytest.ExitCode.OK


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
