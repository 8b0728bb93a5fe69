"""The content-addressed blob store, and the read-only files release trees are linked from.

::

    blobs/sha256/ab/<sha256>          each blob, mode 0644: what the digest names, served as is
    blobs/mode-0755/ab/<sha256>       the same bytes with another mode, made on first use

A blob enters the store only through a :class:`BlobWriter`: bytes go to a temporary file
in ``tmp/`` while being hashed and counted (the size limit is enforced as they arrive);
:meth:`BlobWriter.finish` checks the digest, and :meth:`BlobStore.commit` makes the files
durable and renames them into place — so a name in the store always holds exactly the bytes
that hash to it.

Release trees hard-link these files (:mod:`.releases`), so a link shares its inode's bytes
*and mode*. Blobs are stored with the mode most files have (0644), so most of a tree links
straight to its blobs; a file of another mode (an executable) links to a "mode file" of its
own, copied once and then shared by every release that wants that digest with that mode.
Every stored file has its modification time set to :data:`STORE_MTIME_NS` (as Nix does):
an app or hook that writes to (or chmods) its own files in place changes that, and
:func:`intact` then refuses the file — a tampered mode file is made again from the blob, a
tampered blob is dropped (and so reported missing, to be sent again).

Everything here is blocking file I/O; the server calls it from worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ashat.agent.errors import PayloadTooLarge, RequestInvalid
from ashat.bundle.errors import DigestMismatch
from ashat.faults import crash_point

log = logging.getLogger("ashat.agent")

SHA256_RE = re.compile(r"[0-9a-f]{64}")
BLOB_MODE = 0o644  # the mode most files have, so they link straight to their blob
STORE_MTIME_NS = 1_000_000_000  # 1970-01-01T00:00:01Z on every stored file
SYNC_WORKERS = 8  # threads making new files durable
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_digest(value: object) -> str:
    """``value`` if it is 64 lowercase hex digits, else :class:`RequestInvalid`."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise RequestInvalid(f"invalid sha256 digest {shown!r}: expected 64 lowercase hex digits")
    return value


def fsync_paths(paths: Sequence[str | Path]) -> None:
    """fsync each file or directory, several at a time (the filesystem batches concurrent
    flushes: 2,000 small files take a third of the time they take one by one)."""
    if len(paths) <= 1:
        for p in paths:
            _fsync_path(p)
        return
    with ThreadPoolExecutor(min(SYNC_WORKERS, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


def _fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def intact(path: str | Path, size: int, mode: int) -> bool:
    """Whether ``path`` is a stored file nobody wrote to: its size, mode and stored mtime."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == size
        and stat.S_IMODE(st.st_mode) == mode
        and st.st_mtime_ns == STORE_MTIME_NS
    )


class BlobStore:
    def __init__(self, root: Path, tmp: Path, max_blob_bytes: int) -> None:
        self.root = root  # blobs/ (holds sha256/ and mode-NNNN/)
        self.tmp = tmp
        self.max_blob_bytes = max_blob_bytes
        self._root = str(root)  # paths are built as strings: pathlib costs ~10 us each

    def file(self, sha256: str, mode: int = BLOB_MODE) -> str:
        """The stored file for ``sha256`` with ``mode`` (the blob itself for BLOB_MODE)."""
        where = "sha256" if mode == BLOB_MODE else f"mode-{mode:04o}"
        return f"{self._root}/{where}/{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        return Path(self.file(sha256))

    def size(self, sha256: str) -> int | None:
        """The size of a stored, untouched blob; None if absent (a tampered one is dropped)."""
        path = self.file(sha256)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if intact(path, st.st_size, BLOB_MODE):
            return st.st_size
        log.error("blob %s was modified in the store; dropped (it will be sent again)", sha256)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests not in the store, in the order given, each once."""
        seen: set[str] = set()
        out = []
        for d in digests:
            if d not in seen:
                seen.add(d)
                if self.size(d) is None:
                    out.append(d)
        return out

    def writer(self, sha256: str) -> BlobWriter:
        return BlobWriter(self, sha256)

    def commit(self, writers: Sequence[BlobWriter]) -> int:
        """Make finished writers durable and rename them into place; how many were new."""
        fresh = [w for w in writers if w.pending]
        fsync_paths([w.temp_path for w in fresh])
        new = 0
        dirs: set[str] = set()
        for w in fresh:
            crash_point("blob.commit")
            if w.commit():
                new += 1
                dirs.add(os.path.dirname(self.file(w.expected)))
        fsync_paths(sorted(dirs))
        return new

    def collect(
        self, digests: Collection[str], modes: Collection[tuple[str, int]], grace_s: float
    ) -> tuple[int, int]:
        """Delete what no kept release uses: blobs not in ``digests`` and mode files not in
        ``modes`` (digest, mode), unless touched (written or linked) within ``grace_s``
        seconds, as a blob uploaded for a release not staged yet is. Returns the files and
        bytes freed. Call under the agent's lock; a crash half-way leaves only unused files
        (or fewer of them), never a kept one missing."""
        now = time.time()
        files = freed = 0
        try:
            kinds = list(os.scandir(self._root))
        except FileNotFoundError:
            return 0, 0
        for kind in kinds:
            if kind.name == "sha256":
                mode = BLOB_MODE
            elif kind.name.startswith("mode-") and kind.name[5:].isdigit():
                mode = int(kind.name[5:], 8)
            else:
                continue
            for shard in os.scandir(kind.path):
                if not shard.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(shard.path):
                    sha = entry.name
                    kept = sha in digests if mode == BLOB_MODE else (sha, mode) in modes
                    if kept:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if now - st.st_ctime < grace_s:
                            continue
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    files += 1
                    freed += st.st_size
        return files, freed

    def link_sources(self, wanted: Iterable[tuple[str, int, int]]) -> None:
        """Make sure each ``(sha256, size, mode)`` has an intact file to hard-link from.

        Mode files are copied from their blob (several at a time), made durable, then
        renamed into place. Raises ``OSError`` if a blob is missing or was altered.
        """
        todo = [
            (sha, size, mode)
            for sha, size, mode in set(wanted)
            if mode != BLOB_MODE and not intact(self.file(sha, mode), size, mode)
        ]
        if not todo:
            return
        made: list[tuple[str, str]] = []  # (temp file, destination)
        try:
            if len(todo) == 1:
                made.append(self._copy_to_temp(*todo[0]))
            else:
                with ThreadPoolExecutor(min(SYNC_WORKERS, len(todo))) as pool:
                    for future in [pool.submit(self._copy_to_temp, *item) for item in todo]:
                        made.append(future.result())
            fsync_paths([tmp for tmp, _ in made])
            dirs = set()
            for tmp, dest in made:
                parent = os.path.dirname(dest)
                if parent not in dirs:
                    os.makedirs(parent, exist_ok=True)
                    dirs.add(parent)
                os.replace(tmp, dest)
            fsync_paths(sorted(dirs))
        finally:
            for tmp, _ in made:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _copy_to_temp(self, sha256: str, size: int, mode: int) -> tuple[str, str]:
        if self.size(sha256) != size:
            raise OSError(0, f"blob {sha256} is missing or altered in the store")
        fd, tmp = tempfile.mkstemp(prefix="mode-", dir=self.tmp)
        try:
            src = os.open(self.file(sha256), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
            try:
                if copy_fd(src, fd, size) != size:
                    raise OSError(0, f"blob {sha256} is shorter than {size} bytes")
            finally:
                os.close(src)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(STORE_MTIME_NS, STORE_MTIME_NS))
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp, self.file(sha256, mode)


def copy_fd(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes (sendfile where it works); return how many were copied."""
    offset = 0
    try:
        while offset < size:
            n = os.sendfile(dst, src, offset, size - offset)
            if n == 0:
                return offset
            offset += n
        return offset
    except OSError:
        if offset:
            raise
    os.lseek(src, 0, os.SEEK_SET)
    while offset < size and (chunk := os.read(src, min(1024 * 1024, size - offset))):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(chunk)
    return offset


class BlobWriter:
    """One incoming blob: a temp file (opened on the first write), hashed as it is written.

    Use ``write`` … ``finish`` then the store's ``commit``, or ``abort`` on any error
    (idempotent). A blob already stored (found on the first write), or sent twice in one
    pack (``discard=True``), is only hashed, not written again.
    """

    def __init__(self, store: BlobStore, expected: str, discard: bool = False) -> None:
        self.store = store
        self.expected = expected
        self.discard = discard
        self.size = 0
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        self._tmp: str | None = None
        self._finished = False
        self._looked = discard

    def _look(self) -> None:
        if not self._looked:
            self._looked = True
            self.discard = self.store.size(self.expected) is not None

    @property
    def pending(self) -> bool:
        """Finished, with a temp file waiting to be committed."""
        return self._finished and self._tmp is not None

    @property
    def temp_path(self) -> str:
        assert self._tmp is not None
        return self._tmp

    def _open(self) -> int:
        if self._fd is None:
            self._fd, self._tmp = tempfile.mkstemp(prefix="blob-", dir=self.store.tmp)
        return self._fd

    def write(self, data: bytes) -> None:
        """Append ``data``. Raises :class:`PayloadTooLarge` past the store's limit."""
        self.size += len(data)
        if self.size > self.store.max_blob_bytes:
            self.abort()
            raise PayloadTooLarge(
                f"blob {self.expected} is larger than the limit of "
                f"{self.store.max_blob_bytes} bytes",
                limit=self.store.max_blob_bytes,
            )
        self._hash.update(data)
        self._look()
        if self.discard:
            return
        fd = self._open()
        crash_point("blob.write")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def finish(self) -> None:
        """Check the digest and close the file. Raises :class:`DigestMismatch`."""
        actual = self._hash.hexdigest()
        if actual != self.expected:
            self.abort()
            raise DigestMismatch(
                f"blob {self.expected}: digest mismatch (got {actual})",
                expected=self.expected,
                actual=actual,
            )
        self._look()
        if not self.discard:
            fd = self._open()  # an empty blob was never written to
            os.fchmod(fd, BLOB_MODE)
            os.utime(fd, ns=(STORE_MTIME_NS, STORE_MTIME_NS))
            os.close(fd)
            self._fd = None
        self._finished = True

    def commit(self) -> bool:
        """Rename into place (durability is the store's commit); False if already stored."""
        if not self._finished:
            raise RuntimeError("commit() before finish()")
        if self._tmp is None:
            return False
        dest = self.store.file(self.expected)
        if self.store.size(self.expected) is not None:
            self.abort()
            return False
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(self._tmp, dest)
        self._tmp = None
        return True

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None
