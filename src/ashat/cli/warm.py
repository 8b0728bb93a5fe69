"""The ``deploy`` entry point: hand the command to a warm helper if one runs, else run it here.

A ``deploy`` process spends most of a small push starting Python and importing what a push
needs (docs/performance.md). ``deploy helper start`` starts a *warm helper*
(:mod:`ashat.cli.helper`): one long-lived process per user and installation that has
imported all of it already. With it running, ``deploy push`` (and the read-only verbs in
:data:`ROUTED`) pass their arguments, environment, umask and ignored signals, and their own
stdin, stdout, stderr and working directory (as file descriptors, ``SCM_RIGHTS``), over a
Unix socket; the helper forks a child that runs the very same command on those descriptors,
in a process group of its own, and this process waits for the child's exit status and exits
with it. Output, exit codes and errors are those of a command run here. Ctrl-C, ``kill``, a
hang-up and Ctrl-Z are passed on to the child's process group (through the helper, which
knows it), and a signal this process ignores (``nohup``) is ignored there too.

With no helper this costs one ``lstat``, and the command runs here. A ``push`` run here
then starts a helper in the background as it ends (:func:`start_wanted`), so that the next
commands run warm; ``ASHAT_HELPER=manual`` uses a helper that runs but starts none,
``ASHAT_HELPER=off`` uses none, and none is started where ``CI`` is set.

This module is all a warm command imports before the helper has it, so it imports no module
that imports ``enum`` or ``re``: ``socket`` and ``signal`` are their C modules, and a message
on the socket is not JSON but ``key=value`` fields joined by NUL bytes (:func:`encode`),
which neither an argument nor an environment variable can hold. With pip 25 or later (or
uv), the ``deploy`` script itself imports nothing else; pip 24 and older wrote one that
imports ``re``.

Trust: the socket must be a socket of this user in a directory only this user can write,
and both ends check the other's user id (``SO_PEERCRED``) before a byte is sent, so a
command and its environment (which may carry ``ASHAT_TOKEN``) go only to a helper of this
user; the helper also refuses a client in another mount, PID or user namespace (a sandbox or
a container of the same user). The helper holds no key: each push reads the signing key in
its own child, as a ``deploy`` process does.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import time

TYPE_CHECKING = False  # as typing has it: importing typing costs ~15 ms here (below)

try:  # the C modules under socket and signal: their Python wrappers import enum (below)
    import _signal as signal
    import _socket as socket
except ImportError:  # pragma: no cover - an interpreter without them
    import signal
    import socket  # type: ignore[no-redef]

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

# ``json``, ``socket``, ``signal``, ``typing``, ``contextlib`` and what they import were ~30 ms
# of each warm command on the 2-core machine (docs/performance.md): as much as a small push's
# own work in the helper.

PROTOCOL = 2  # 1: JSON messages; 2: key=value fields (encode)
ENV_SOCKET = "ASHAT_HELPER_SOCKET"  # where the helper listens (default: socket_path())
ENV_SWITCH = "ASHAT_HELPER"  # "off": never use a helper; "manual": use one, start none
ROUTED = frozenset({"push", "status", "history", "log"})  # verbs that never prompt
STARTS_HELPER = frozenset({"push"})  # run here, it leaves a helper for the next command
MAX_FRAME = 1 << 20  # a request (argv, environment) is far smaller
MAX_FDS = 4  # stdin, stdout, stderr, the working directory
CONNECT_S = 1.0  # to connect to the helper
ANSWER_S = 10.0  # for the helper to start the command (it may be finishing its start-up)
FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)  # fmt: skip
# Linux: SO_PEERCRED (who is at the other end), SCM_RIGHTS, signal masks. Elsewhere every
# command runs in its own process, as it always did.
SUPPORTED = all(
    hasattr(socket, n) for n in ("AF_UNIX", "SO_PEERCRED", "SCM_RIGHTS")
) and hasattr(signal, "pthread_sigmask")  # fmt: skip
_HEADER = struct.Struct("!I")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FD = struct.Struct("i")  # a descriptor in SCM_RIGHTS data


class HelperError(Exception):
    """The helper cannot be used as asked (the message says why)."""


def fingerprint() -> str:
    """What a helper and its client must share: the same messages (:data:`PROTOCOL`), the
    same interpreter and the same ashat. The default socket is named after it, so a client
    never meets a helper that cannot read it there."""
    import ashat

    return f"{PROTOCOL}:{ashat.__version__}:{sys.executable}:{os.path.dirname(ashat.__file__)}"


def socket_path() -> str:
    """The helper's socket: ``ASHAT_HELPER_SOCKET``, else one per user and installation in
    ``$XDG_RUNTIME_DIR`` (if absolute) or ``/tmp/ashat-<uid>/``."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return explicit
    import zlib

    tag = zlib.crc32(fingerprint().encode()) & 0xFFFFFFFF
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = runtime if os.path.isabs(runtime) else f"/tmp/ashat-{os.getuid()}"
    return os.path.join(base, f"ashat-deploy-{tag:08x}.sock")


def check_directory(path: str) -> None:
    """Refuse a socket directory another user owns or could write to (they could swap the
    socket). Raises :class:`HelperError`."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise HelperError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise HelperError(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise HelperError(
            f"{path} can be written by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "use a directory only you can write to"
        )


def trusted_socket(path: str) -> bool:
    """Whether a helper's socket is at ``path``: False if nothing is there; True if it is a
    socket of this user in a directory only this user can write. Raises
    :class:`HelperError` for anything else there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise HelperError(f"{path}: {e.strerror}") from e
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        raise HelperError(f"{path} is not a socket of this user; not using it")
    check_directory(os.path.dirname(os.path.abspath(path)))
    return True


def peer(sock: socket.socket) -> tuple[int, int]:
    """The process id and user id at the other end of a Unix socket (Linux)."""
    pid, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return int(pid), int(uid)


Message = dict[str, list[str]]  # a message as read: each key's values, in the order sent


def encode(message: Mapping[str, object]) -> bytes:
    """``message`` as a frame's payload: ``key=value`` fields joined by NUL bytes, which
    neither an argument nor an environment variable can hold. A list or tuple gives one
    field per item, in order; a dict one ``key=name=value`` field per item; anything else
    one field of its ``str``. Raises ValueError for what would not read back the same (a
    NUL byte; an ``=`` in a key or in a dict's name)."""
    fields = []
    for key, value in message.items():
        if isinstance(value, dict):
            if any("=" in str(name) for name in value):
                raise ValueError(f"a name in {key!r} holds '='")
            items: Sequence[object] = [f"{name}={v}" for name, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            items = [value]
        if "=" in key:
            raise ValueError(f"the key {key!r} holds '='")
        for item in items:
            field = os.fsencode(f"{key}={item}")
            if b"\0" in field:
                raise ValueError(f"a value of {key!r} holds a NUL byte")
            fields.append(field)
    return b"\0".join(fields)


def decode(data: bytes) -> Message:
    """A payload :func:`encode` made, read back. Raises :class:`HelperError` for a field
    that is not ``key=value``."""
    message: Message = {}
    for raw in data.split(b"\0") if data else ():
        key, eq, value = raw.partition(b"=")
        if not eq or not key:
            raise HelperError("a message field that is not key=value")
        message.setdefault(os.fsdecode(key), []).append(os.fsdecode(value))
    return message


def one(message: Message, key: str) -> str | None:
    """The value of ``key``; None if the message has none, or more than one."""
    values = message.get(key)
    return values[0] if values is not None and len(values) == 1 else None


def number(text: str | None) -> int | None:
    """``text`` as a whole number of at most 18 ASCII digits (a pid, a signal, an exit
    status, a umask), or None."""
    digits = text[1:] if text and text[0] == "-" else text
    if not digits or len(digits) > 18 or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)  # type: ignore[arg-type]


def send(sock: socket.socket, message: Mapping[str, object], fds: list[int] | None = None) -> None:
    data = encode(message)
    frame = _HEADER.pack(len(data)) + data
    if fds:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(_FD.pack(fd) for fd in fds))]
        sent = sock.sendmsg([frame], rights)
        if sent < len(frame):
            sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def receive(
    sock: socket.socket, max_fds: int = 0, timeout_s: float | None = None
) -> tuple[Message | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at a clean end.
    ``timeout_s`` bounds the whole message, not each read. On any error the descriptors
    received are closed and :class:`HelperError` (or ``OSError``) raised."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if deadline is None:
        sock.settimeout(None)  # no timeout left over from an earlier message
    fds: list[int] = []
    buf = b""
    need = _HEADER.size
    try:
        while len(buf) < need:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HelperError("no whole message in time")
                sock.settimeout(left)
            if max_fds and not fds and not buf:
                space = socket.CMSG_SPACE(max_fds * _FD.size)
                chunk, ancillary, flags, _ = sock.recvmsg(need, space)
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        whole = len(data) - len(data) % _FD.size
                        fds.extend(fd for (fd,) in _FD.iter_unpack(data[:whole]))
                if flags & socket.MSG_CTRUNC:
                    raise HelperError(f"more than {max_fds} descriptors came with a message")
            else:
                chunk = sock.recv(need - len(buf))
            if not chunk:
                if buf:
                    raise HelperError("the other end closed the socket mid-message")
                return None, []
            buf += chunk
            if need == _HEADER.size and len(buf) == _HEADER.size:
                (length,) = _HEADER.unpack(buf)
                if length > MAX_FRAME:
                    raise HelperError(f"a message of {length} bytes, over {MAX_FRAME}")
                need += length
        message = decode(buf[_HEADER.size :])
    except TimeoutError as e:
        _close_all(fds)
        raise HelperError("no whole message in time") from e
    except BaseException:
        _close_all(fds)
        raise
    return message, fds


def connect(path: str | None = None, timeout: float | None = CONNECT_S) -> socket.socket | None:
    """A connection to this user's helper, or None if none listens there. Raises
    :class:`HelperError` if what is there is not to be trusted."""
    path = path or socket_path()
    if not trusted_socket(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):  # a helper that stopped
        sock.close()
        return None
    except OSError as e:
        sock.close()
        raise HelperError(f"cannot connect to {path}: {e.strerror or e}") from e
    if peer(sock)[1] != os.getuid():
        sock.close()
        raise HelperError(f"{path} is held by another user's process; not using it")
    return sock


def ask(op: str, path: str | None = None) -> dict[str, Any] | None:
    """Send a control request (``status``, ``stop``) to the helper; its status (the JSON
    object of its one ``status`` field), or None if no helper listens."""
    import json  # not on a command's way: only ``deploy helper`` asks

    sock = connect(path)
    if sock is None:
        return None
    try:
        send(sock, {"op": op})
        answer, _ = receive(sock, timeout_s=ANSWER_S)
        if answer is None:  # a helper answers both, stop too: this one cannot read us
            raise HelperError(_unanswered(sock))
    finally:
        sock.close()
    text = one(answer, "status")
    try:
        status = json.loads(text) if text is not None else None
    except ValueError as e:
        raise HelperError("a status that is not JSON") from e
    if not isinstance(status, dict):
        raise HelperError(f"no status in the helper's answer: {answer}")
    return status


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _not_used(why: object) -> None:
    print(f"deploy: warm helper not used: {why}", file=sys.stderr)


def run_through_helper(
    argv: list[str], on_absent: Callable[[], object] | None = None
) -> int | None:
    """Run ``deploy ARGV`` in the helper; its exit status, or None to run it here (no
    helper, one that cannot be trusted or refuses, or a verb it does not take).
    ``on_absent()`` is called where it looked and no helper listens."""
    if not SUPPORTED or os.environ.get(ENV_SWITCH) == "off" or verb(argv) not in ROUTED:
        return None
    if not _valid_stdio():
        return None
    try:
        sock = connect()
    except (HelperError, OSError) as e:
        _not_used(e)
        return None
    if sock is None:
        if on_absent is not None:
            on_absent()
        return None
    try:
        return _run(sock, argv)
    finally:
        sock.close()


def _run(sock: socket.socket, argv: list[str]) -> int | None:
    """:func:`run_through_helper` on a connection to the helper."""
    try:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:  # a directory we may not read: run here, as ever
        _not_used(f"cannot open the working directory ({e.strerror})")
        return None
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    # Signals wait until the command has a pid to pass them to (they arrive after).
    held = {*FORWARDED, signal.SIGTSTP, signal.SIGCONT}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, held)  # as this process had them
    request = {
        "op": "run",
        "argv": argv,
        "env": dict(os.environ),
        "umask": _umask(),
        "ignored": ignored,
        "blocked": sorted(int(s) for s in blocked),
        "fingerprint": fingerprint(),
    }
    try:
        try:
            sock.settimeout(ANSWER_S)  # a helper busy starting another command
            send(sock, request, [0, 1, 2, cwd])
        except OSError as e:  # refused before it read the request: say why, if it did
            _not_used(_refusal(sock) or e)
            return None
        finally:
            os.close(cwd)
        try:
            answer, _ = receive(sock, timeout_s=ANSWER_S)
        except (HelperError, OSError) as e:  # sent: it must not run twice
            print(f"deploy: the warm helper did not start the command ({e}); it was "
                  "not run ('deploy helper stop', or ASHAT_HELPER=off)",
                  file=sys.stderr)  # fmt: skip
            return 1
        pid = number(one(answer or {}, "pid"))
        if pid is None:
            _not_used(one(answer or {}, "refused") or _unanswered(sock))
            return None
        _forward(sock, set(ignored))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return _wait(sock, pid)


def _unanswered(sock: socket.socket) -> str:
    """Why a helper that closed the connection without a word may have: one of another
    ashat, whose messages it cannot read (at ``ASHAT_HELPER_SOCKET``: the default socket is
    one per :func:`fingerprint`)."""
    try:
        pid = str(peer(sock)[0])
    except OSError:
        pid = "its pid"
    return (
        "it closed the connection without an answer (a helper of another ashat version? "
        f"it stops after its idle time; 'kill {pid}' stops it now)"
    )


def _refusal(sock: socket.socket) -> str | None:
    """The helper's reason, if it answered before it closed the connection."""
    try:
        answer, _ = receive(sock, timeout_s=1.0)
    except (HelperError, OSError):
        return None
    return one(answer or {}, "refused")


def _forward(sock: socket.socket, ignored: set[int]) -> None:
    """Pass this process's signals to the command's process group, through the helper."""

    def forward(signum: int, frame: object) -> None:
        try:
            send(sock, {"signal": signum})
        except OSError:
            pass

    def stop(signum: int, frame: object) -> None:  # Ctrl-Z: stop the command, then ourselves
        try:
            send(sock, {"signal": int(signal.SIGSTOP)})
        except OSError:
            pass
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, stop)  # continued (fg, bg): SIGCONT went on too

    for signum in FORWARDED:
        if signum not in ignored:
            signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, stop)
    signal.signal(signal.SIGCONT, forward)


def _wait(sock: socket.socket, pid: int) -> int:
    """Wait for the helper's report of how the command ``pid`` ended; that status, as a
    shell would see it."""
    try:
        answer, _ = receive(sock)
    except (HelperError, OSError):
        answer = None
    if answer is None:  # the helper died: its children are told to end; wait for this one
        _gone(pid)
        print(
            f"deploy: the warm helper stopped while running this command (pid {pid}); "
            "'deploy helper status' tells whether it runs",
            file=sys.stderr,
        )
        return 1
    ended_by = number(one(answer, "signal"))
    if ended_by is not None:  # the command was killed: end the same way
        try:
            signal.signal(ended_by, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL has no handler to reset
            pass
        sys.stdout.flush()
        os.kill(os.getpid(), ended_by)
        return 128 + ended_by
    code = number(one(answer, "exit"))
    return 1 if code is None else code


def _gone(pid: int, timeout_s: float = 10.0) -> None:
    """Wait (a while) until process ``pid`` has ended."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or no pidfd here
        return
    try:
        select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)


def start_wanted(argv: list[str]) -> bool:
    """Whether this process, about to run ``argv`` itself because no helper listens
    (:func:`run_through_helper` found none), should leave one for the next command as it
    ends, if it succeeds: after a push (:data:`STARTS_HELPER`), unless ``ASHAT_HELPER`` is
    ``off`` or ``manual``, or ``CI`` is set (a CI job's helper would outlive the job, and
    each job starts from nothing anyway)."""
    if not SUPPORTED or verb(argv) not in STARTS_HELPER:
        return False
    if os.environ.get(ENV_SWITCH) in ("off", "manual"):
        return False
    return os.environ.get("CI", "").lower() in ("", "0", "false", "no")


def leave_helper() -> None:
    """Start this user's warm helper in the background and say so (it outlives this
    process; :func:`start_wanted` said none runs). A failure is said, never fatal: the
    command has run."""
    from ashat.cli.helper_cmd import DEFAULT_IDLE_MINUTES, launch

    path = socket_path()
    try:
        proc = launch(path)
    except (HelperError, OSError) as e:
        print(f"deploy: no warm helper started ({e}); ASHAT_HELPER=manual starts none",
              file=sys.stderr)  # fmt: skip
        return
    print(
        f"deploy: starting a warm helper (pid {proc.pid}, on {path}) so that the next "
        f"commands start fast; it stops after {DEFAULT_IDLE_MINUTES} minutes idle ('deploy "
        "helper stop' ends it now, ASHAT_HELPER=manual starts none)",
        file=sys.stderr,
    )


def main() -> None:
    """The ``deploy`` console script."""
    argv = sys.argv[1:]
    absent: list[bool] = []
    try:
        code = run_through_helper(argv, on_absent=lambda: absent.append(True))
    except KeyboardInterrupt:  # Ctrl-C before the command started: as deploy says it
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if code is not None:
        # The command wrote to our stdout and stderr from its own process, and this one holds
        # nothing else: end without the interpreter's tear-down (8 ms of each command here).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    from ashat.cli.deploy import main as run_here

    start = bool(absent) and start_wanted(argv)  # not where one runs and refused this
    try:
        run_here()
    except SystemExit as e:  # how every command ends (click's)
        if start and e.code in (0, None):  # a push that went through, not a typo or --help
            leave_helper()
        raise


if __name__ == "__main__":
    main()
