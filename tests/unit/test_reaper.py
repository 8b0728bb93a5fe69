"""The parent of an app run without bwrap (ashat.agent.reaper), as a real process: what the
app leaves behind ends with it, and the agent sees the app's own exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ashat.agent.confine import REAPER
from support import alive, wait_for

# Leaves a process behind (two forks, a new session, an empty environment) that writes its
# pid to argv[1]; then waits argv[2] seconds (ignoring SIGTERM if argv[4] is "deaf") and
# exits with status argv[3].
LEAVER = """\
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        os.execve("/bin/sleep", ["sleep", "600"], {})
    os._exit(0)
if sys.argv[4:] == ["deaf"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""


def reaped(*argv: str) -> list[str]:
    return [sys.executable, "-I", "-S", str(REAPER), *argv]


@pytest.fixture
def leaver(tmp_path: Path) -> Path:
    (tmp_path / "leaver.py").write_text(LEAVER)
    return tmp_path


def left_pid(where: Path) -> int:
    return int(wait_for(lambda: (where / "left").exists() and (where / "left").read_text(), 10))


def test_an_app_that_ends_takes_what_it_left_and_its_status_is_the_apps(leaver: Path) -> None:
    proc = subprocess.Popen(
        reaped("--", sys.executable, str(leaver / "leaver.py"), str(leaver / "left"), "0.3", "3"),
        start_new_session=True,
    )
    left = left_pid(leaver)
    assert proc.wait(20) == 3
    wait_for(lambda: not alive(left), 5, "the process left behind to end")


def test_a_stop_ends_what_left_the_group_at_once_and_the_app_as_it_chooses(
    leaver: Path,
) -> None:
    """The agent signals the app's process group; the process that left it is ended by the
    reaper within its grace, while the app (deaf to SIGTERM here) is the agent's to kill
    after its stop timeout. Killed by a signal, the app is reported so (not as an exit)."""
    proc = subprocess.Popen(
        reaped(
            "--", sys.executable, str(leaver / "leaver.py"), str(leaver / "left"), "600", "0",
            "deaf",
        ),
        start_new_session=True,
    )  # fmt: skip
    left = left_pid(leaver)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        wait_for(lambda: not alive(left), 5, "the process that left the group to end")
        time.sleep(0.2)
        assert proc.poll() is None  # the app ignores SIGTERM: the reaper still waits for it
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(left, signal.SIGKILL)


def test_an_app_killed_by_a_signal_is_reported_killed_by_it(leaver: Path) -> None:
    proc = subprocess.Popen(
        reaped("--", sys.executable, "-c", "import time; time.sleep(600)"),
        start_new_session=True,
    )
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == -signal.SIGTERM


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_the_app_runs_as_the_user_given_and_the_reaper_stays_out_of_its_reach() -> None:
    done = subprocess.run(
        reaped(
            "--uid", "65534", "--gid", "65534", "--",
            "/bin/sh", "-c", "id -u; id -g; id -G; kill -TERM $PPID; echo $?",
        ),
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    uid, gid, groups, killed = done.stdout.split("\n")[:4]
    assert (uid, gid, groups) == ("65534", "65534", "65534")
    assert killed != "0"  # the app's user cannot signal the reaper (root)


def test_bad_arguments_and_a_missing_command_say_what_is_wrong() -> None:
    done = subprocess.run(reaped("--uid", "x", "--", "true"), capture_output=True, text=True)
    assert done.returncode == 1 and "bad argument '--uid'" in done.stderr
    done = subprocess.run(reaped("--uid", "1"), capture_output=True, text=True)
    assert done.returncode == 1 and "no command" in done.stderr
    done = subprocess.run(reaped("--", "/no/such/program"), capture_output=True, text=True)
    assert done.returncode == 127 and "/no/such/program: No such file or directory" in done.stderr
