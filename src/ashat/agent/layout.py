"""The agent's data directory, and the two atomic writes everything else relies on.

::

    DIR/blobs/sha256/ab/<sha256>   content-addressed blobs, read-only (blobs.py)
    DIR/blobs/mode-NNNN/ab/<sha>   the same bytes with another mode, for hard links
    DIR/releases/<id>/             materialized release trees (releases.py)
    DIR/manifests/<id>.json        the signed manifest bytes as received
    DIR/current, DIR/previous      symlinks -> releases/<id>, replaced with rename(2)
    DIR/state.json                 activation history, rolled-back ids, app processes
    DIR/logs/<id>.log              the app's stdout and stderr, and its prepare hook's
    DIR/envs/<key>/                the apps' Python environments, one per lock (environments.py)
    DIR/shared/                    kept across releases, given to apps as ASHAT_SHARED_DIR
    DIR/tmp/                       uploads and staging trees; emptied at start-up
    DIR/tmp/partial/<sha256>       a mainframe's interrupted downloads: kept, to resume
    DIR/agent.lock                 flock()ed by the one agent using the directory

OMEGA replicas may keep their blobs in one directory they share (``--blob-dir BLOBS``):
``BLOBS/sha256/…`` and ``BLOBS/mode-NNNN/…`` as above, and ``BLOBS/tmp/`` for blobs on
their way in (renamed into place, so on the same filesystem). Everything else stays per
process: what a replica staged, activated and runs is its own.

Every change that others can observe is a rename of something complete: a blob, a staged
tree, a symlink, ``state.json``. A crash at any instant leaves each name either old or
new, never half-written; what the crash leaves in ``tmp/`` is removed at the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ashat.errors import AshatError, InvalidInput
from ashat.faults import crash_point

CURRENT = "current"
PREVIOUS = "previous"
LINK_NAMES = (CURRENT, PREVIOUS)
# Names in the data directory a crash may leave half-made: symlinks being replaced, and the
# temporary files of atomic writes of state.json and a mainframe's fleet.json.
ROOT_LEFTOVERS = (".link-", ".state.json.", ".fleet.json.")
PARTIAL = "partial"  # under tmp/: spared by clean_tmp, so a download resumes after a restart


SHARED_TMP_MAX_AGE_S = 3600.0  # a blob upload older than this in a shared tmp/ is a leftover
# The agent's reserve (DATA/reserve): inodes and blocks it frees for a switch away from an
# app that filled the disk (its shared/ or its log), which would else have no room.
RESERVE_FILES = 32
RESERVE_BYTES = 8 << 20


@dataclass(frozen=True)
class Layout:
    root: Path
    blob_root: Path | None = None  # a blob store shared with other agents, if not DIR/blobs

    @property
    def blobs(self) -> Path:
        return self.blob_root if self.blob_root is not None else self.root / "blobs"

    @property
    def blob_tmp(self) -> Path:
        """Where blobs are written before their rename into :attr:`blobs`."""
        return self.blob_root / "tmp" if self.blob_root is not None else self.tmp

    @property
    def advisories(self) -> Path:
        """The OSV snapshot the Security Scan reads (``ashat advisories update``)."""
        return self.root / "advisories"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def envs(self) -> Path:
        return self.root / "envs"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def partial(self) -> Path:
        return self.tmp / PARTIAL

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def reserve(self) -> Path:
        return self.root / "reserve"

    def keep_reserve(self) -> bool:
        """Make the reserve whole: :data:`RESERVE_FILES` empty files (inodes) and one of
        :data:`RESERVE_BYTES` (allocated blocks, not a hole). Whether it is whole; never
        raises (a disk too full for it is the case it is for: said by the caller)."""
        blocks, tmp = self.reserve / "blocks", self.reserve / ".blocks"
        try:
            self.reserve.mkdir(mode=0o700, exist_ok=True)
            for i in range(RESERVE_FILES):
                path = self.reserve / f"inode-{i:02d}"
                if not path.exists():
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            if not blocks.is_file() or blocks.stat().st_blocks * 512 < RESERVE_BYTES:
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                finally:
                    os.close(fd)
                os.replace(tmp, blocks)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True

    def release_reserve(self) -> int:
        """Delete the reserve's files (their room is the next writes'); how many went."""
        gone = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.reserve):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    gone += 1
        return gone

    def release_dir(self, update_id: str) -> Path:
        return self.releases / update_id

    def manifest_file(self, update_id: str) -> Path:
        return self.manifests / f"{update_id}.json"

    def log_file(self, update_id: str) -> Path:
        return self.logs / f"{update_id}.log"

    def link(self, name: str) -> Path:
        return self.root / name

    def ensure(self) -> bool:
        """Create the directories (the data directory too); whether the blob store is new
        (it had no ``ab/`` directory: nothing in it can be left over). Raises ``OSError``."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (
            self.blobs / "sha256",
            self.releases,
            self.manifests,
            self.logs,
            self.shared,
            self.tmp,
            self.blob_tmp,
        ):
            d.mkdir(parents=True, exist_ok=True)
        return self._shards(self.blobs / "sha256")

    @staticmethod
    def _shards(directory: Path) -> bool:
        """The 256 ``ab/`` directories blobs are stored in, made once here rather than by
        the first blob of each while a release is installed (a mkdir and its journal entry
        each, on the install's critical path), and made durable; whether there were none
        (an older version made them as its blobs came)."""
        have = set(os.listdir(directory))
        wanted = [f"{i:02x}" for i in range(256)]
        if have.issuperset(wanted):
            return False
        for name in wanted:
            if name not in have:
                with contextlib.suppress(FileExistsError):  # a replica sharing the directory
                    os.mkdir(directory / name, 0o755)
        fsync_dir(directory)
        return not have

    def confine(self, app_uid: int | None, by_path: bool, blobs_to_group: bool = False) -> None:
        """Close the data directory to the app: only ``releases/<id>/`` (read-only, the
        agent's files) and ``shared/`` (the app's) are reachable by another user. With
        ``app_uid``, ``shared/`` becomes that user's; ``by_path`` (no sandbox to bind them)
        also checks the user can reach them. ``blobs_to_group``: the blob store is open to
        the agent's group, for a web server that sends its files (``--blob-offload nginx``).
        Raises ``OSError``, :class:`InvalidInput`."""
        os.chmod(self.root, 0o711)  # traversable, not listable
        os.chmod(self.releases, 0o711)
        for d in (self.manifests, self.logs, self.tmp):
            os.chmod(d, 0o700)
        if self.blob_root is None:
            os.chmod(self.blobs, 0o750 if blobs_to_group else 0o700)
        if blobs_to_group:  # a store made before (or under UMask=0077): its directories too
            _open_dirs_to_group(self.blobs, depth=2)
        if app_uid is not None and self.shared.stat().st_uid != app_uid:
            os.chmod(self.shared, 0o700)  # while it is still ours (no CAP_FOWNER needed)
            os.chown(self.shared, app_uid, -1)
            blocked = unreachable(self.releases, app_uid) if by_path else None
            if blocked is not None:
                raise InvalidInput(
                    f"the app's user (uid {app_uid}) cannot reach {self.releases}: "
                    f"{blocked} is closed to it; open it (chmod o+x) or choose another --data"
                )

    def clean_tmp(self) -> list[str]:
        """Remove what an earlier run left: ``tmp/``, half-made symlinks, and the temporary
        files of atomic writes (:func:`ashat.project.write_private`: ``.<name>.<random>``
        next to a manifest, ``state.json`` or ``fleet.json``) a crash left. Return names."""
        removed = []
        for entry in os.scandir(self.tmp):
            if entry.name == PARTIAL and entry.is_dir(follow_symlinks=False):
                continue
            remove_tree(Path(entry.path))
            removed.append(entry.name)
        for entry in os.scandir(self.root):
            if entry.name.startswith(ROOT_LEFTOVERS):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(entry.name)
        for entry in os.scandir(self.manifests):  # ``.<id>.json.<random>``: see write_private
            if entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(f"manifests/{entry.name}")
        if self.blob_root is not None:  # others may be writing there: only old leftovers
            removed += remove_old(self.blob_tmp, SHARED_TMP_MAX_AGE_S)
        return removed

    def lock(self) -> int:
        """Take the data directory for this process (released when it exits); the fd.

        Raises :class:`~ashat.errors.AshatError` if another agent holds it.
        """
        path = self.root / "agent.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AshatError(
                f"data directory {self.root} is in use by another agent (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def holder(self) -> int | None:
        """The pid of the agent using this data directory now, or None if none is."""
        try:
            fd = os.open(self.root / "agent.lock", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it
        finally:
            os.close(fd)

    def temp_name(self, prefix: str) -> Path:
        return self.tmp / f"{prefix}-{secrets.token_hex(6)}"


def unreachable(path: Path, uid: int) -> Path | None:
    """The first directory on the way to ``path`` that user ``uid`` may not enter, if any
    (the owner's, the other's search bit; group membership is not looked up)."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        bit = 0o100 if st.st_uid == uid else 0o001
        if not st.st_mode & bit:
            return d
    return None


def remove_old(directory: Path, age_s: float) -> list[str]:
    """Remove the files in ``directory`` last changed more than ``age_s`` ago; their names.

    Changed: the mtime, or for a file with the store's fixed mtime (a finished blob waiting
    for its commit, the rest of its pack still arriving: ``STORE_MTIME_NS``) its ctime,
    which says when that mtime was set."""
    from ashat.agent.blobs import STORE_MTIME_NS

    removed = []
    limit = time.time() - age_s
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):
            st = entry.stat(follow_symlinks=False)
            changed = st.st_ctime if st.st_mtime_ns == STORE_MTIME_NS else st.st_mtime
            if stat.S_ISREG(st.st_mode) and changed < limit:
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree; a missing path is fine."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        # A prepare hook may have left read-only directories: open them up, then retry.
        for dirpath, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _open_dirs_to_group(root: Path, depth: int) -> None:
    """Let the group read and enter the directories under ``root``, ``depth`` levels down
    (the blob store's ``sha256/ab/`` and its like; files keep their own modes)."""
    level = [str(root)]
    for _ in range(depth):
        below = []
        for d in level:
            with os.scandir(d) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        mode = e.stat(follow_symlinks=False).st_mode
                        if mode & 0o050 != 0o050:
                            os.chmod(e.path, (mode | 0o050) & 0o7777)
                        below.append(e.path)
        level = below


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a new symlink renamed over the old one."""
    tmp = link.parent / f".link-{link.name}-{secrets.token_hex(6)}"
    os.symlink(target, tmp)
    crash_point("link.replace")
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(link.parent)


def remove_symlink(link: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    fsync_dir(link.parent)
