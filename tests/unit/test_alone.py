"""tests/alone.py: under xdist the ``alone`` tests run after the others, in a process of
their own, and a test that judges a p95 against a baseline without the mark fails. Run as
a real ``pytest -n 2`` of tests written here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

pytest.importorskip("xdist", reason="pytest-xdist is not installed (the [test] extra has it)")

TIMED = """
import os, time
import pytest

def _spent(name, t0):
    with open(os.environ["ALONE_LOG"], "a") as f:
        f.write(f"{name} {t0} {time.monotonic()} {os.getpid()}\\n")

@pytest.mark.alone
@pytest.mark.parametrize("i", range(2))
def test_alone(i):
    t0 = time.monotonic(); time.sleep(0.2); _spent(f"alone{i}", t0)

@pytest.mark.parametrize("i", range(12))
def test_plain(i):
    t0 = time.monotonic(); time.sleep(0.15); _spent(f"plain{i}", t0)
"""

FAILING_ALONE = """
import pytest

@pytest.mark.alone
def test_alone_fails():
    assert False, "an alone test failed"

def test_plain_passes():
    pass
"""

JUDGED = """
import pytest
from ashat.verify import performance

def test_unmarked_judges():
    assert performance.regression_verdict(40.0, [30.0], 0.5)[0]

@pytest.mark.alone
def test_marked_judges():
    assert performance.regression_verdict(40.0, [30.0], 0.5)[0]

def test_unmarked_without_baseline():
    assert performance.regression_verdict(40.0, [], 0.5)[0]
"""


def _pytest_n2(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_here.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["ALONE_LOG"] = str(tmp_path / "log")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "alone", "-n", "2", "-p", "no:cacheprovider",
         "-p", "no:benchmark", "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_alone_tests_run_after_the_others_in_a_process_of_their_own(tmp_path: Path) -> None:
    run = _pytest_n2(tmp_path, TIMED)
    assert run.returncode == 0, run.stdout + run.stderr
    spans = {
        name: (float(a), float(b), pid)
        for name, a, b, pid in (
            line.split() for line in (tmp_path / "log").read_text().split("\n") if line
        )
    }
    assert len(spans) == 14
    alone = [s for n, s in spans.items() if n.startswith("alone")]
    plain = [s for n, s in spans.items() if n.startswith("plain")]
    assert min(a for a, _, _ in alone) > max(b for _, b, _ in plain)  # after every other
    assert len({pid for _, _, pid in alone}) == 1  # one process of their own
    assert not {pid for _, _, pid in alone} & {pid for _, _, pid in plain}
    assert len({pid for _, _, pid in plain}) == 2  # and the others did share two
    assert "2 passed, 12 deselected" in run.stdout and "12 passed" in run.stdout


def test_an_alone_test_that_fails_fails_the_run(tmp_path: Path) -> None:
    run = _pytest_n2(tmp_path, FAILING_ALONE)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "an alone test failed" in run.stdout


def test_judging_a_baseline_unmarked_fails_and_says_to_mark_it(tmp_path: Path) -> None:
    run = _pytest_n2(tmp_path, JUDGED)
    assert run.returncode == 1, run.stdout + run.stderr
    # Each call passes; the unmarked one that judged a baseline errs at its teardown.
    assert "1 passed, 2 deselected" in run.stdout, run.stdout  # the alone phase
    assert "2 passed, 1 error" in run.stdout, run.stdout  # the workers
    assert "ERROR test_here.py::test_unmarked_judges" in run.stdout
    assert "mark it @pytest.mark.alone" in run.stdout
