"""The parent of an app run without bubblewrap: what it leaves behind ends with it.

``python3 -I -S reaper.py [--uid N --gid N] -- COMMAND [ARG ...]``

Outside bwrap's PID namespace the agent stops an app by its process group, and finds what an
earlier agent left by a mark in the environment. A process that forks twice, calls
``setsid()`` and drops its environment leaves both behind, and kept running as the app's
user after a switch, a rollback or a stop (DESIGN §11: the app is a potential attacker).
So :class:`~ashat.agent.confine.Jail` starts every app process of the ``user`` and ``none``
modes through this program, which:

- makes itself the *child subreaper* of what it starts (``prctl(PR_SET_CHILD_SUBREAPER)``,
  Linux 3.4 and later): a process whose parent ends becomes its child, not init's, however
  it detached, so it can always find what is left (its children, then theirs as they end);
- runs COMMAND in its own process group (the agent's group signals reach both), as the
  app's user where ``--uid``/``--gid`` are given (the agent is root: this process stays
  root, so the app's user can neither signal it nor trace it);
- on SIGTERM, SIGINT or SIGHUP, at once ends the processes under it that left the group
  (SIGTERM, then SIGKILL after :data:`GRACE_S`, well within the agent's stop timeout) and
  goes on waiting for COMMAND, which the agent's group signal reached;
- once COMMAND has ended, ends every process left under it the same way, then exits as
  COMMAND did (its status, or the same signal).

It imports the standard library only, and is run by path with ``-I -S`` (no environment
variable of Python's, no site-packages: ~10 ms): the app's environment is passed on
untouched. Where the kernel has no subreaper it runs COMMAND in its place (``exec``), as
the agent did before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 1.0  # from SIGTERM to SIGKILL for a process left behind
KILL_ROUNDS = 1000  # each round kills the children found; theirs are found in the next
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
USAGE = "usage: reaper.py [--uid N --gid N] -- COMMAND [ARG ...]"


def _subreaper() -> bool:
    """Make this process the child subreaper of its descendants; False where it cannot."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return bool(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent, process group), from ``/proc``."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, …
        if len(fields) > 2 and fields[0] not in ("Z", "X"):
            out[int(name)] = (int(fields[1]), int(fields[2]))
    return out


def _descendants(escaped_only: bool) -> list[int]:
    """The live processes under this one (only those outside its process group if
    ``escaped_only``: the agent's group signals reach the others)."""
    me, group = os.getpid(), os.getpgid(0)
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(me, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, ())
    return [p for p in found if not (escaped_only and table[p][1] == group)]


class Reaper:
    """Waits for COMMAND (``main``) and reaps every child, remembering COMMAND's status."""

    def __init__(self, main: int) -> None:
        self.main = main
        self.status: int | None = None

    def reap(self) -> bool:
        """Reap one child that ended, if any; False when none had."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == self.main:
            self.status = status
        return pid != 0

    def end(self, escaped_only: bool) -> None:
        """End the processes under this one (only those that left its process group if
        ``escaped_only``): SIGTERM, up to :data:`GRACE_S` for them to go, then SIGKILL,
        round after round, as each one's own children become this process's."""
        first = _descendants(escaped_only)
        for pid in first:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while first and time.monotonic() < deadline:
            while self.reap():
                pass
            first = [p for p in first if p in set(_descendants(escaped_only))]
            if first:
                time.sleep(0.02)
        for _ in range(KILL_ROUNDS):
            left = _descendants(escaped_only)
            if not left:
                return
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
            while self.reap():
                pass


def _exit_as(status: int) -> None:
    """End this process as a process of wait ``status`` ended."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _parse(argv: list[str]) -> tuple[int | None, int | None, list[str]]:
    ids: dict[str, int] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] not in ("--uid", "--gid") or i + 1 >= len(argv) or not argv[i + 1].isdigit():
            raise SystemExit(f"reaper.py: bad argument {argv[i]!r}; {USAGE}")
        ids[argv[i]] = int(argv[i + 1])
        i += 2
    command = argv[i + 1 :]
    if not command:
        raise SystemExit(f"reaper.py: no command; {USAGE}")
    return ids.get("--uid"), ids.get("--gid"), command


def _run(uid: int | None, gid: int | None, command: list[str]) -> None:
    """In the child: drop to the app's user, then become COMMAND."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the mask outlives exec
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        os.execvp(command[0], command)
    except OSError as e:
        print(f"{command[0]}: {e.strerror}", file=sys.stderr, flush=True)
    os._exit(127)


def main(argv: list[str]) -> None:
    uid, gid, command = _parse(argv)
    os.get_exec_path()  # imports what execvp needs while this Python's files can be read
    if not _subreaper():  # no way to find what detaches: run as the agent did before
        _run(uid, gid, command)
    # Signals are taken when asked for (sigwaitinfo), never in the middle of a reap.
    watched = {signal.SIGCHLD, *STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    pid = os.fork()
    if pid == 0:
        _run(uid, gid, command)
    reaper = Reaper(pid)
    stopping = False
    while True:
        while reaper.reap():
            pass
        if reaper.status is not None:
            break
        if signal.sigwaitinfo(watched).si_signo != signal.SIGCHLD and not stopping:
            stopping = True  # COMMAND got the signal too, from the agent; the rest now
            reaper.end(escaped_only=True)
    reaper.end(escaped_only=False)
    _exit_as(reaper.status)


if __name__ == "__main__":
    main(sys.argv[1:])
