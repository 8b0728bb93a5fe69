"""Processes the agent started, seen through ``/proc``: their start times, their process
groups, and how a group is ended (:func:`kill_group`, which knows :mod:`.reaper`).

The supervisor (the app and its hooks) and the Module Load check (its imports) end what
they started the same way; everything here is Linux's ``/proc`` and signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

REAPER = Path(__file__).with_name("reaper.py")  # run by path: nothing of ashat is imported
REAPER_KILL_WAIT_S = 5.0  # for a reaper told to kill now, before it is SIGKILLed itself
GROUP_POLL_S = (0.01, 0.2)  # between looks at a stopping app's process group: from, up to


def pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def environ(pid: int) -> list[bytes]:
    """The environment entries of a process (empty if it is not ours to read, or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group ``pgid``: none at all if a
    signal 0 finds none, else by ``/proc`` (a zombie, not reaped yet, does not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone is there
    for pid in pids():
        fields = _stat(pid)
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def wait_group(pgid: int, deadline: float) -> None:
    """Wait until no live process is left in group ``pgid``, or ``deadline`` passed."""
    pause, most = GROUP_POLL_S
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(most, pause * 1.5)


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_group(pgid: int, *, reaper: bool | None = None, ended: bool = False) -> None:
    """SIGKILL the process group ``pgid``. Where :mod:`.reaper` leads it (an app without
    bwrap: the group is the reaper alone), it is told to kill now (SIGUSR1) and given
    :data:`REAPER_KILL_WAIT_S` to end what is under it, first: a SIGKILL would end it and
    leave that running.

    ``reaper``: whether a reaper leads it (None: ``/proc`` is asked, for a process an
    earlier agent started). ``ended``: its leader was waited for already, so its pid may be
    another process's now: a reaper that ended has ended what was under it, and nothing is
    sent (a bwrap group is still SIGKILLed: the app in it outlives bwrap's process)."""
    if reaper is None:
        reaper = _is_reaper(pgid)
    if reaper and ended:
        return
    if reaper:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, signal.SIGUSR1)
        wait_group(pgid, time.monotonic() + REAPER_KILL_WAIT_S)
    signal_group(pgid, signal.SIGKILL)


def _is_reaper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return os.fsencode(REAPER) in args[:4]


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state, ppid, pgrp, …),
    or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The start time of a live (not zombie) process from ``/proc``, else None."""
    fields = _stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None
