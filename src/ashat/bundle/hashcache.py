"""A local cache of file digests, so re-bundling an unchanged tree need not re-read it.

Like git's index: an entry maps a relative path to ``[size, mtime_ns, ctime_ns, ino, dev,
sha256]`` and is reused only when all five stat values still match. The ctime is what no
tool can set: a file rewritten at the same size with its mtime put back (``touch -r``,
``cp -p``, an archive extracted with its times, a ``SOURCE_DATE_EPOCH`` build), or deleted
and made again on the inode just freed, keeps size, mtime and inode, but not its ctime.
A file whose mtime is within :data:`RACY_NS` of the moment the cache was opened (before
the tree is walked) is not stored ("racy clean"): it could change again within the
filesystem's timestamp granularity without its stat changing, and the walk may hash it
long after it was opened.

The file is JSON, ``{"version": 2, "root": <abs path>, "files": {...}}``, written
atomically (temp file + rename). A missing, unreadable, corrupt or foreign (other root,
other version) cache is treated as empty; failing to write it is not an error — the cache
only ever saves work, it never decides content.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from ashat.project import read_regular, write_private

CACHE_VERSION = 2  # 1 keyed on size, mtime and inode only
RACY_NS = 2_000_000_000  # 2 s, in nanoseconds
MAX_CACHE_BYTES = 256 * 1024 * 1024  # bytes; past this the cache is ignored

_SHA_RE = re.compile(r"[0-9a-f]{64}")

Stat = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, ino, dev

# The cache file read last: its path, identity (device, inode, size, mtime, ctime), root,
# and its entries (HashCache._load).
_LAST: tuple[str, tuple[int, ...], str, dict[str, tuple[Stat, str]]] | None = None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is written: its device, inode, size, mtime and ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _entry_ok(v: Any) -> bool:
    return (  # each test spelled out: a cache of 2,000 entries is read at each push
        type(v) is list
        and len(v) == 6
        and type(v[0]) is int
        and type(v[1]) is int
        and type(v[2]) is int
        and type(v[3]) is int
        and type(v[4]) is int
        and type(v[5]) is str
        and _SHA_RE.fullmatch(v[5]) is not None
    )


class HashCache:
    """Digests keyed by relative path and :data:`Stat`. Not thread-safe.

    Open it before the tree is walked: what it stores is judged racy against that moment.
    """

    def __init__(self, path: Path | None, root: str) -> None:
        self.path = path
        self.root = root
        self.opened_ns = time.time_ns()
        self._old: dict[str, tuple[Stat, str]] = {}
        self._new: dict[str, tuple[Stat, str]] = {}
        if path is not None:
            self._old = self._load(path, root)

    @staticmethod
    def _load(path: Path, root: str) -> dict[str, tuple[Stat, str]]:
        """The entries of the cache file at ``path`` for ``root``; those read last if the
        file is the one read then (same inode, size, mtime and ctime): the warm helper reads
        a project's cache after each push, so the next push's child need not parse and check
        2,000 entries again (~8 ms, issue 20). ashat writes the file only by renaming a new
        one over it, so a write gives it a new inode. The entries are only ever read."""
        global _LAST
        try:
            last = _LAST
            if last is not None and last[:3] == (str(path), _identity(os.lstat(path)), root):
                return last[3]
            data, st = read_regular(path, MAX_CACHE_BYTES)  # not a FIFO planted there
            if len(data) > MAX_CACHE_BYTES:
                return {}
            obj = json.loads(data)
        except (OSError, ValueError, RecursionError):
            return {}
        if (
            not isinstance(obj, dict)
            or obj.get("version") != CACHE_VERSION
            or obj.get("root") != root
            or not isinstance(obj.get("files"), dict)
        ):
            return {}
        entries = {
            rel: ((v[0], v[1], v[2], v[3], v[4]), v[5])
            for rel, v in obj["files"].items()
            if isinstance(rel, str) and _entry_ok(v)
        }
        _LAST = (str(path), _identity(st), root, entries)
        return entries

    def get(self, rel: str, stat: Stat) -> str | None:
        """The cached digest of ``rel`` if its stat is unchanged (and keep it for next time)."""
        hit = self._old.get(rel)
        if hit is None or hit[0] != stat:
            return None
        self._new[rel] = hit
        return hit[1]

    def put(self, rel: str, stat: Stat, sha256: str) -> None:
        self._new[rel] = (stat, sha256)

    def save(self) -> None:
        """Write the entries seen in this build, minus racy ones (an mtime within
        :data:`RACY_NS` of :attr:`opened_ns`: a file is read after the cache was opened, so
        a later moment could let one rewritten in its timestamp tick pass as clean). Write
        errors are ignored."""
        if self.path is None:
            return
        files = {
            rel: [*st, sha]
            for rel, (st, sha) in self._new.items()
            if st[1] < self.opened_ns - RACY_NS
        }
        # A cache that cannot be written only costs a re-hash next time.
        with contextlib.suppress(OSError, ValueError):
            # plain JSON: the entries come in the walk's order, and sorting 2,000 keys again
            # cost ~2 ms of each push (the bytes are never hashed or compared)
            obj = {"version": CACHE_VERSION, "root": self.root, "files": files}
            data = json.dumps(obj, separators=(",", ":")).encode()
            write_private(self.path, data, mode=0o600, sync=False)  # a torn cache is ignored


def stat_key(st: os.stat_result) -> Stat:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
