"""Release trees on disk: materializing a verified manifest, reading it back, removing it,
and the ``current`` / ``previous`` symlinks.

A tree is built in ``tmp/stage-<id>-<rand>`` and renamed to ``releases/<id>`` only when
complete and durable, after its manifest was written to ``manifests/<id>.json``; removal
renames the tree back into ``tmp/`` before deleting it. So ``releases/<id>`` is always a
whole tree, and start-up (:meth:`ReleaseStore.reconcile`) only has to drop a manifest or a
tree left without its partner by a crash.

Regular files are hard links to the blob store's read-only files of the right mode
(:meth:`~.blobs.BlobStore.link_sources`), so a release that changes 1 % of its files costs
1 % in copies; the manifest's mode is kept, without setuid/setgid bits. Releases share those
inodes, so the app must never be able to write them: it runs as another user or in a
read-only sandbox (:mod:`.confine`), and every activation and rollback first checks the
whole tree against the signed manifest (:meth:`ReleaseStore.damaged`; by hashing each file
where the app could have written it). The app has ``ASHAT_SHARED_DIR`` for data. A link
that fails (another filesystem, too many links) falls back to a copy. Symlinks are
recreated as symlinks; the manifest has already refused any that leave the tree
(:mod:`ashat.bundle.paths`).

After each switch the agent keeps a *template*: a copy of the current tree in ``tmp/``, made
the same way off the request's path (:meth:`ReleaseStore.prepare_template`). The next stage
it costs less than a tree made anew takes it and changes only what differs (unlinks, links,
directories), so staging a 1 % change costs 1 % of the links rather than the whole tree's
(issue 20). The result is the tree :meth:`ReleaseStore.materialize` would have made, and
every activation still checks it against the signed manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from ashat.agent.blobs import STORE_MTIME_NS, BlobStore, copy_fd, fsync_paths
from ashat.agent.errors import NoSuchRelease, RequestInvalid
from ashat.agent.layout import Layout, fsync_dir, remove_symlink, remove_tree, replace_symlink
from ashat.bundle.errors import BundleError
from ashat.bundle.manifest import FileEntry, Manifest, parse_manifest
from ashat.faults import crash_point
from ashat.ids import UPDATE_ID_RE
from ashat.project import write_private

# Permission bits kept from a manifest: no setuid/setgid, and no write by group or others (a
# file pushed 0666, under umask 000 say, is linked by every release that has it: an app
# running as another user could rewrite the older ones, the rollback target among them).
MODE_MASK = 0o1755
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
log = logging.getLogger("ashat.agent")
TEMPLATE_MIN_ENTRIES = 64  # a smaller tree is made anew at each stage: a template would not pay


def _same(a: FileEntry, b: FileEntry) -> bool:
    """Whether entries ``a`` and ``b`` (of one path) put the same thing on disk."""
    if a.kind != b.kind:
        return False
    if a.kind == "symlink":
        return a.target == b.target
    return a.sha256 == b.sha256 and a.mode & MODE_MASK == b.mode & MODE_MASK


def _diff(base: Manifest, m: Manifest) -> tuple[list[FileEntry], list[FileEntry]]:
    """What turns ``base``'s tree into ``m``'s: the entries of ``base`` to remove (gone, or
    put otherwise) and the entries of ``m`` to make."""
    new = {e.path: e for e in m.files}
    old = {e.path: e for e in base.files}
    gone = [e for p, e in old.items() if p not in new or not _same(e, new[p])]
    added = [e for p, e in new.items() if p not in old or not _same(old[p], e)]
    return gone, added


def _directories(paths: Iterable[str]) -> set[str]:
    """Every directory (relative, no trailing slash) holding one of ``paths``."""
    out: set[str] = set()
    for p in paths:
        i = p.rfind("/")
        while i > 0 and p[:i] not in out:
            out.add(p[:i])
            i = p.rfind("/", 0, i)
    return out


class ReleaseStore:
    def __init__(self, layout: Layout, blobs: BlobStore) -> None:
        self.layout = layout
        self.blobs = blobs
        self._manifests: dict[str, Manifest] = {}
        # (manifest, tree in tmp/, the store's ``replaced`` when it was begun) of the template
        # the next stage may take; under the lock
        self._template: tuple[Manifest, Path, int] | None = None
        self._template_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Staged release ids, sorted."""
        return sorted(
            e.name
            for e in os.scandir(self.layout.releases)
            if UPDATE_ID_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        )

    def exists(self, update_id: str) -> bool:
        return self.layout.release_dir(update_id).is_dir()

    def manifest(self, update_id: str) -> Manifest:
        """The staged manifest (verified when it was staged). Raises :class:`NoSuchRelease`."""
        m = self._manifests.get(update_id)
        if m is not None:
            return m
        if not UPDATE_ID_RE.fullmatch(update_id) or not self.exists(update_id):
            raise NoSuchRelease(f"release {update_id!r} is not staged here")
        try:
            m = parse_manifest(self.layout.manifest_file(update_id).read_bytes())
        except FileNotFoundError as e:
            raise NoSuchRelease(f"release {update_id!r} has no manifest") from e
        self._manifests[update_id] = m
        return m

    def summary(self, update_id: str) -> dict[str, Any]:
        m = self.manifest(update_id)
        return {
            "update_id": m.update_id,
            "sequence": m.sequence,
            "description": m.description,
            "created_at": m.created_at,
            "files": len(m.files),
            "bytes": m.total_size,
        }

    def link_target(self, name: str) -> str | None:
        """The release a symlink (``current``/``previous``) names, if it exists."""
        try:
            target = os.readlink(self.layout.link(name))
        except OSError:
            return None
        update_id = PurePosixPath(target).name
        if UPDATE_ID_RE.fullmatch(update_id) and self.exists(update_id):
            return update_id
        return None

    # -- staging ---------------------------------------------------------------------------

    def missing_blobs(self, m: Manifest) -> list[str]:
        """Digests the manifest needs that the store lacks; a size mismatch is refused."""
        missing: list[str] = []
        seen: set[str] = set()
        for e in m.files:
            if e.kind != "file" or e.sha256 in seen:
                continue
            seen.add(e.sha256)
            size = self.blobs.size(e.sha256)
            if size is None:
                missing.append(e.sha256)
            elif size != e.size:
                raise RequestInvalid(
                    f"file {e.path!r}: manifest says {e.size} bytes but blob {e.sha256} "
                    f"holds {size}",
                    path=e.path,
                )
        return missing

    def materialize(self, m: Manifest, *, sealed: bool = False) -> Path:
        """Build the tree in a new staging directory under ``tmp/`` and return it: from the
        template (:meth:`prepare_template`) where that changes fewer entries, else anew.

        ``sealed``: the app cannot write the store (:mod:`.confine`), so a blob hashed
        before it was linked still counts as hashed after (activation then need not read it
        again).

        Raises ``OSError`` (a disk full, a blob gone); the staging directory is removed.
        """
        template = self._take_template(m)
        if template is not None:
            return self._from_template(m, *template, sealed=sealed)
        return self._build(m, "stage", sealed=sealed)

    def _build(self, m: Manifest, prefix: str, *, sealed: bool) -> Path:
        """``m``'s whole tree, durable, in a new directory ``tmp/<prefix>-<id>-…``."""
        dest = self.layout.temp_name(f"{prefix}-{m.update_id}")
        dest.mkdir(mode=0o755)
        try:
            files = [e for e in m.files if e.kind == "file"]
            self.blobs.link_sources((e.sha256, e.size, e.mode & MODE_MASK) for e in files)
            root = str(dest)
            dirs = {root}
            copied, linked = self._place(root, m.files, dirs)
            if sealed:  # after all links: a blob linked twice moved its ctime twice
                self.blobs.relinked(linked)
            fsync_paths(copied)
            fsync_paths(sorted(dirs))
        except BaseException:
            remove_tree(dest)
            raise
        return dest

    def _place(
        self, root: str, entries: Iterable[FileEntry], dirs: set[str]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Make each entry under ``root`` (its directories as needed, added to ``dirs``): a
        link to its stored file, or a copy where linking fails, or a symlink. Returns the
        files copied and the ``(path, sha256)`` linked."""
        copied: list[str] = []
        linked: list[tuple[str, str]] = []
        stored, link = self.blobs.file, os.link  # 2,000 times: looked up once
        for e in entries:
            target = f"{root}/{e.path}"  # safe: validated relative POSIX path
            parent = target.rpartition("/")[0]  # os.path.dirname, of a normalized path
            if parent not in dirs:
                os.makedirs(parent, mode=0o755, exist_ok=True)
                while parent not in dirs:
                    dirs.add(parent)
                    parent = os.path.dirname(parent)
            if e.kind == "symlink":
                assert e.target is not None  # a symlink entry always has one
                os.symlink(e.target, target)
                continue
            source = stored(e.sha256, e.mode & MODE_MASK)
            crash_point("stage.link")
            try:
                link(source, target)
            except OSError:  # another filesystem, too many links: copy instead
                self._copy(source, e, target)
                copied.append(target)
                continue
            linked.append((target, e.sha256))
        return copied, linked

    # -- the template ----------------------------------------------------------------------

    def prepare_template(self, m: Manifest, *, sealed: bool = False) -> None:
        """Keep a copy of ``m``'s tree in ``tmp/``, made as :meth:`materialize` makes one,
        for the next stage to start from (replacing the one kept before). A tree of fewer
        than :data:`TEMPLATE_MIN_ENTRIES` entries gets none. Raises ``OSError``."""
        if len(m.files) < TEMPLATE_MIN_ENTRIES:
            self.drop_template()
            return
        replaced = self.blobs.replaced  # before a link is made: a change during counts
        tree = self._build(m, "template", sealed=sealed)
        with self._template_lock:
            if not self.exists(m.update_id):  # removed meanwhile (:meth:`remove` drops it)
                old: tuple[Manifest, Path, int] | None = (m, tree, replaced)
            else:
                old, self._template = self._template, (m, tree, replaced)
        if old is not None:
            remove_tree(old[1])

    def drop_template(self, of: str | None = None) -> None:
        """Remove the template (only if it copies release ``of``, where given)."""
        with self._template_lock:
            old = self._template
            if old is None or (of is not None and old[0].update_id != of):
                return
            self._template = None
        remove_tree(old[1])

    def _take_template(
        self, m: Manifest
    ) -> tuple[Manifest, Path, list[FileEntry], list[FileEntry]] | None:
        """The template, taken (no other stage gets it), with :func:`_diff` of it to ``m``,
        if that changes fewer entries than making ``m`` anew links; else None, and it
        stays. One that may link a stored file's old inode (a blob quarantined or a mode
        file made again since it was begun) is dropped: the stage makes its tree anew."""
        with self._template_lock:
            if self._template is None:
                return None
            base, tree, replaced = self._template
            stale = replaced != self.blobs.replaced
            if not stale:
                gone, added = _diff(base, m)
                if len(gone) + len(added) >= len(m.files):
                    return None
            self._template = None
        if stale:  # (a file replaced after this is found by the activation's check)
            remove_tree(tree)
            return None
        return base, tree, gone, added

    def _from_template(
        self,
        m: Manifest,
        base: Manifest,
        tree: Path,
        gone: list[FileEntry],
        added: list[FileEntry],
        *,
        sealed: bool,
    ) -> Path:
        """Turn the template ``tree`` (``base``'s) into ``m``'s: remove the entries ``gone``,
        then make those ``added`` (:func:`_diff`); only the directories changed are made
        durable again (the rest were when the template was made)."""
        root = str(tree)
        old, new = (e.path for e in base.files), (e.path for e in m.files)
        try:
            touched: set[str] = set()
            for e in gone:
                os.unlink(f"{root}/{e.path}")
                touched.add(f"{root}/{e.path}".rpartition("/")[0])
            old_dirs, new_dirs = _directories(old), _directories(new)
            for d in sorted(old_dirs - new_dirs, key=len, reverse=True):
                os.rmdir(f"{root}/{d}")  # deepest first: each is empty by now
                touched.add(f"{root}/{d}".rpartition("/")[0])
            self.blobs.link_sources(
                (e.sha256, e.size, e.mode & MODE_MASK) for e in added if e.kind == "file"
            )
            dirs = {root} | {f"{root}/{d}" for d in new_dirs & old_dirs}
            before = set(dirs)
            copied, linked = self._place(root, added, dirs)
            touched |= {f"{root}/{e.path}".rpartition("/")[0] for e in added}
            touched |= {d.rpartition("/")[0] for d in dirs - before}  # each made: its parent
            touched &= dirs  # not a directory removed, or made a file or symlink since
            if sealed:  # unlinked and linked: those blobs' ctimes moved
                unlinked = [
                    (self.blobs.file(e.sha256, e.mode & MODE_MASK), e.sha256)
                    for e in gone
                    if e.kind == "file"
                ]
                self.blobs.relinked([*unlinked, *linked])
            fsync_paths(copied)
            fsync_paths(sorted(touched))
        except BaseException:
            remove_tree(tree)
            raise
        log.info("staging %s from the tree of %s: %d entries removed, %d made", m.update_id,
                 base.update_id, len(gone), len(added))  # fmt: skip
        return tree

    @staticmethod
    def _copy(source: str, e: FileEntry, target: str) -> None:
        src = os.open(source, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
            dst = os.open(target, flags, 0o600)
            try:
                if copy_fd(src, dst, e.size) != e.size:
                    raise OSError(0, f"blob {e.sha256} is shorter than {e.size} bytes")
                os.fchmod(dst, e.mode & MODE_MASK)
                os.utime(dst, ns=(STORE_MTIME_NS, STORE_MTIME_NS))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def unshare_writes(self) -> int:
        """Take group and other write away from the release files that have them (a store
        of a version that kept them), so they match ``MODE_MASK``: a linked file is its
        mode copy's inode, so that copy loses them too (one it stops matching is no kept
        release's, and collected); a file copied where a link failed, alone. Returns how
        many."""
        done = 0
        for update_id in self.ids():
            for top, _, names in os.walk(self.layout.release_dir(update_id)):
                for name in names:
                    path = os.path.join(top, name)
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o022:
                        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)
                        done += 1
        return done

    def damaged(self, m: Manifest, *, by_hash: bool) -> list[str]:
        """The paths of ``releases/<id>`` that are not what the signed manifest says: a file
        whose size, mode or stored mtime differ — or, ``by_hash``, whose bytes do not hash
        to its digest (unless hashed before and unchanged since) —, a symlink pointing
        elsewhere, an entry missing, or one the manifest does not have."""
        root = str(self.layout.release_dir(m.update_id))
        bad: list[str] = []
        wanted: set[str] = set()
        for e in m.files:
            wanted.add(e.path)
            path = f"{root}/{e.path}"
            if e.kind == "symlink":
                try:
                    ok = os.path.islink(path) and os.readlink(path) == e.target
                except OSError:
                    ok = False
            else:
                try:
                    st = os.lstat(path)
                except OSError:
                    bad.append(e.path)
                    continue
                mode = e.mode & MODE_MASK
                ok = st.st_mtime_ns == STORE_MTIME_NS and (
                    self.blobs.holds(path, e.sha256, e.size, mode, st)
                    if by_hash
                    else stat.S_ISREG(st.st_mode)
                    and st.st_size == e.size
                    and stat.S_IMODE(st.st_mode) == mode
                )
            if not ok:
                bad.append(e.path)
        parents = _directories(wanted)  # the tree's directories
        pending = [""]
        while pending:  # anything on disk the manifest does not have
            rel = pending.pop()
            with os.scandir(f"{root}/{rel}" if rel else root) as entries:
                for entry in entries:
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    if name in parents and entry.is_dir(follow_symlinks=False):
                        pending.append(name)
                    elif name not in wanted:
                        bad.append(name)
        return bad

    def install(self, m: Manifest, manifest_bytes: bytes, staging: Path) -> None:
        """Make a materialized tree ``releases/<id>`` (call under the agent's lock)."""
        write_private(self.layout.manifest_file(m.update_id), manifest_bytes, mode=0o644)
        crash_point("stage.install")
        os.rename(staging, self.layout.release_dir(m.update_id))
        fsync_dir(self.layout.releases)
        self._manifests[m.update_id] = m

    def replace_manifest(self, m: Manifest, manifest_bytes: bytes) -> None:
        """Keep the newest verified bytes of an already staged manifest (new signatures)."""
        write_private(self.layout.manifest_file(m.update_id), manifest_bytes, mode=0o644)
        self._manifests[m.update_id] = m

    def manifest_bytes(self, update_id: str) -> bytes:
        return self.layout.manifest_file(update_id).read_bytes()

    # -- removing and linking ----------------------------------------------------------------

    def remove(
        self,
        update_id: str,
        *,
        sealed: bool = False,
        later: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """Delete ``releases/<id>`` and its manifest (a missing one is fine).

        The tree is first renamed into ``tmp/`` (one durable rename: it is no release from
        then on, and a crash leaves it to the start-up's cleaning); deleting its files is the
        slow part, which ``later(work)`` may run after the caller answers (the agent's
        pruning does).

        ``sealed``: the app cannot write the store (:mod:`.confine`), so removing the tree's
        links to a blob hashed before changes nothing but its inode's ctime, and the blob
        still counts as hashed (else the next ``missing`` would read every blob again)."""
        files = self._linked_files(update_id) if sealed else []
        self._manifests.pop(update_id, None)
        tree = self.layout.release_dir(update_id)
        trash = None
        if tree.is_dir():
            trash = self.layout.temp_name(f"old-{update_id}")
            os.rename(tree, trash)
            fsync_dir(self.layout.releases)
            crash_point("release.remove")
        # after the rename: a template begun before sees the release gone (prepare_template)
        self.drop_template(of=update_id)  # its blobs may be collected from now on
        with contextlib.suppress(FileNotFoundError):
            self.layout.manifest_file(update_id).unlink()

        def dispose() -> None:
            if trash is not None:
                remove_tree(trash)
            self.blobs.relinked(files)

        if later is None:
            dispose()
        else:
            later(dispose)

    def _linked_files(self, update_id: str) -> list[tuple[str, str]]:
        """The stored files ``releases/<id>`` links to, with their digests (none if its
        manifest cannot be read)."""
        try:
            m = self.manifest(update_id)
        except (NoSuchRelease, BundleError, OSError):  # half-removed, or damaged
            return []
        return [
            (self.blobs.file(e.sha256, e.mode & MODE_MASK), e.sha256)
            for e in m.files
            if e.kind == "file"
        ]

    def set_link(self, name: str, update_id: str | None) -> None:
        link = self.layout.link(name)
        if update_id is None:
            remove_symlink(link)
        else:
            replace_symlink(link, f"releases/{update_id}")

    def reconcile(self, keep: set[str]) -> list[str]:
        """Drop trees without a manifest and manifests without a tree; return what went.

        ``keep`` (what the symlinks name) is never removed, only reported.
        """
        notes = []
        for update_id in self.ids():
            if not self.layout.manifest_file(update_id).is_file():
                if update_id in keep:
                    notes.append(f"release {update_id} has no manifest but is in use; kept")
                    continue
                self.remove(update_id)
                notes.append(f"removed release {update_id}: its manifest was never written")
        for entry in os.scandir(self.layout.manifests):
            update_id = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and not self.exists(update_id):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                notes.append(f"removed manifest {entry.name}: its release tree is gone")
        return notes
