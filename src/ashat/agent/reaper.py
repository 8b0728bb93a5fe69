"""The parent of an app run without bubblewrap: what the app leaves behind ends with it.

``python3 -I -S reaper.py --env-fd N [--uid U --gid G] -- COMMAND [ARG ...]``

Outside bwrap's PID namespace a process that forks twice, calls ``setsid()`` and drops its
environment leaves the app's process group and the mark the agent finds strays by, and kept
running as the app's user after a switch, a rollback or a stop (DESIGN §11: the app is a
potential attacker). So :meth:`~ashat.agent.confine.Jail.launch` starts every app process of
the ``user`` and ``none`` modes through this program, which:

- makes itself the *child subreaper* of what it starts (``prctl(PR_SET_CHILD_SUBREAPER)``):
  a process whose parent ends becomes its child, not init's, however it detached;
- runs COMMAND in a process group of COMMAND's own, with the environment read from file
  descriptor N (its own is minimal: no variable of the app's reaches this process, which
  is root's in the ``user`` mode), as ``--uid``/``--gid`` where given; COMMAND gets the
  signal dispositions a new program expects (SIGPIPE and SIGXFSZ at their defaults);
- on SIGTERM (or SIGINT, SIGHUP), a stop: passes it on to COMMAND's group and sends SIGTERM
  to what left that group, and to what leaves it later, but no SIGKILL: the agent's stop
  timeout is the whole app's, as it was its group's; it exits once COMMAND and all under
  it have ended;
- on SIGUSR1 (the agent's "kill now", which it sends where it would SIGKILL a group: a stop
  past its timeout, a hook or an import past theirs): SIGKILLs COMMAND's group and
  everything under this process, round after round, then exits;
- where COMMAND ends on its own (a hook done, an app that crashed), ends what it left
  (SIGTERM, then SIGKILL after :data:`GRACE_S`);

and exits as COMMAND did: its status, or the same signal (re-raised with core dumps off:
this process may be root's, and its working directory is the release's).

The agent signals this process only, never its group with SIGKILL while it runs
(:func:`~ashat.agent.processes.kill_group`): a SIGKILL would end it before it ended the rest.
It imports the standard library only and is run by path with ``-I -S`` (~20 ms a start).
Where the kernel has no subreaper (or this Python no ``ctypes``) it runs COMMAND in its
place (``exec``), as the agent did before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 1.0  # from SIGTERM to SIGKILL for a process left behind
KILL_S = 5.0  # kill rounds end after this long (the agent SIGKILLs a reaper 5 s on anyway)
LOOK_S = 0.1  # in a stop, between two looks at what is left
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
KILL_NOW = signal.SIGUSR1
USAGE = "usage: reaper.py --env-fd N [--uid U --gid G] -- COMMAND [ARG ...]"


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where it failed or cannot be called."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return bool(prctl(option, value, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
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


def _under(spare: int | None) -> dict[int, int]:
    """The live processes under this one, pid -> parent; without the process group
    ``spare`` (COMMAND's, while it runs: its group is signalled as a whole)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, int] = {}
    todo = [(c, os.getpid()) for c in children.get(os.getpid(), ())]
    while todo:
        pid, parent = todo.pop()
        found[pid] = parent
        todo += [(c, pid) for c in children.get(pid, ())]
    return {p: parent for p, parent in found.items() if table[p][1] != spare}


def _signal(pid: int, parent: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` if it is still the child of ``parent`` it was (a pidfd, then
    its parent looked at again: a pid freed and used again is not signalled)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        if parent == os.getpid():  # a child of ours: its pid is not freed before we reap it
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        return
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == parent:
            signal.pidfd_send_signal(fd, sig)
    except (OSError, ValueError, IndexError):
        pass
    finally:
        os.close(fd)


class Reaper:
    """Runs COMMAND (``main``, leading its own process group) and reaps every child."""

    def __init__(self, main: int) -> None:
        self.main = main
        self.status: int | None = None
        self.killing = False  # told to kill now: nothing is spared
        self.told: set[int] = set()  # sent a stop's SIGTERM already

    def reap(self) -> None:
        """Reap every child that ended, noting COMMAND's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main:
                self.status = status

    def spare(self) -> int | None:
        """COMMAND's process group while COMMAND runs (the stop's signal was passed on to
        it), unless told to kill now."""
        return self.main if self.status is None and not self.killing else None

    def terminate(self) -> None:
        """During a stop: SIGTERM what is under this process and was not told yet (not
        COMMAND's running group, which got the stop's own signal). No SIGKILL: the agent's
        stop timeout is the whole app's, and the agent says when to kill."""
        for pid, parent in _under(self.spare()).items():
            if pid not in self.told:
                self.told.add(pid)
                _signal(pid, parent, signal.SIGTERM)

    def end(self, grace: bool) -> None:
        """End what is under this process but COMMAND's running group: SIGTERM and up to
        :data:`GRACE_S` for it to go (if ``grace``), then SIGKILL, round after round, as
        each one's own children become this process's."""
        if grace:
            first = _under(self.spare())
            for pid, parent in first.items():
                _signal(pid, parent, signal.SIGTERM)
            deadline = time.monotonic() + GRACE_S
            while first and time.monotonic() < deadline:
                time.sleep(0.02)
                self.reap()
                live = _under(self.spare())
                first = {p: q for p, q in first.items() if p in live}
        pause, deadline = 0.002, time.monotonic() + KILL_S
        while time.monotonic() < deadline:  # (one that cannot be killed: no endless rounds)
            left = _under(self.spare())
            if not left:
                return
            for pid, parent in left.items():
                _signal(pid, parent, signal.SIGKILL)
            time.sleep(pause)
            pause = min(0.05, pause * 2)
            self.reap()

    def kill_now(self) -> None:
        """SIGKILL COMMAND's group and everything under this process, then wait for
        COMMAND (its status is this process's)."""
        self.killing = True
        if self.status is None:
            with contextlib.suppress(OSError):
                os.killpg(self.main, signal.SIGKILL)
        self.reap()
        self.end(grace=False)
        if self.status is None:
            with contextlib.suppress(ChildProcessError):
                self.status = os.waitpid(self.main, 0)[1]


def _exit_as(status: int) -> None:
    """End this process as a process of wait ``status`` ended (no core dump)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ImportError, OSError, ValueError):
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _parse(argv: list[str]) -> tuple[int, int | None, int | None, list[str]]:
    ids: dict[str, int] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        known = argv[i] in ("--uid", "--gid", "--env-fd")
        if not known or i + 1 >= len(argv) or not argv[i + 1].isdigit():
            raise SystemExit(f"reaper.py: bad argument {argv[i]!r}; {USAGE}")
        ids[argv[i]] = int(argv[i + 1])
        i += 2
    command = argv[i + 1 :]
    if "--env-fd" not in ids:
        raise SystemExit(f"reaper.py: no --env-fd; {USAGE}")
    if not command:
        raise SystemExit(f"reaper.py: no command; {USAGE}")
    return ids["--env-fd"], ids.get("--uid"), ids.get("--gid"), command


def _read_environment(fd: int) -> dict[str, str]:
    """The app's environment: ``NAME=value`` entries, each ended by a NUL byte."""
    with os.fdopen(fd, "rb") as f:
        with contextlib.suppress(OSError):  # a memfd is read from its start; a pipe is not
            f.seek(0)
        data = f.read()
    env = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def _run(uid: int | None, gid: int | None, command: list[str], env: dict[str, str]) -> None:
    """In the child (or in place): as a new program expects to start, as the app's user,
    COMMAND. Never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the mask outlives exec
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec keeps that
            signal.signal(sig, signal.SIG_DFL)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        os.execvpe(command[0], command, env)
    except OSError as e:
        print(f"{command[0]}: {e.strerror}", file=sys.stderr, flush=True)
    finally:
        os._exit(127)


def main(argv: list[str]) -> None:
    env_fd, uid, gid, command = _parse(argv)
    env = _read_environment(env_fd)
    os.get_exec_path(env)  # imports what execvpe needs while this Python's files can be read
    _prctl(PR_SET_DUMPABLE, 0)  # no core and no ptrace of this process (it may be root's)
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):  # no way to find what detaches: as before
        _run(uid, gid, command, env)
    # Signals are taken when asked for (sigwaitinfo), never in the middle of a reap; one
    # that comes before COMMAND runs waits for it.
    watched = {signal.SIGCHLD, KILL_NOW, *STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        _run(uid, gid, command, env)
    with contextlib.suppress(OSError):  # both sides, so whichever runs first makes it
        os.setpgid(pid, pid)
    reaper = Reaper(pid)
    stopping, left, look = False, True, 0.0
    while True:
        reaper.reap()
        if stopping and time.monotonic() >= look:  # at most every LOOK_S, however many end
            reaper.terminate()
            left = bool(_under(None))
            look = time.monotonic() + LOOK_S
        if reaper.status is not None and not (stopping and left):
            break  # COMMAND ended; in a stop, what it left has ended too
        if stopping:  # what is left may end unseen: look again in a while
            info = signal.sigtimedwait(watched, max(0.01, look - time.monotonic()))
        else:
            info = signal.sigwaitinfo(watched)
        sig = info.si_signo if info is not None else signal.SIGCHLD
        if sig == KILL_NOW:
            reaper.kill_now()
            break
        if sig in STOP_SIGNALS and not stopping:
            stopping = True
            if reaper.status is None:  # COMMAND's group gets the stop's own signal
                group = [p for p, (_, g) in _processes().items() if g == pid]
                reaper.told.update(group)
                with contextlib.suppress(OSError):
                    os.killpg(pid, sig)
    if not stopping and not reaper.killing:
        reaper.end(grace=True)  # COMMAND ended on its own: what it left goes, briefly
    # (no status: a wait status of SIGKILL's number is "killed by SIGKILL")
    _exit_as(reaper.status if reaper.status is not None else signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
