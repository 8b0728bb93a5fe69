"""How the agent tells that a stopping app's process group is gone (ashat.agent.supervisor):
a zombie not reaped yet does not count, a process of the group left behind does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ashat.agent.processes import group_alive, process_start, wait_group


def test_a_group_is_alive_while_a_process_of_it_runs_and_not_once_only_zombies_are_left() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
         "time.sleep(0.2)"],
        start_new_session=True,
    )  # fmt: skip
    try:
        assert group_alive(leader.pid)
        deadline = time.monotonic() + 10
        while process_start(leader.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.02)  # the leader exits, a zombie (not waited for); its child stays
        assert process_start(leader.pid) is None
        assert group_alive(leader.pid)  # the child, still in the group
        t0 = time.monotonic()
        wait_group(leader.pid, time.monotonic() + 0.5)
        assert time.monotonic() - t0 >= 0.5  # waited for it, up to the deadline
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_alive(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # both zombies now (an init may be slow to reap the child)
    assert not group_alive(leader.pid)
    leader.wait()
