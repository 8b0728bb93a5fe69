"""The parent of an app run without bwrap (ashat.agent.reaper), started as the agent starts
it (Jail.launch) and ended as the agent ends it (a SIGTERM, then kill_group): what the app
leaves behind ends with it, and the agent sees the app's own exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ashat.agent import confine
from ashat.agent.checks.base import Deadline
from ashat.agent.checks.modules import import_in_child
from ashat.agent.confine import AppUser, Jail
from ashat.agent.processes import REAPER, kill_group
from ashat.agent.reaper import Reaper
from support import alive, wait_for

# Leaves a process behind (two forks, a new session, an empty environment) that writes its
# pid to argv[1]; waits argv[2] seconds (ignoring SIGTERM if argv[4] is "deaf", and then
# leaving a second process behind once a SIGTERM came: "deaf-late"); exits with argv[3].
LEAVER = """\
import os, signal, sys, time
def leave(path):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            os.execve("/bin/sleep", ["sleep", "600"], {})
        os._exit(0)
leave(sys.argv[1])
mode = sys.argv[4:] and sys.argv[4]
if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "deaf-late":
    signal.signal(signal.SIGTERM, lambda *_: leave(sys.argv[1] + "-late"))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    time.sleep(0.05)
sys.exit(int(sys.argv[3]))
"""


@pytest.fixture
def where(tmp_path: Path) -> Iterator[Path]:
    tmp_path.chmod(0o777)  # the app's user writes its pids here
    (tmp_path / "leaver.py").write_text(LEAVER)
    (tmp_path / "leaver.py").chmod(0o644)
    yield tmp_path
    for name in ("left", "left-late"):  # whatever a failing test left running
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / name).read_text()), signal.SIGKILL)


def start(jail: Jail, where: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return jail.popen(
        [sys.executable, str(where / "leaver.py"), str(where / "left"), *args],
        where, where, {"PATH": os.environ["PATH"], **env},
    )  # fmt: skip


def left(where: Path, name: str = "left") -> int:
    path = where / name
    return int(wait_for(lambda: path.exists() and path.read_text(), 10, f"{name} to be written"))


def test_an_app_that_ends_takes_what_it_left_and_its_status_is_the_apps(where: Path) -> None:
    proc = start(Jail("none"), where, "0.3", "3")
    pid = left(where)
    assert proc.wait(20) == 3
    assert not alive(pid)


def test_a_stop_reaches_the_app_and_ends_what_left_its_group(where: Path) -> None:
    proc = start(Jail("none"), where, "600", "0")
    pid = left(where)
    os.killpg(proc.pid, signal.SIGTERM)  # as the agent's stop: the reaper passes it on
    assert proc.wait(20) == -signal.SIGTERM  # the app's own end, as the agent sees it
    assert not alive(pid)


def test_a_kill_ends_an_app_deaf_to_sigterm_and_what_it_left_after_the_stop(
    where: Path,
) -> None:
    """Review: the agent's SIGKILL to the group (a hook or an import past its timeout, a
    stop past 10 s) ended the reaper with the app, and what had left the group ran on; so
    did what left it after the stop began. kill_group tells the reaper to kill now."""
    proc = start(Jail("none"), where, "600", "0", "deaf-late")
    first = left(where)
    os.killpg(proc.pid, signal.SIGTERM)
    late = left(where, "left-late")  # the app left another once stopped
    wait_for(lambda: not alive(first), 5, "what left the group before the stop to end")
    time.sleep(0.3)
    assert proc.poll() is None  # deaf: the app still runs, until the agent kills
    kill_group(proc.pid)
    assert proc.wait(10) == -signal.SIGKILL
    assert not alive(late) and not alive(first)


def test_the_apps_environment_reaches_the_app_and_not_the_reaper(where: Path) -> None:
    proc = start(Jail("none"), where, "600", "0", LD_PRELOAD="", APP_SECRET="s3cr3t")
    left(where)
    try:
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            own = f.read()
        assert b"s3cr3t" not in own and b"LD_PRELOAD" not in own
        kids = [p for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid]
        app = next(p for p in kids if b"leaver.py" in Path(f"/proc/{p}/cmdline").read_bytes())
        with open(f"/proc/{app}/environ", "rb") as f:
            assert b"APP_SECRET=s3cr3t" in f.read().split(b"\0")
    finally:
        kill_group(proc.pid)
        proc.wait(10)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_the_app_runs_as_its_user_and_cannot_signal_the_reaper(where: Path) -> None:
    jail = Jail("user", AppUser.named("nobody"))
    launch = jail.launch(
        ["/bin/sh", "-c", "id -u; id -g; id -G; kill -USR1 $PPID; echo $?"],
        where, where, {"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    done = subprocess.run(
        launch.argv, env=launch.env, pass_fds=launch.pass_fds, capture_output=True, text=True,
        timeout=20,
    )  # fmt: skip
    launch.close()
    assert done.returncode == 0, done.stderr
    uid, gid, groups, killed = done.stdout.split("\n")[:4]
    assert (uid, gid, groups) == ("65534", "65534", "65534")
    assert killed != "0"  # the reaper is root's: the app's user cannot signal it


def test_bad_arguments_and_a_missing_command_say_what_is_wrong(where: Path) -> None:
    reaper = [sys.executable, "-I", "-S", str(REAPER)]
    done = subprocess.run([*reaper, "--uid", "x", "--", "true"], capture_output=True, text=True)
    assert done.returncode == 1 and "bad argument '--uid'" in done.stderr
    done = subprocess.run([*reaper, "--", "true"], capture_output=True, text=True)
    assert done.returncode == 1 and "no --env-fd" in done.stderr
    launch = Jail("none").launch(["/no/such/program"], where, where, {"PATH": "/usr/bin"})
    done = subprocess.run(
        launch.argv, env=launch.env, pass_fds=launch.pass_fds, capture_output=True, text=True
    )
    launch.close()
    assert done.returncode == 127 and "/no/such/program: No such file or directory" in done.stderr


def test_the_app_starts_with_the_signals_a_new_program_expects(where: Path) -> None:
    """Review: Python ignores SIGPIPE and SIGXFSZ, and an exec keeps what is ignored, so
    an app started by the reaper had them ignored (`yes | head` wrote 'Broken pipe')."""
    launch = Jail("none").launch(
        ["/bin/grep", "SigIgn", "/proc/self/status"], where, where, {"PATH": "/usr/bin:/bin"}
    )
    done = subprocess.run(
        launch.argv, env=launch.env, pass_fds=launch.pass_fds, capture_output=True, text=True
    )
    launch.close()
    ignored = int(done.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), done.stdout


def test_an_import_past_its_time_takes_what_it_left_with_it(where: Path) -> None:
    """Review: the Module Load check imports a release's modules (its code, run before any
    activation); one that left the group and then hung past the deadline was killed with a
    SIGKILL to its group, which ended the reaper first, and what it left ran on."""
    (where / "hangs.py").write_text(
        LEAVER.replace("leave(sys.argv[1])", f"leave({str(where / 'left')!r})").replace(
            "end = time.monotonic() + float(sys.argv[2])", "end = time.monotonic() + 600"
        )
    )
    done = import_in_child("hangs", where, {"PATH": os.environ["PATH"]}, Deadline(2), Jail("none"))
    assert not done["ok"] and "did not finish within 2 s" in done["error"]
    pid = left(where)
    wait_for(lambda: not alive(pid), 10, "what the import left to end with it")


GRACEFUL = """\
import os, signal, sys, time
def finish(*_):
    time.sleep(2)  # a worker finishing what it does, well within the agent's stop timeout
    open(sys.argv[1] + "-finished", "w").close()
    os._exit(0)
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, finish)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        time.sleep(1)
time.sleep(600)
"""


def test_a_stop_leaves_what_the_app_left_the_time_the_agent_gives_the_app(where: Path) -> None:
    """Review: a stop SIGKILLed what had left the app's group 1 s after the SIGTERM, and
    what was left once the app ended too, where the agent gives a stopping app 10 s. In a
    stop the reaper sends SIGTERM only, and waits for all under it; the agent says when to
    kill (kill_group, after its timeout)."""
    (where / "graceful.py").write_text(GRACEFUL)
    proc = Jail("none").popen(
        [sys.executable, str(where / "graceful.py"), str(where / "left")], where, where,
        {"PATH": os.environ["PATH"]},
    )  # fmt: skip
    pid = left(where)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == -signal.SIGTERM
    assert (where / "left-finished").exists() and not alive(pid)
    assert time.monotonic() - started >= 1.9  # the reaper waited for it to finish


def test_told_to_kill_now_the_reaper_spares_no_group() -> None:
    """Review: after "kill now" the app's group was still spared until the app was reaped,
    so a process that joined it meanwhile outlived the reaper."""
    r = Reaper(os.getpid())
    assert r.spare() == os.getpid()
    r.killing = True
    assert r.spare() is None


def test_where_there_is_no_subreaper_the_group_is_killed_as_before(
    where: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: where the kernel has no subreaper (or Python no ctypes) the reaper runs the
    app in its place, but the agent still took the group for a reaper's, and what a hook
    left in it ran on. The jail says it does not reap there, and the group is killed."""
    monkeypatch.setattr(confine, "subreapers", lambda: False)
    jail = Jail("none")
    assert not jail.reaps
    launch = jail.launch(
        ["/bin/sh", "-c", "sleep 300 & echo $!"], where, where, {"PATH": "/usr/bin:/bin"}
    )
    assert str(REAPER) in launch.argv  # still how the app gets its environment (and user)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    launch.close()
    assert proc.stdout is not None
    with proc.stdout:
        pid = int(proc.stdout.readline())
    proc.wait(10)
    kill_group(proc.pid, reaper=jail.reaps, ended=True)  # as after a hook that ended
    wait_for(lambda: not alive(pid), 5, "what the hook left in its group to be killed")
