"""tests/alone.py: under xdist an ``alone`` test runs while no other does, and a test that
judges a p95 against a baseline without the mark fails. Run as a real ``pytest -n 2`` of
tests written here."""

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
        f.write(f"{name} {t0} {time.monotonic()}\\n")

@pytest.mark.alone
@pytest.mark.parametrize("i", range(2))
def test_alone(i):
    t0 = time.monotonic(); time.sleep(0.4); _spent(f"alone{i}", t0)

@pytest.mark.parametrize("i", range(12))
def test_plain(i):
    t0 = time.monotonic(); time.sleep(0.15); _spent(f"plain{i}", t0)
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
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the run's lock directory is made
    (tmp_path / "tmp").mkdir()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "alone", "-n", "2", "-p", "no:cacheprovider",
         "-p", "no:benchmark", "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_alone_test_overlaps_no_other(tmp_path: Path) -> None:
    run = _pytest_n2(tmp_path, TIMED)
    assert run.returncode == 0, run.stdout + run.stderr
    spans = {
        name: (float(a), float(b))
        for name, a, b in (line.split() for line in (tmp_path / "log").read_text().splitlines())
    }
    assert len(spans) == 14

    def overlap(x: str, y: str) -> bool:
        return spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]

    alone = [n for n in spans if n.startswith("alone")]
    for a in alone:
        assert not [n for n in spans if n != a and overlap(a, n)], a
    plain = [n for n in spans if n.startswith("plain")]
    # Two workers did run at once: the plain tests overlapped each other.
    assert any(overlap(x, y) for x in plain for y in plain if x < y)
    assert not list((tmp_path / "tmp").glob("ashat-tests-alone-*"))  # removed at the end


def test_judging_a_baseline_unmarked_fails_and_says_to_mark_it(tmp_path: Path) -> None:
    run = _pytest_n2(tmp_path, JUDGED)
    assert run.returncode == 1, run.stdout + run.stderr
    # Each call passes; the unmarked one that judged a baseline errs at its teardown.
    assert "3 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR test_here.py::test_unmarked_judges" in run.stdout
    assert "mark it @pytest.mark.alone" in run.stdout
