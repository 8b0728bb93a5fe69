"""The warm helper: a process that has imported what ``deploy push`` needs, and forks a child
to run each command a ``deploy`` process hands it (:mod:`ashat.cli.warm`).

Started by ``deploy helper start`` (``python -m ashat.cli.helper --socket PATH``); one per
user and installation. The parent does nothing but accept, fork and report: it is
single-threaded, opens no store, connection or key, so each child starts from a clean copy
of a process that only imported modules. A child takes the client's stdin, stdout and
stderr, working directory, umask and environment, runs ``deploy ARGV`` exactly as the
``deploy`` script would, and exits; the parent reports the child's exit status (or the signal
that ended it) to the client.

The helper refuses a client that runs other code (another ashat or another interpreter:
:func:`ashat.cli.warm.fingerprint`), and refuses and stops once a module it loaded has changed
on disk since it started, so an upgrade never runs old code (the client then runs the command
itself). It stops by itself after ``--idle``
seconds without a command, on ``deploy helper stop`` and on SIGTERM, always after the
commands it runs have ended. It logs starts, stops and refusals, never a command's
environment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
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
    from ashat.transport import outgoing

    # An HTTP client, made and closed: httpx imports its transport (httpcore, h11, anyio)
    # and the system's CA bundle is parsed here, once, rather than in every child.
    try:
        outgoing.client(base_url="http://127.0.0.1", verify=outgoing.system_tls()).close()
    except (ImportError, OSError) as e:
        log(f"no HTTP client made ahead: {e}")


def _loaded_files() -> dict[str, float]:
    """The mtime of each ashat module this process loaded, to notice an upgrade."""
    files: dict[str, float] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name == "ashat" or name.startswith("ashat.")):
            with contextlib.suppress(OSError):
                files[path] = os.stat(path).st_mtime
    return files


def check_directory(path: str) -> None:
    """Refuse a socket directory another user could write to (they could swap the socket)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise warm.HelperError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise warm.HelperError(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise warm.HelperError(
            f"{path} can be written by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "use a directory only you can write to"
        )


def prepare_socket_dir(path: str) -> None:
    """Make the socket's directory (0700) if it is missing, and check it."""
    directory = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    check_directory(directory)


def bind(path: str) -> socket.socket:
    """Listen on ``path``; a socket file left by a helper that died is replaced, a live
    helper's is not."""
    prepare_socket_dir(path)
    if len(os.fsencode(path)) >= 108:
        raise warm.HelperError(f"socket path too long for a Unix socket: {path}")
    live = warm.connect(path, timeout=2.0)
    if live is not None:
        live.close()
        raise warm.HelperError(f"a helper already listens on {path}")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


@dataclass
class Helper:
    listener: socket.socket
    path: str
    idle_s: float
    started: float = field(default_factory=time.time)
    served: int = 0
    last: float = field(default_factory=time.monotonic)
    stopping: str | None = None
    children: dict[int, socket.socket] = field(default_factory=dict)  # pid -> its client
    own: str = field(default_factory=warm.fingerprint)
    files: dict[str, float] = field(default_factory=_loaded_files)
    inode: tuple[int, int] = (0, 0)  # the socket file's, to remove it only if it is ours

    def __post_init__(self) -> None:
        st = os.lstat(self.path)
        self.inode = (st.st_dev, st.st_ino)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "socket": self.path,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "served": self.served,
            "commands_running": len(self.children),
            "idle_s": round(time.monotonic() - self.last, 1),
            "stops_after_idle_s": self.idle_s,
            "python": sys.executable,
            "fingerprint": self.own,
        }

    def changed(self) -> str | None:
        """Why this helper's code is out of date (a module it loaded changed on disk since
        it started: an upgrade, an edit), or None."""
        for path, mtime in self.files.items():
            try:
                changed = os.stat(path).st_mtime != mtime
            except OSError:
                changed = True
            if changed:
                return f"ashat changed on disk since it started ({os.path.basename(path)})"
        return None

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
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
                watched: list[int | socket.socket] = [wake_r, *self.children.values()]
                if not self.stopping:
                    watched.append(self.listener)
                ready, _, _ = select.select(watched, [], [], timeout)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                self._reap()
                for conn in ready:
                    if isinstance(conn, socket.socket) and conn in self.children.values():
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
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                report = {"signal": os.WTERMSIG(status)}
            else:
                report = {"exit": os.waitstatus_to_exitcode(status)}
            with contextlib.suppress(OSError):
                warm.send(conn, report)
            conn.close()
            self.last = time.monotonic()

    def _client_spoke(self, conn: socket.socket) -> None:
        """A client sends nothing after its request: readable means it went away (killed,
        or its terminal closed), and its command goes with it, as it would have."""
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if data:
            return
        for pid, c in list(self.children.items()):
            if c is conn:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                log(f"client of child {pid} went away; child stopped")

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(5.0)
            if warm.peer_uid(conn) != os.getuid():
                log("refused a connection from another user")
                conn.close()
                return
            request, fds = warm.receive(conn, max_fds=3)
            if request is None:
                conn.close()
                return
            self._answer(conn, request, fds)
        except (OSError, warm.HelperError) as e:
            log(f"dropped a request: {e}")
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    def _answer(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        op = request.get("op")
        if op == "status":
            warm.send(conn, self.status())
            conn.close()
            return
        if op == "stop":
            self._stop("deploy helper stop")
            warm.send(conn, {**self.status(), "stopping": True})
            conn.close()
            return
        if op != "run":
            raise warm.HelperError(f"unknown request {op!r}")
        refusal = None
        if request.get("fingerprint") != self.own:
            refusal = "the helper runs other code than this deploy (another ashat or Python)"
        elif changed := self.changed():
            log(f"refused a command and stopping: {changed}")
            self._stop(changed)
            refusal = f"the helper stopped: {changed}"
        if refusal is not None:
            warm.send(conn, {"refused": refusal})
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        job = _job(request, fds)
        self.served += 1
        self.last = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_child(conn, job)  # never returns
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        self.children[pid] = conn
        warm.send(conn, {"pid": pid})

    def _become_child(self, conn: socket.socket, job: Job) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in self._wake:
                os.close(fd)
            self.listener.close()
            for other in self.children.values():
                other.close()
            conn.close()
            code = job.run()
        except BaseException:  # the child reports, then ends, whatever happened
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)


@dataclass(frozen=True)
class Job:
    """One command handed over by a client."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    stdio: list[int]

    def run(self) -> int:
        """In the child: take the client's place, run ``deploy ARGV``, return its status."""
        import atexit

        for target, fd in enumerate(self.stdio):
            os.dup2(fd, target)
            os.close(fd)
        os.umask(self.umask)
        os.environ.clear()
        os.environ.update(self.env)
        time.tzset()
        from ashat import faults

        faults.reload()
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # type: ignore[union-attr]
        sys.argv = ["deploy", *self.argv]
        try:
            os.chdir(self.cwd)
        except OSError as e:
            print(f"Error: cannot enter {self.cwd}: {e.strerror}", file=sys.stderr)
            return 2
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


def _job(request: dict[str, Any], fds: list[int]) -> Job:
    argv, cwd, env, umask = (request.get(k) for k in ("argv", "cwd", "env", "umask"))
    if len(fds) != 3:
        raise warm.HelperError(f"a command came with {len(fds)} descriptors, not 3")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise warm.HelperError("argv must be a list of strings")
    if not isinstance(cwd, str) or not isinstance(umask, int):
        raise warm.HelperError("cwd must be a string and umask a number")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise warm.HelperError("env must map names to strings")
    return Job(argv, cwd, env, umask & 0o777, fds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ashat.cli.helper", description=__doc__)
    parser.add_argument("--socket", default=None, help="where to listen")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S, help="seconds")
    args = parser.parse_args(argv)
    path = args.socket or warm.socket_path()
    if not hasattr(socket, "SO_PEERCRED"):
        sys.exit("the warm helper needs Linux (SO_PEERCRED)")
    try:
        listener = bind(path)
    except (OSError, warm.HelperError) as e:
        sys.exit(f"cannot start the warm helper: {e}")
    preload()
    log(f"listening on {path}; stops after {args.idle:.0f} s idle")
    Helper(listener, path, args.idle).serve()


if __name__ == "__main__":
    main()
