"""Where a project lives: the directory holding ``ashat.toml`` and its ``.ashat/`` state."""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import stat
import tempfile
from pathlib import Path

from ashat.errors import InvalidInput

CONFIG_NAME = "ashat.toml"
STATE_DIR = ".ashat"


def find_project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding ``ashat.toml``, else ``start``."""
    start = (start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / CONFIG_NAME).is_file():
            return d
    return start


def state_dir(root: Path) -> Path:
    return root / STATE_DIR


def current_actor(explicit: str | None = None) -> str:
    """Who is acting: ``--as``, else ``ASHAT_USER``, else the OS user."""
    actor = explicit or os.environ.get("ASHAT_USER")
    if not actor:
        try:
            actor = getpass.getuser()
        except Exception:  # no passwd entry for this uid (containers)
            actor = f"uid{os.getuid()}"
    actor = actor.strip()
    if not actor or len(actor) > 100 or any(ord(c) < 32 for c in actor):
        raise InvalidInput(f"invalid user name {actor!r}: 1-100 printable characters")
    return actor


def write_private(path: Path, data: bytes, mode: int = 0o600, *, sync: bool = True) -> None:
    """Write ``data`` atomically (temp file in the same directory, then rename) with ``mode``;
    ``sync=False`` for a file that only saves work (a crash may leave the old file, or an
    empty one, never a mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


MAX_TOKEN_BYTES = 4096


def read_head(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``: enough to tell it is too large, never all
    of a huge file or of an endless one (``/dev/zero``). Raises ``OSError``."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """At most ``limit + 1`` bytes of the regular file at ``path``, and its stat: never
    through a symlink, never waiting on a FIFO nor reading a device (what a project's
    ``.ashat/`` should hold, but a tree unpacked from elsewhere may not). Raises
    ``OSError`` for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        got = 0
        while got <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - got))):
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_token_file(path: Path) -> str:
    """Read a bearer token from ``path``; errors name the problem, never the token."""
    try:
        raw = read_head(path, MAX_TOKEN_BYTES)
    except OSError as e:
        raise InvalidInput(f"cannot read token file {path}: {e.strerror}") from e
    if len(raw) > MAX_TOKEN_BYTES:
        raise InvalidInput(f"token file {path} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise InvalidInput(f"token file {path} is not ASCII text") from e
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise InvalidInput(f"token file {path} must hold one token on one line")
    return token
