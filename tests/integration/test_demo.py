"""``ashat demo``, the README's main command, as a user runs it: a real process that starts
PUBLIC, OMEGA and three mainframes, runs the whole session, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and text.encode() in cmdline:
            found.append(int(name))
    return found


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "ashat.cli.ashat", "demo", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd="/",
    )  # fmt: skip


def base_of(output: str) -> str:
    m = re.search(r"ashat demo in (\S+)", output)
    assert m, output
    return m.group(1)


def test_demo_runs_the_whole_session_and_stops_everything() -> None:
    res = run_demo()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for line in (
        "$ deploy push hello-001",
        "ASHAT Deployment Verification",
        "Verification PASSED!",
        "ASHAT Deployment to OMEGA Approved!",
        "Distributing to Licensed Mainframes",
        "Deployment completed successfully!",
        "Audit chain intact",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    base = base_of(out)
    assert not Path(base).exists()
    assert processes_mentioning(base) == []


def test_demo_keep_leaves_the_servers_running_and_says_how_to_use_them() -> None:
    res = run_demo("--keep")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    base = base_of(out)
    try:
        assert "still running" in out and "deploy status" in out
        pids = processes_mentioning(base)
        assert len(pids) >= 5  # PUBLIC, OMEGA, three mainframes (and their apps)
        project = re.search(r"cd (\S+) && deploy status", out)
        assert project
        env = {**os.environ, "ASHAT_USER": "alice", "NO_COLOR": "1"}
        status = subprocess.run(
            [sys.executable, "-m", "ashat.cli.deploy", "status", "hello-001"],
            cwd=project.group(1), capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0 and "completed" in status.stdout
    finally:
        stop = re.search(r"kill ([\d ]+)", out)
        for pid in stop.group(1).split() if stop else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 20
        while processes_mentioning(base) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in processes_mentioning(base):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", base], check=False)
