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
:func:`intact` then refuses the file. The mtime can be put back, so it is not the proof:
**a stored file counts as its digest's bytes only when they were hashed** — as they arrived,
or since its inode last changed (:meth:`BlobStore.holds`: a change moves the inode's
``ctime``, which no unprivileged process can set back). A blob found altered is moved to
``quarantine/`` (and so reported missing, to be sent again); a tampered mode file is made
again from the blob. OMEGA never serves a blob that does not hash to its name.

Everything here is blocking file I/O; the server calls it from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ashat.agent.errors import PayloadTooLarge, RequestInvalid
from ashat.bundle.errors import DigestMismatch
from ashat.faults import crash_point

log = logging.getLogger("ashat.agent")

SHA256_RE = re.compile(r"[0-9a-f]{64}")
BLOB_MODE = 0o644  # the mode most files have, so they link straight to their blob
STORE_MTIME_NS = 1_000_000_000  # 1970-01-01T00:00:01Z on every stored file
SYNC_WORKERS = 8  # threads making new files durable
SYNCFS_MIN = 64  # files at least, on one filesystem, to make durable with one syncfs
HASH_CHUNK = 1024 * 1024  # bytes read at a time to hash a stored file
# A hash taken within this many ns of the inode's last change is not cached: the kernel's
# coarse clock could give a write in the same tick the same ctime.
SETTLE_NS = 50_000_000
QUARANTINE_KEEP_S = 7 * 24 * 3600.0  # an altered blob is kept this long, for a look
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_digest(value: object) -> str:
    """``value`` if it is 64 lowercase hex digits, else :class:`RequestInvalid`."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise RequestInvalid(f"invalid sha256 digest {shown!r}: expected 64 lowercase hex digits")
    return value


def fsync_paths(paths: Sequence[str | Path]) -> None:
    """Make each file or directory durable. Many on one filesystem: one ``syncfs(2)`` for
    them all (2,000 new blobs: 35 ms against 155 ms for their fsyncs, issue 20); else an
    fsync each, several at a time (the filesystem batches concurrent flushes)."""
    if len(paths) >= SYNCFS_MIN and _syncfs_all(paths):
        return
    if len(paths) <= 1:
        for p in paths:
            _fsync_path(p)
        return
    list(_sync_pool().map(_fsync_path, paths))


_pool: ThreadPoolExecutor | None = None  # the fsync threads, kept: making 8 costs ~2 ms
_pool_lock = threading.Lock()


def _sync_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SYNC_WORKERS, thread_name_prefix="ashat-fsync")
        return _pool


def _forget_pool() -> None:
    """In a forked child (the warm helper's commands): none of the parent's threads came
    along, nor may its lock's state be trusted."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _syncfs_all(paths: Sequence[str | Path]) -> bool:
    """``syncfs`` the one filesystem all ``paths`` are on; False (nothing promised) where
    there is no ``syncfs`` (not Linux), they are on several, or it failed: the caller
    fsyncs each then, and sees any error there."""
    global _syncfs
    if _syncfs is None:
        _syncfs = _load_syncfs()
    if _syncfs is False:
        return False
    # An entry is on its directory's filesystem unless it is a mount point, and the agent
    # mounts nothing in its own directories: one lstat per directory, not per file (2,000
    # new blobs share one; their 2,000 lstats were ~10 % of receiving them, issue 20).
    devices = {os.lstat(d).st_dev for d in {os.path.dirname(p) for p in paths}}
    devices.add(os.lstat(paths[0]).st_dev)
    if len(devices) != 1 or not _syncfs_trusted(next(iter(devices))):
        return False
    fd = os.open(paths[0], os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        return bool(_syncfs(fd) == 0)
    finally:
        os.close(fd)


def _load_syncfs() -> Any:
    """libc's ``syncfs``, or False where the C library has none."""
    import ctypes

    try:  # the symbols this process has, libc's among them (no ldconfig run to find it)
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs: Any = None  # libc's syncfs once looked up; False where there is none
# Local filesystems whose syncfs commits their journal, so it covers what the fsyncs of new
# files and their directories would; on others (FUSE, 9p, NFS, overlayfs before 5.15) it
# may flush less or report no error, and each file is fsynced instead.
SYNCFS_FILESYSTEMS = frozenset({"ext4", "xfs", "btrfs", "tmpfs"})
SYNCFS_KERNEL = (5, 8)  # syncfs reports writeback errors since Linux 5.8


@functools.lru_cache(maxsize=64)
def _syncfs_trusted(device: int) -> bool:
    """Whether one ``syncfs`` makes new files on ``device`` durable and says when it could
    not: a kernel from 5.8 on, and a filesystem of :data:`SYNCFS_FILESYSTEMS`."""
    release = os.uname().release.split(".")
    try:
        if (int(release[0]), int(release[1].split("-")[0])) < SYNCFS_KERNEL:
            return False
        mounts = Path("/proc/self/mountinfo").read_text()
    except (ValueError, IndexError, OSError):
        return False
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            return line.split(" - ", 1)[1].split()[0] in SYNCFS_FILESYSTEMS
    return False


def _fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def intact(path: str | Path, size: int, mode: int, st: os.stat_result | None = None) -> bool:
    """Whether ``path`` is a stored file nobody wrote to: its size, mode and stored mtime
    (``st``: its ``lstat``, if the caller has it)."""
    if st is None:
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


def hash_file(path: str) -> tuple[str, os.stat_result] | None:
    """The SHA-256 of a regular file (not followed if a symlink) and its stat, taken from
    the open file after reading; None if it is not a regular file or is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        h = hashlib.sha256()
        while chunk := os.read(fd, HASH_CHUNK):
            h.update(chunk)
        return h.hexdigest(), os.fstat(fd)
    finally:
        os.close(fd)


def _fingerprint(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def blob_path(sha256: str) -> str:
    """A blob's path under a blob directory (``sha256/ab/<sha256>``): how mirrors and the
    nginx in front of OMEGA find it too."""
    return f"sha256/{sha256[:2]}/{sha256}"


def _unlink_settled(paths: Iterable[str], grace_s: float) -> tuple[int, int]:
    """Delete each of ``paths`` not changed (written or linked) within ``grace_s`` seconds;
    the files and bytes freed. A path gone already is skipped."""
    now = time.time()
    files = freed = 0
    for path in paths:
        try:
            st = os.lstat(path)
            if now - st.st_ctime < grace_s:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        files += 1
        freed += st.st_size
    return files, freed


_names: tuple[str, Iterator[int]] | None = None  # this process's temp-name prefix, and counter


def _temp_name() -> str:
    """A new name for a blob's temp file: a random prefix drawn once per process (again in a
    forked child) and a counter. Reading the system's randomness once per blob cost ~4 % of
    a first push's upload (issue 20). The name need not be secret: the file is made with
    ``O_EXCL`` and ``O_NOFOLLOW`` in a directory only the agent writes, and a name taken
    already is skipped."""
    global _names
    if _names is None:
        _names = (secrets.token_hex(6), itertools.count())
    prefix, count = _names
    return f"{prefix}-{next(count)}"


def _new_names() -> None:
    global _names
    _names = None


os.register_at_fork(after_in_child=_new_names)


class BlobStore:
    def __init__(self, root: Path, tmp: Path, max_blob_bytes: int) -> None:
        self.root = root  # blobs/ (holds sha256/ and mode-NNNN/)
        self.tmp = tmp
        self.max_blob_bytes = max_blob_bytes
        self._root = str(root)  # paths are built as strings: pathlib costs ~10 us each
        # (st_dev, st_ino) -> (sha256, fingerprint) of an inode whose bytes were hashed
        self._hashed: dict[tuple[int, int], tuple[str, tuple[int, int, int]]] = {}
        self.quarantined = 0  # blobs moved aside since start (a metric)
        # moves each time a stored file gets a new inode where one was (a blob quarantined,
        # a mode file made again): a tree linked before may hold the old one
        self.replaced = 0
        # bytes new blobs may still take, and the quota it is (``ashat serve``'s spool)
        self.budget: tuple[int, str] | None = None
        self.spent = 0

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def holds(
        self,
        path: str,
        sha256: str,
        size: int,
        mode: int | None = None,
        st: os.stat_result | None = None,
    ) -> bool:
        """Whether ``path`` is a regular file of ``size`` bytes (and ``mode``) that hash to
        ``sha256``: hashed now, or before and unchanged since (same inode, size, mtime and
        ctime). A symlink never holds a blob. ``st``: its ``lstat``, if the caller has it.
        A file whose stat moved while it was read is judged by the bytes read, and its hash
        is not remembered."""
        if st is None:
            try:
                st = os.lstat(path)
            except OSError:
                return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            return False
        if self._hashed.get((st.st_dev, st.st_ino)) == (sha256, _fingerprint(st)):
            return True
        found = hash_file(path)
        if found is None or found[0] != sha256:
            return False
        after = found[1]
        # The bytes read hash to the digest: it holds them. If its stat moved meanwhile
        # (most often only its ctime: a hard link made or removed, by the agent's own stage
        # or sweep), a write may have raced the read, as one may follow it: the hash is not
        # remembered, and the next look reads it again.
        if (after.st_ino, _fingerprint(after)) == (st.st_ino, _fingerprint(st)) and (
            time.time_ns() - after.st_ctime_ns > SETTLE_NS
        ):
            self._hashed[(after.st_dev, after.st_ino)] = (sha256, _fingerprint(after))
        return True

    def _hashed_now(self, path: str, sha256: str) -> None:
        """Remember that ``path`` (just written by us from bytes that hash to ``sha256``)
        holds them."""
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            self._hashed[(st.st_dev, st.st_ino)] = (sha256, _fingerprint(st))

    def relinked(self, links: Iterable[tuple[str, str]]) -> None:
        """Each ``(path, sha256)`` was just hard-linked to (or unlinked from) a stored file
        whose bytes were hashed, which moved its inode's ctime: carry the hash over if
        nothing else about it changed. Only for an agent whose app cannot write the store
        (else hash again)."""
        hashed = self._hashed
        for path, sha256 in links:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            seen = hashed.get(key)
            if seen is not None and seen[0] == sha256:
                size, mtime, _ = seen[1]
                if size == st.st_size and mtime == st.st_mtime_ns:
                    hashed[key] = (sha256, (size, mtime, st.st_ctime_ns))

    def quarantine(self, sha256: str) -> bool:
        """Move a blob whose bytes do not match its name (and its mode files) to
        ``quarantine/``; True if there was one to move."""
        moved = False
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for where in self.kinds():
            path = f"{where}/{sha256[:2]}/{sha256}"
            aside = self.quarantine_dir / f"{sha256}.{os.path.basename(where)}.{stamp}"
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            moved = True
        if moved:
            self.quarantined += 1
            self.replaced += 1
            log.error("blob %s does not hash to its name: moved to quarantine/", sha256)
        return moved

    def kinds(self) -> list[str]:
        """``sha256/`` and every ``mode-NNNN/`` directory of the store."""
        try:
            names = os.listdir(self._root)
        except FileNotFoundError:
            return []
        return [
            f"{self._root}/{n}"
            for n in sorted(names)
            if n == "sha256" or (n.startswith("mode-") and n[5:].isdigit())
        ]

    def file(self, sha256: str, mode: int = BLOB_MODE) -> str:
        """The stored file for ``sha256`` with ``mode`` (the blob itself for BLOB_MODE)."""
        if mode == BLOB_MODE:
            return f"{self._root}/{blob_path(sha256)}"
        return f"{self._root}/mode-{mode:04o}/{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        return Path(self.file(sha256))

    def size(self, sha256: str) -> int | None:
        """The size of a stored blob whose bytes hash to its name; None if absent (an
        altered one is quarantined, and so sent again)."""
        path = self.file(sha256)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if intact(path, st.st_size, BLOB_MODE, st) and self.holds(path, sha256, st.st_size, st=st):
            return st.st_size
        self.quarantine(sha256)
        return None

    def size_if_hashed(self, sha256: str) -> int | None:
        """:meth:`size` where it needs no hashing (for the event loop): the size of a stored
        blob hashed before and unchanged since; None where :meth:`size` must be asked."""
        path = self.file(sha256)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if intact(path, st.st_size, BLOB_MODE, st) and self._hashed.get((st.st_dev, st.st_ino)) == (
            sha256,
            _fingerprint(st),
        ):
            return st.st_size
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
        unused: list[str] = []
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
                    if not kept:
                        unused.append(entry.path)
        return _unlink_settled(unused, grace_s)

    def collect_some(
        self, candidates: Iterable[tuple[str, int]], grace_s: float
    ) -> tuple[int, int]:
        """:meth:`collect` of the stored files ``(sha256, mode)`` only (a blob for
        BLOB_MODE), which the caller knows no kept release uses: those a pruned release
        used, without a scan of the whole store. Call under the agent's lock."""
        return _unlink_settled([self.file(sha, mode) for sha, mode in candidates], grace_s)

    def link_sources(self, wanted: Iterable[tuple[str, int, int]]) -> None:
        """Make sure each ``(sha256, size, mode)`` has an intact file to hard-link from.

        Mode files are copied from their blob (several at a time), made durable, then
        renamed into place. Raises ``OSError`` if a blob is missing or was altered.
        """
        todo = [
            (sha, size, mode)
            for sha, size, mode in set(wanted)
            if mode != BLOB_MODE and not self._mode_file_ok(sha, size, mode)
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
                self.replaced += 1
                self._hashed_now(dest, os.path.basename(dest))  # copied from a hashed blob
            fsync_paths(sorted(dirs))
        finally:
            for tmp, _ in made:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _mode_file_ok(self, sha256: str, size: int, mode: int) -> bool:
        path = self.file(sha256, mode)
        return intact(path, size, mode) and self.holds(path, sha256, size, mode)

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
        if not self.holds(self.file(sha256), sha256, size):  # it changed while copied
            os.unlink(tmp)
            raise OSError(0, f"blob {sha256} changed while it was copied")
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
    (idempotent). A blob already stored (found on the first write, unless ``look=False``),
    or sent twice in one pack (``discard=True``), is only hashed, not written again; one
    found stored only at the commit is dropped there.
    """

    def __init__(
        self, store: BlobStore, expected: str, discard: bool = False, look: bool = True
    ) -> None:
        self.store = store
        self.expected = expected
        self.discard = discard
        self.size = 0
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        self._tmp: str | None = None
        self._finished = False
        self._looked = discard or not look

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
        if self._fd is None:  # mkstemp's flags, with a cheaper name (:func:`_temp_name`)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
            while self._fd is None:
                path = f"{self.store.tmp}/blob-{_temp_name()}"
                with contextlib.suppress(FileExistsError):
                    self._fd, self._tmp = os.open(path, flags, 0o600), path
        return self._fd

    def _count(self, data: bytes) -> None:
        """Hash ``data`` as the blob's next bytes. Raises :class:`PayloadTooLarge` past the
        store's limit (the temp file is removed)."""
        self.size += len(data)
        if self.size > self.store.max_blob_bytes:
            self.abort()
            raise PayloadTooLarge(
                f"blob {self.expected} is larger than the limit of "
                f"{self.store.max_blob_bytes} bytes",
                limit=self.store.max_blob_bytes,
            )
        self._hash.update(data)

    def write(self, data: bytes) -> None:
        """Append ``data``. Raises :class:`PayloadTooLarge` past the store's limit."""
        self._count(data)
        self._look()
        if self.discard:
            return
        if self.store.budget is not None:
            self.store.spent += len(data)
            left, quota = self.store.budget
            if self.store.spent > left:
                self.abort()
                raise PayloadTooLarge(
                    f"this upload goes past {quota}: push what was uploaded (a push frees "
                    "its uploads), or wait an hour for unused ones to expire",
                    limit=left,
                )
        fd = self._open()
        crash_point("blob.write")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def take(self, path: str) -> bool:
        """Make the complete file at ``path`` this blob's temp file, hashing it as it is
        read rather than writing it again (a mainframe's finished download; ``finish``
        then checks the digest, and a mismatch deletes the file, as ``abort`` does). False,
        taking nothing, where ``path`` is not a regular file on the store's filesystem."""
        assert self._fd is None and self._tmp is None and self.size == 0
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a symlink: not ours to take
                return False
            raise
        try:
            st = os.fstat(fd)
            ours = (
                stat.S_ISREG(st.st_mode)
                and st.st_nlink == 1  # no other name it could be written through
                and st.st_uid == os.geteuid()
                and st.st_dev == os.stat(self.store.tmp).st_dev
            )
        except BaseException:
            os.close(fd)
            raise
        if not ours:
            os.close(fd)
            return False
        self._fd, self._tmp, self._looked = fd, path, True  # the caller found it not stored
        crash_point("blob.write")
        while chunk := os.read(fd, HASH_CHUNK):
            self._count(chunk)
        if _fingerprint(os.fstat(fd)) != _fingerprint(st):  # written to while it was read
            self.abort()
            raise DigestMismatch(
                f"blob {self.expected}: the file changed while it was hashed",
                expected=self.expected,
                actual="",
            )
        return True

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
        try:
            os.replace(self._tmp, dest)
        except FileNotFoundError:  # a shard Layout.ensure did not make (an older store)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(self._tmp, dest)
        self._tmp = None
        self.store._hashed_now(dest, self.expected)  # hashed as it arrived
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
