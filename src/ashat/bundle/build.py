"""Building an unsigned manifest from a source: a directory, or one commit of a git repo.

This is the I/O side of bundling (the manifest itself is pure, :mod:`.manifest`). It walks
a tree without following symlinks, leaves out ``.git`` and ``.ashat`` at the root and what
``.ashatignore`` names (:mod:`.ignore`), hashes regular files (reusing digests from the
:mod:`.hashcache` when their stat is unchanged), records symlinks with their targets, and
refuses anything else (fifos, sockets, devices) or any path that is not safe to
materialize. The result is a :class:`Built`: the manifest plus, for each blob digest, a
file on disk holding that content, ready to be sent.

``build_from_git`` packs exactly the committed tree of a ref: :mod:`.gitsource` writes its
raw blobs into a temporary directory (hashing them on the way), which is then walked like
any directory; the temporary tree lives until :meth:`Built.cleanup`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from ashat.bundle.errors import BundleError
from ashat.bundle.gitsource import (
    GIT_FILE_MODES,
    GIT_SUBMODULE,
    GIT_SYMLINK,
    TreeEntry,
    check_layout,
    extract,
    list_tree,
    read_blob,
    resolve_commit,
)
from ashat.bundle.hashcache import HashCache, stat_key
from ashat.bundle.ignore import ALWAYS_EXCLUDED, IGNORE_FILE, MAX_IGNORE_BYTES, IgnoreRules
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest, file_entry
from ashat.bundle.paths import validate_rel_path

CHUNK = 1024 * 1024  # bytes read at a time when hashing
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _TempTree:
    """A temporary directory removed by :meth:`cleanup`, or when garbage-collected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(path), ignore_errors=True)

    def cleanup(self) -> None:
        self._finalizer()


@dataclass(frozen=True)
class Built:
    """An unsigned manifest and, per blob digest, a file holding that content.

    For git builds the files live in a temporary tree (``tree``) that exists until
    :meth:`cleanup` (or the end of a ``with`` block, or garbage collection of this
    object): keep the :class:`Built` alive while the blobs are being sent.
    """

    manifest: Manifest
    blobs: Mapping[str, Path]
    tree: Path
    _temp: _TempTree | None = field(default=None, repr=False, compare=False)

    def cleanup(self) -> None:
        """Remove the temporary tree of a git build (a no-op for directory builds)."""
        if self._temp is not None:
            self._temp.cleanup()

    def __enter__(self) -> Built:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def hash_file(path: str) -> tuple[str, int]:
    """SHA-256 hex and byte count of the regular file at ``path``, never through a symlink.

    Raises ``OSError`` (the caller names the path in its own error).
    """
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        h = hashlib.sha256()
        n = 0
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


class _Found(NamedTuple):
    rel: str
    path: str
    st: os.stat_result
    target: str | None  # symlinks only


def _describe(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _walk(root: Path, rules: IgnoreRules) -> list[_Found]:
    """Every regular file and symlink under ``root`` not excluded, sorted by path."""
    found: list[_Found] = []
    stack: list[tuple[str, str]] = [(str(root), "")]  # explicit: no recursion limit on depth
    while stack:
        dirpath, prefix = stack.pop()
        try:
            with os.scandir(dirpath) as it:
                entries = list(it)
        except OSError as e:
            raise BundleError(f"cannot read directory {prefix or '.'!r}: {e.strerror}") from e
        for ent in entries:
            rel = prefix + ent.name
            if not prefix and ent.name in ALWAYS_EXCLUDED:
                continue
            try:
                st = ent.stat(follow_symlinks=False)
            except OSError as e:
                raise BundleError(f"cannot stat {rel!r}: {e.strerror}") from e
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules.matches(rel, is_dir):
                continue
            if is_dir:  # a file's path is checked as its manifest entry is made
                validate_rel_path(rel)
                stack.append((ent.path, rel + "/"))
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(ent.path)
                except OSError as e:
                    raise BundleError(f"cannot read symlink {rel!r}: {e.strerror}") from e
                found.append(_Found(rel, ent.path, st, target))
            elif stat.S_ISREG(st.st_mode):
                found.append(_Found(rel, ent.path, st, None))
            else:
                raise BundleError(
                    f"{rel!r} is a {_describe(st.st_mode)}: only regular files, directories "
                    f"and symlinks can be bundled (list it in {IGNORE_FILE} to leave it out)"
                )
    found.sort(key=lambda f: f.rel)
    return found


def _parse_rules(data: bytes) -> IgnoreRules:
    if len(data) > MAX_IGNORE_BYTES:
        raise BundleError(f"{IGNORE_FILE} is larger than {MAX_IGNORE_BYTES} bytes")
    try:
        return IgnoreRules.parse(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BundleError(f"{IGNORE_FILE} is not UTF-8") from e


def _load_rules(root: Path) -> IgnoreRules:
    # O_NOFOLLOW: a symlinked .ashatignore could point anywhere; refuse it (ELOOP).
    try:
        fd = os.open(root / IGNORE_FILE, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        return IgnoreRules()
    except OSError as e:
        raise BundleError(
            f"cannot read {IGNORE_FILE} (must be a regular file): {e.strerror}"
        ) from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{IGNORE_FILE} must be a regular file")
        data = b""
        while len(data) <= MAX_IGNORE_BYTES and (chunk := os.read(fd, CHUNK)):
            data += chunk
    except OSError as e:
        raise BundleError(f"cannot read {IGNORE_FILE}: {e.strerror}") from e
    finally:
        os.close(fd)
    return _parse_rules(data)


class _BlobPaths(Mapping[str, Path]):
    """Per blob digest, the file holding it: kept as strings, each Path made when it is
    asked for (a push asks for the changed ones; 2,000 Paths cost it ~10 ms, issue 20)."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths

    def __getitem__(self, sha256: str) -> Path:
        return Path(self._paths[sha256])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _assemble(
    found: list[_Found],
    *,
    cache: HashCache | None,
    known: Mapping[str, tuple[str, int]] | None,
    meta: dict[str, Any],
) -> tuple[Manifest, Mapping[str, Path]]:
    entries: list[FileEntry] = []
    blobs: dict[str, str] = {}
    for f in found:
        perm = f.st.st_mode & 0o7777
        if f.target is not None:
            entries.append(FileEntry.symlink(f.rel, f.target, perm))
            continue
        size = f.st.st_size
        key = stat_key(f.st)
        sha = None
        if known is not None and f.rel in known:
            sha, n = known[f.rel]
            if n != size:
                raise BundleError(f"{f.rel!r} changed size after extraction")
        elif cache is not None:
            sha = cache.get(f.rel, key)
        if sha is None:
            try:
                sha, n = hash_file(f.path)
            except OSError as e:
                raise BundleError(f"cannot read {f.rel!r}: {e.strerror}") from e
            if n != size:
                raise BundleError(f"{f.rel!r} changed while being read; build again")
            if cache is not None:
                cache.put(f.rel, key, sha)
        entries.append(file_entry(f.rel, sha, size, perm))
        blobs.setdefault(sha, f.path)
    if cache is not None:
        cache.save()
    return Manifest(schema=SCHEMA, files=tuple(entries), **meta), _BlobPaths(blobs)


def _meta(
    update_id: str,
    sequence: int,
    description: str,
    app: dict[str, Any],
    created_at: str,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's fields other than its files, as :func:`_assemble` takes them."""
    return {
        "update_id": update_id,
        "sequence": sequence,
        "description": description,
        "app": app,
        "created_at": created_at,
        "source": source,
    }


def build_from_dir(
    root: Path,
    *,
    update_id: str,
    sequence: int,
    description: str,
    app: dict[str, Any],
    created_at: str,
    source: dict[str, Any] | None = None,
    cache_path: Path | None = None,
) -> Built:
    """Bundle the directory ``root``; ``source`` defaults to ``{"kind": "dir", "path": …}``.

    ``created_at`` is an ISO 8601 timestamp with a timezone; ``app`` must be JSON
    (convert TOML dates first). Raises :class:`BundleError` (an unreadable or special file,
    a bad ``.ashatignore``), :class:`UnsafePath` (a bad name, a symlink leaving the tree),
    :class:`DuplicatePath` (names equal ignoring case) or :class:`ManifestInvalid`.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory")
    if source is None:
        source = {"kind": "dir", "path": str(root)}
    meta = _meta(update_id, sequence, description, app, created_at, source)
    cache = HashCache(cache_path, str(root)) if cache_path is not None else None
    found = _walk(root, _load_rules(root))
    manifest, blobs = _assemble(found, cache=cache, known=None, meta=meta)
    return Built(manifest, blobs, root)


def build_from_git(
    repo_dir: Path,
    ref: str,
    *,
    update_id: str,
    sequence: int,
    description: str,
    app: dict[str, Any],
    created_at: str,
    source: dict[str, Any] | None = None,
    cache_path: Path | None = None,
) -> Built:
    """Bundle exactly the tree committed at ``ref`` (uncommitted changes are not seen).

    ``source`` defaults to ``{"kind": "git", "commit": <full sha>, "ref": ref}``.
    ``cache_path`` is accepted for symmetry with :func:`build_from_dir` and unused: digests
    are computed while the blobs are extracted. The committed ``.ashatignore`` applies.
    Call :meth:`Built.cleanup` (or use ``with``) when done with the blobs. Raises
    :class:`BundleError` for an unknown ref, a non-repository, a submodule, or any of
    :func:`build_from_dir`'s errors.
    """
    del cache_path
    repo_dir = Path(repo_dir)
    sha = resolve_commit(repo_dir, ref)
    listing = list_tree(repo_dir, sha)
    check_layout(listing)
    rules = IgnoreRules()
    for e in listing:
        if e.rel == IGNORE_FILE:
            if e.mode not in GIT_FILE_MODES:
                raise BundleError(f"the committed {IGNORE_FILE} must be a regular file")
            rules = _parse_rules(read_blob(repo_dir, e.oid, f"the committed {IGNORE_FILE}"))
    keep: list[TreeEntry] = []
    for e in listing:
        if rules.excludes(e.rel, is_dir=e.mode == GIT_SUBMODULE):
            continue
        if e.mode == GIT_SUBMODULE:
            raise BundleError(
                f"{e.rel!r} is a git submodule, which a bundle cannot carry "
                f"(list it in {IGNORE_FILE} to leave it out)"
            )
        if e.mode != GIT_SYMLINK and e.mode not in GIT_FILE_MODES:
            raise BundleError(f"committed path {e.rel!r} has unsupported git mode {e.mode}")
        keep.append(e)

    temp = _TempTree(Path(tempfile.mkdtemp(prefix="ashat-git-")))
    try:
        known = extract(repo_dir, keep, temp.path)
        if source is None:
            source = {"kind": "git", "commit": sha, "ref": ref}
        meta = _meta(update_id, sequence, description, app, created_at, source)
        found = _walk(temp.path, rules)
        manifest, blobs = _assemble(found, cache=None, known=known, meta=meta)
    except BaseException:
        temp.cleanup()
        raise
    return Built(manifest, blobs, temp.path, temp)
