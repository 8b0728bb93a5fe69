"""The warm helper: a process that has imported what ``deploy push`` needs, and forks a child
to run each command a ``deploy`` process hands it (:mod:`ashat.cli.warm`).

Started by ``deploy helper start``, or by a ``deploy push`` that found none running
(``python -P -m ashat.cli.helper --socket PATH``, in ``/``: nothing is imported from the
directory it was started in); one per user and installation.
The parent does nothing but accept, fork and report: it is single-threaded, opens no store,
connection or key, so each child starts from a clean copy of a process that only imported
modules. A child takes the client's stdin, stdout, stderr and working directory, umask,
environment and ignored signals, leads a process group of its own, runs ``deploy ARGV``
exactly as the ``deploy`` script would, and exits; the parent passes the client's signals
on to that group, and reports the child's exit status (or the signal that ended it). A
child whose helper dies is sent SIGTERM (``PR_SET_PDEATHSIG``). A client whose connection
closes (killed, its terminal gone) takes its command with it (SIGTERM to the group).

The helper refuses a client of another user, or in another mount, PID or user namespace (a
sandbox or container of the same user, which may see less than the helper does), and a
client that runs other code (another ashat or another interpreter:
:func:`ashat.cli.warm.fingerprint`); it refuses and stops once a module it loaded (ashat's or
any other), the interpreter or the CA bundle has changed on disk since it started, so an
upgrade never runs old code (the client then runs the command itself). It stops by itself
after ``--idle`` seconds without a command, on ``deploy helper stop`` and on SIGTERM, always
after the commands it runs have ended. It logs starts, stops and refusals, never a
command's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import gc
import json
import os
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.cli import warm

# What deploy push and the read-only verbs import (seen with -X importtime), so a child
# imports next to nothing. A module missing here costs each child its import, nothing more.
PRELOAD = (
    "ashat.cli.deploy",
    "ashat.config",
    "ashat.ops.operations",
    "ashat.ops.push",
    "ashat.ops.status",
    "ashat.ops.notifications",
    "ashat.workflow.push",
    "ashat.workflow.tasks",
    "ashat.bundle",
    "ashat.bundle.hashcache",
    "ashat.bundle.wheels",
    "ashat.transport.client",
    "ashat.store.db",
    "ashat.store.store",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.serialization",
    "tomllib",
    "encodings.idna",  # httpx encodes each request's host name with it
)

DEFAULT_IDLE_S = 2 * 3600.0
FORWARDABLE = frozenset(
    {*warm.FORWARDED, signal.SIGSTOP, signal.SIGCONT}
)  # what a client may have sent to its command's group
NAMESPACES = ("mnt", "pid", "user")
REQUEST_S = 5.0  # for a client to send its whole request
NOT_HERE = (
    "the helper serves no client in another mount, PID or user namespace (a sandbox or container)"
)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ashat helper[{os.getpid()}]: {message}",
          file=sys.stderr, flush=True)  # fmt: skip


def preload() -> None:
    import importlib

    from ashat.cli import lean_start

    lean_start()  # as the deploy script does, before httpx is imported
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional part not installed: its verbs import it
            log(f"not preloaded: {name} ({e})")
    _prctl()
    from ashat.errors import InvalidInput
    from ashat.transport import outgoing

    # An HTTP client, made and closed: httpx imports its transport (httpcore, h11, anyio)
    # and the system's CA bundle is parsed here, once, rather than in every child.
    try:
        outgoing.client(base_url="http://127.0.0.1", verify=outgoing.system_tls()).close()
    except (ImportError, OSError, InvalidInput) as e:  # a bad SSL_CERT_FILE: said per command
        log(f"no HTTP client made ahead: {e}")


Identity = tuple[int, int, int, int]  # (mtime_ns, ctime_ns, size, inode) of a file


def _identity(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


def _loaded_files() -> dict[str, Identity | None]:
    """Each file whose change would make this process out of date: every module it loaded
    (ashat's and the others'), the interpreter, and the CA bundle it parsed (certifi's, or
    the one ``SSL_CERT_FILE`` names, and the directory ``SSL_CERT_DIR`` names)."""
    paths = {sys.executable}
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        if os.environ.get(name):
            paths.add(os.environ[name])
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            paths.add(path)
    certifi = sys.modules.get("certifi")
    if certifi is not None:
        with contextlib.suppress(Exception):
            paths.add(certifi.where())
    return {path: _identity(path) for path in sorted(paths)}


def prepare_socket_dir(path: str) -> None:
    """Make the socket's directory (0700) if it is missing, and check it."""
    directory = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    warm.check_directory(directory)


def bind(path: str) -> tuple[socket.socket, int]:
    """Listen on ``path``, holding its lock file (so two helpers starting at once do not
    both listen); a socket file left by a helper that died is replaced. Returns the socket
    and the lock's descriptor."""
    prepare_socket_dir(path)
    if len(os.fsencode(path)) >= 108:
        raise warm.HelperError(f"socket path too long for a Unix socket: {path}")
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise warm.HelperError(f"a helper already listens on {path}") from None
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # the lock is ours: whoever made it is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(64)
    except BaseException:
        os.close(lock)
        raise
    return sock, lock


def _namespaces(pid: int | str) -> tuple[int, ...]:
    return tuple(os.stat(f"/proc/{pid}/ns/{ns}").st_ino for ns in NAMESPACES)


@dataclass
class Helper:
    listener: socket.socket
    path: str
    idle_s: float
    started: float = field(default_factory=time.time)
    served: int = 0
    last: float = field(default_factory=time.monotonic)
    stopping: str | None = None
    children: dict[int, socket.socket | None] = field(default_factory=dict)  # pid -> client
    pushed_from: dict[int, str] = field(default_factory=dict)  # pid -> a push's directory
    own: str = field(default_factory=warm.fingerprint)
    files: dict[str, Identity | None] = field(default_factory=_loaded_files)
    lock: int = -1  # the lock file's descriptor (bind): a child closes it
    inode: tuple[int, int] = (0, 0)  # the socket file's, to remove it only if it is ours
    spaces: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        st = os.lstat(self.path)
        self.inode = (st.st_dev, st.st_ino)
        self.spaces = _namespaces("self")

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "socket": self.path,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "served": self.served,
            "commands_running": len(self.children),
            "command_pids": sorted(self.children),
            "idle_s": round(time.monotonic() - self.last, 1),
            "stops_after_idle_s": self.idle_s,
            "python": sys.executable,
            "fingerprint": self.own,
            "objects_kept": gc.get_freeze_count(),  # loaded once, shared with each child
        }

    def changed(self) -> str | None:
        """Why this helper's code is out of date (a module it loaded, the interpreter or the
        CA bundle changed on disk since it started: an upgrade, an edit), or None."""
        for path, identity in self.files.items():
            if _identity(path) != identity:
                return f"its code changed on disk since it started ({os.path.basename(path)})"
        return None

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self._stop("SIGINT"))
        self._wake = (wake_r, wake_w)
        try:
            while self.children or not self.stopping:
                if self.stopping:
                    self._close_listener()
                timeout = None if self.children else self.last + self.idle_s - time.monotonic()
                if timeout is not None and timeout <= 0:
                    self._stop(f"idle for {self.idle_s:.0f} s")
                    continue
                watched: list[int | socket.socket] = [wake_r]
                watched += [c for c in self.children.values() if c is not None]
                if not self.stopping:
                    watched.append(self.listener)
                ready, _, _ = select.select(watched, [], [], timeout)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                self._reap()
                for conn in ready:
                    if isinstance(conn, socket.socket) and conn is not self.listener:
                        self._client_spoke(conn)
                if self.listener in ready and not self.stopping:
                    self._accept()
        finally:
            self._close_listener()
            log(f"stopped ({self.stopping or 'error'}) after {self.served} commands")

    def _stop(self, why: str) -> None:
        """Take no more commands; the loop ends once those running have (a signal handler
        may call this: it only sets the flag)."""
        if self.stopping is None:
            self.stopping = why

    def _close_listener(self) -> None:
        """Stop taking commands: the socket file goes first, so a new helper may start."""
        if self.listener.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self.inode:  # not another helper's, started since
                os.unlink(self.path)
        self.listener.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            conn = self.children.pop(pid)
            self.last = time.monotonic()
            pushed_from = self.pushed_from.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                report = {"signal": os.WTERMSIG(status)}
            else:
                report = {"exit": os.waitstatus_to_exitcode(status)}
            with contextlib.suppress(OSError):
                warm.send(conn, report)
            conn.close()
            if pushed_from is not None and report == {"exit": 0} and not self.children:
                self._read_ahead(pushed_from)

    def _read_ahead(self, where: str) -> None:
        """Read what the next push from ``where`` reads first (:func:`read_ahead`), once
        this push's client has its answer and no command runs (none waits for it), so that
        the next push's child starts with it; a failure only costs that push the reading."""
        from ashat.ops.push import read_ahead

        try:
            read_ahead(Path(where))
        except Exception as e:  # best effort: the next push reads it itself
            log(f"did not read ahead for the next push from {where}: {e}")
            return
        gc.freeze()  # as what was preloaded: shared with each child, out of the collector's sight

    def _pid_of(self, conn: socket.socket) -> int | None:
        return next((pid for pid, c in self.children.items() if c is conn), None)

    def _client_spoke(self, conn: socket.socket) -> None:
        """A client sends signals for its command's group; an end of its connection means
        it went away (killed, or its terminal closed), and its command goes with it, as it
        would have: SIGTERM to the group, and no more watching."""
        pid = self._pid_of(conn)
        if pid is None:
            return
        try:
            message, _ = warm.receive(conn, timeout_s=1.0)
        except (OSError, warm.HelperError):
            message = None
        signum = warm.number(warm.one(message or {}, "signal"))
        if signum is not None and signum in FORWARDABLE:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        self.children[pid] = None
        conn.close()
        log(f"client of command {pid} went away; command stopped")

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            self._serve_one(conn)
        except (OSError, warm.HelperError) as e:
            log(f"dropped a request: {e}")
            conn.close()

    def _serve_one(self, conn: socket.socket) -> None:
        """Read and answer one request on ``conn`` (closed here unless a command took it)."""
        client_pid, uid = warm.peer(conn)
        if uid != os.getuid():
            log("refused a connection from another user")
            conn.close()
            return
        try:
            same = _namespaces(client_pid) == self.spaces
        except OSError:
            same = False
        if not same:  # told why (it is this user), but nothing of it is read
            log(f"refused a connection from another namespace (pid {client_pid})")
            warm.send(conn, {"refused": NOT_HERE})
            conn.close()
            return
        request, fds = warm.receive(conn, max_fds=warm.MAX_FDS, timeout_s=REQUEST_S)
        try:
            if request is None:
                conn.close()
                return
            self._answer(conn, request, fds)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _answer(self, conn: socket.socket, request: warm.Message, fds: list[int]) -> None:
        op = warm.one(request, "op")
        if op == "status":
            warm.send(conn, {"status": json.dumps(self.status())})
            conn.close()
            return
        if op == "stop":
            self._stop("deploy helper stop")
            warm.send(conn, {"status": json.dumps({**self.status(), "stopping": True})})
            conn.close()
            return
        if op != "run":
            raise warm.HelperError(f"unknown request {op!r}")
        refusal = None
        if changed := self.changed():  # first: an upgrade changes the fingerprint too
            log(f"refused a command and stopping: {changed}")
            self._stop(changed)
            refusal = f"the helper stopped: {changed}"
        elif warm.one(request, "fingerprint") != self.own:
            refusal = "the helper runs other code than this deploy (another ashat or Python)"
        if refusal is not None:
            warm.send(conn, {"refused": refusal})
            conn.close()
            return
        job = _job(request, fds)
        self.served += 1
        self.last = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        helper_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_child(conn, job, helper_pid)  # never returns
        with contextlib.suppress(OSError):  # the child does the same: no race either way
            os.setpgid(pid, pid)
        self.children[pid] = conn
        if warm.verb(job.argv) == "push":  # where it ran from: read ahead for the next one
            with contextlib.suppress(OSError):
                self.pushed_from[pid] = os.readlink(f"/proc/self/fd/{job.stdio[3]}")
        conn.settimeout(None)
        try:
            warm.send(conn, {"pid": pid})
        except OSError:  # the client left already: so does its command
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            self.children[pid] = None
            conn.close()

    def _become_child(self, conn: socket.socket, job: Job, helper_pid: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.setpgid(0, 0)
            _die_with(helper_pid)
            for fd in (*self._wake, self.lock):
                if fd >= 0:
                    os.close(fd)
            self.listener.close()
            for other in self.children.values():
                if other is not None:
                    other.close()
            conn.close()
            code = job.run()
        except BaseException:  # the child reports, then ends, whatever happened
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)


@functools.cache
def _prctl() -> Any:
    """libc's ``prctl``, or None: looked up once, in the helper (ctypes and the lookup
    cost each child ~4 ms of a command's start, issue 20)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def _die_with(helper_pid: int) -> None:
    """Be sent SIGTERM when the helper dies (Linux), and end now if it already has."""
    prctl = _prctl()
    if prctl is not None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != helper_pid:
        os._exit(1)


@dataclass(frozen=True)
class Job:
    """One command handed over by a client."""

    argv: list[str]
    env: dict[str, str]
    umask: int
    ignored: list[int]
    blocked: list[int]
    stdio: list[int]  # stdin, stdout, stderr, the working directory

    def run(self) -> int:
        """In the child: take the client's place, run ``deploy ARGV``, return its status."""
        import atexit

        for target, fd in enumerate(self.stdio[:3]):
            os.dup2(fd, target)
        os.fchdir(self.stdio[3])
        for fd in self.stdio:
            if fd > 2:
                os.close(fd)
        for signum in warm.FORWARDED:  # as the client has them, not as the helper does:
            # nohup makes the client ignore a hang-up, and so does this; a helper started
            # under nohup (or from a script, which ignores SIGQUIT) must not make it so here
            if signum in self.ignored:
                signal.signal(signum, signal.SIG_IGN)
            elif signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
            else:
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.blocked)  # and what it held back
        os.umask(self.umask)
        os.environ.clear()
        os.environ.update(self.env)
        time.tzset()
        from ashat import faults

        faults.reload()
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # type: ignore[union-attr]
        sys.argv = ["deploy", *self.argv]
        code: int = 0
        try:
            from ashat.cli.deploy import main

            main()
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        finally:
            with contextlib.suppress(Exception):
                atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        return code


def _job(request: warm.Message, fds: list[int]) -> Job:
    """The command a ``run`` request asks for (:func:`warm.encode` made it)."""
    if len(fds) != warm.MAX_FDS:
        raise warm.HelperError(f"a command came with {len(fds)} descriptors, not 4")
    umask = warm.number(warm.one(request, "umask"))
    if umask is None:
        raise warm.HelperError("umask must be a number")
    env = dict(item.partition("=")[::2] for item in request.get("env", []))
    if len(env) != len(request.get("env", [])) or "" in env:
        raise warm.HelperError("env must name each variable once")
    ignored = _signals(request, "ignored", set(warm.FORWARDED), "signals a client forwards")
    blocked = _signals(request, "blocked", signal.valid_signals(), "signals")
    return Job(request.get("argv", []), env, umask & 0o777, ignored, blocked, list(fds))


def _signals(request: warm.Message, key: str, allowed: Set[int], what: str) -> list[int]:
    out = []
    for text in request.get(key, []):
        signum = warm.number(text)
        if signum is None or signum not in allowed:
            raise warm.HelperError(f"{key} must list {what}")
        out.append(signum)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ashat.cli.helper", description=__doc__)
    parser.add_argument("--socket", default=None, help="where to listen")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S, help="seconds")
    args = parser.parse_args(argv)
    path = args.socket or warm.socket_path()
    if not hasattr(socket, "SO_PEERCRED") or not os.path.isdir("/proc/self/ns"):
        sys.exit("the warm helper needs Linux (SO_PEERCRED, /proc/PID/ns)")
    # Whatever its starter held back (a child takes its own client's mask): SIGCHLD must
    # reach the loop, and a child must be able to take each signal its client gives.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        listener, lock = bind(path)  # the lock is held until this process ends
    except (OSError, warm.HelperError) as e:
        sys.exit(f"cannot start the warm helper: {e}")
    preload()
    # What was loaded stays for the helper's life: out of the collector's sight, so that a
    # child's full collection (a push makes one) does not write to, and so copy, every page
    # it shares with the helper (~10 ms of a push, issue 20).
    gc.collect()
    gc.freeze()
    log(f"listening on {path}; stops after {args.idle:.0f} s idle")
    Helper(listener, path, args.idle, lock=lock).serve()


if __name__ == "__main__":
    main()
