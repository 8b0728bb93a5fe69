"""The ``deploy`` entry point: hand the command to a warm helper if one runs, else run it here.

A ``deploy`` process spends most of a small push starting Python and importing what a push
needs (docs/performance.md). ``deploy helper start`` starts a *warm helper*
(:mod:`ashat.cli.helper`): one long-lived process per user and installation that has
imported all of it already. With it running, ``deploy push`` (and the read-only verbs in
:data:`ROUTED`) pass their arguments, working directory, environment and umask, and their
own stdin, stdout and stderr (as file descriptors, ``SCM_RIGHTS``), over a Unix socket; the
helper forks a child that runs the very same command on those descriptors, and this process
waits for the child's exit status and exits with it. Output, exit codes and errors are
those of a command run here. Ctrl-C and ``kill`` are passed on to the child.

With no helper (the default) this costs one failed ``connect``. This module imports only the
standard library's light modules, so it adds nothing to ``deploy``'s start-up.

Trust: both ends check the other's user id (``SO_PEERCRED``) before a byte is sent, so a
command and its environment (which may carry ``ASHAT_TOKEN``) go only to a helper of this
user, and a helper runs commands only for its own user. The helper holds no key: each push
reads the signing key in its own child, as a ``deploy`` process does.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from typing import Any

ENV_SOCKET = "ASHAT_HELPER_SOCKET"  # where the helper listens (default: socket_path())
ENV_SWITCH = "ASHAT_HELPER"  # "off": never hand a command to a helper
ROUTED = frozenset({"push", "status", "history", "log"})  # verbs that never prompt
MAX_FRAME = 1 << 20  # a request (argv, cwd, environment) is far smaller
_HEADER = struct.Struct("!I")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class HelperError(Exception):
    """The helper cannot be used as asked (the message says why)."""


def fingerprint() -> str:
    """What a helper and its client must share: the same interpreter and the same ashat."""
    import ashat

    return f"{ashat.__version__}:{sys.executable}:{os.path.dirname(ashat.__file__)}"


def socket_path() -> str:
    """The helper's socket: ``ASHAT_HELPER_SOCKET``, else one per user and installation in
    ``$XDG_RUNTIME_DIR`` or ``/tmp/ashat-<uid>/``."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return explicit
    import zlib

    tag = zlib.crc32(fingerprint().encode()) & 0xFFFFFFFF
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/ashat-{os.getuid()}"
    return os.path.join(base, f"ashat-deploy-{tag:08x}.sock")


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (Linux)."""
    _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return int(uid)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = _HEADER.pack(len(data)) + data
    if fds:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = sock.sendmsg([frame], rights)
        if sent < len(frame):
            sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at a clean end."""
    fds: list[int] = []
    buf = b""
    need = _HEADER.size
    while len(buf) < need:
        if max_fds and not fds and not buf:
            space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize)
            chunk, ancillary, _, _ = sock.recvmsg(need - len(buf), space)
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(data[: len(data) - len(data) % got.itemsize])
                    fds.extend(got)
        else:
            chunk = sock.recv(need - len(buf))
        if not chunk:
            for fd in fds:
                os.close(fd)
            if buf:
                raise HelperError("the other end closed the socket mid-message")
            return None, []
        buf += chunk
        if len(buf) == _HEADER.size and need == _HEADER.size:
            (length,) = _HEADER.unpack(buf)
            if length > MAX_FRAME:
                for fd in fds:
                    os.close(fd)
                raise HelperError(f"a message of {length} bytes, over {MAX_FRAME}")
            need += length
    try:
        message = json.loads(buf[_HEADER.size :])
    except ValueError as e:
        for fd in fds:
            os.close(fd)
        raise HelperError("a message that is not JSON") from e
    if not isinstance(message, dict):
        raise HelperError("a message that is not a JSON object")
    return message, fds


def connect(path: str | None = None, timeout: float | None = None) -> socket.socket | None:
    """A connection to this user's helper, or None if none listens there."""
    path = path or socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    if peer_uid(sock) != os.getuid():
        sock.close()
        raise HelperError(f"{path} is held by another user's process; not using it")
    return sock


def ask(op: str, path: str | None = None) -> dict[str, Any] | None:
    """Send a control request (``status``, ``stop``) to the helper; its answer, or None if
    no helper listens."""
    sock = connect(path, timeout=10.0)
    if sock is None:
        return None
    with sock:
        send(sock, {"op": op})
        answer, _ = receive(sock)
        return answer


def verb(argv: list[str]) -> str | None:
    """The verb of a ``deploy`` command line (after ``--via URL``), or None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--via":
            i += 2
            continue
        if arg.startswith("--via="):
            i += 1
            continue
        return None if arg.startswith("-") else arg
    return None


def _valid_stdio() -> bool:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
    return True


def run_through_helper(argv: list[str]) -> int | None:
    """Run ``deploy ARGV`` in the helper; its exit status, or None to run it here (no
    helper, a helper of other code, or a verb it does not take)."""
    if os.environ.get(ENV_SWITCH) == "off" or verb(argv) not in ROUTED or not _valid_stdio():
        return None
    path = socket_path()
    try:
        sock = connect(path)
    except (HelperError, OSError) as e:
        print(f"deploy: warm helper not used: {e}", file=sys.stderr)
        return None
    if sock is None:
        return None
    with sock:
        request = {
            "op": "run",
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "fingerprint": fingerprint(),
        }
        try:
            send(sock, request, [0, 1, 2])
            answer, _ = receive(sock)
        except (HelperError, OSError) as e:
            print(f"deploy: warm helper not used: {e}", file=sys.stderr)
            return None
        if answer is None or "pid" not in answer:
            reason = (answer or {}).get("refused", "it closed the connection")
            print(f"deploy: warm helper not used: {reason}", file=sys.stderr)
            return None
        return _wait(sock, int(answer["pid"]))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _wait(sock: socket.socket, pid: int) -> int:
    """Pass this process's signals on to the child ``pid`` until the helper reports how it
    ended; that status, as a shell would see it."""

    def forward(signum: int, frame: object) -> None:
        del frame
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        answer, _ = receive(sock)
    except (HelperError, OSError):
        answer = None
    if answer is None:
        print(
            f"deploy: the warm helper stopped while running this command (pid {pid}); "
            "'deploy helper status' tells whether it runs",
            file=sys.stderr,
        )
        return 1
    if "signal" in answer:  # the child was killed: end the same way
        ended_by = int(answer["signal"])
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(ended_by, signal.SIG_DFL)
        sys.stdout.flush()
        os.kill(os.getpid(), ended_by)
        return 128 + ended_by
    return int(answer.get("exit", 1))


def main() -> None:
    """The ``deploy`` console script."""
    code = run_through_helper(sys.argv[1:])
    if code is not None:
        sys.stdout.flush()
        sys.exit(code)
    from ashat.cli.deploy import main as run_here

    run_here()


if __name__ == "__main__":
    main()
