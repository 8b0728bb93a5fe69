"""Which manifest paths are safe to materialize: pure checks on strings, no filesystem access.

A release tree is written by a server from a manifest it did not produce, so every path
must stay inside the tree however it is joined: relative POSIX paths of plain components
only, and symlinks whose targets — followed through the other symlinks of the same tree,
as the kernel would — never climb out of it. Paths that differ only in case (or Unicode
normalization) are refused too, because they collide on case-insensitive filesystems.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Mapping

from ashat.bundle.errors import UnsafePath

MAX_PATH_BYTES = 4096  # bytes of UTF-8, as PATH_MAX on Linux
MAX_NAME_BYTES = 255  # one component, as NAME_MAX on every common filesystem
MAX_SYMLINK_HOPS = 40  # as the Linux kernel's ELOOP limit


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc


def _has_control(s: str) -> bool:
    return _CONTROL.search(s) is not None


# Paths of plain ASCII names, none of them '.' or '..': safe at sight, if short enough
# that no component can pass 255 bytes (a push checks each of its 2,000 paths twice, an
# agent once more; the full checks below cost five times as much, issue 20).
_PLAIN = re.compile(r"(?!\.\.?(?:/|\Z))[\w.+@=,-]+(?:/(?!\.\.?(?:/|\Z))[\w.+@=,-]+)*", re.ASCII)


def validate_rel_path(p: str) -> str:
    """Return ``p`` if it is a safe relative POSIX path, else raise :class:`UnsafePath`.

    Safe means: a non-empty string of at most 4096 UTF-8 bytes, not starting with '/',
    without '\\', NUL or other control characters, whose '/'-separated components are
    each non-empty, not '.' or '..', and at most 255 bytes. Any (encodable) Unicode is fine.
    """
    if type(p) is str and len(p) <= MAX_NAME_BYTES and _PLAIN.fullmatch(p):
        return p
    return _check_rel_path(p)


def _check_rel_path(p: str) -> str:
    """:func:`validate_rel_path`, each rule checked on its own (and named when broken)."""
    if not isinstance(p, str):
        raise UnsafePath(f"path must be a string, got {type(p).__name__}", path=repr(p))
    if not p:
        raise UnsafePath("empty path", path=p)
    try:
        encoded = p.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UnsafePath(f"path {p!r} is not valid Unicode (undecodable name?)", path=p) from e
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"path {p[:60]!r}… is longer than {MAX_PATH_BYTES} bytes", path=p)
    if p.startswith("/"):
        raise UnsafePath(f"path {p!r} is absolute", path=p)
    if "\\" in p:
        raise UnsafePath(f"path {p!r} contains a backslash", path=p)
    if _has_control(p):
        raise UnsafePath(f"path {p!r} contains a NUL or control character", path=p)
    short = len(encoded) <= MAX_NAME_BYTES  # then no component can be too long
    for part in p.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePath(f"path {p!r} has an empty, '.' or '..' component", path=p)
        if not short and len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UnsafePath(
                f"path {p!r} has a component longer than {MAX_NAME_BYTES} bytes", path=p
            )
    return p


def symlink_target_ok(link_path: str, target: str) -> bool:
    """Whether ``target``, read lexically from the directory of ``link_path``, stays inside.

    This is the check on one link alone; :func:`escaping_symlinks` also follows links
    through each other (``d -> .`` then ``x -> d/../..``), which only the whole tree shows.
    """
    if not isinstance(target, str) or not target or target.startswith("/"):
        return False
    if "\0" in target or "\\" in target or _has_control(target):
        return False
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    return not (resolved == ".." or resolved.startswith("../") or resolved.startswith("/"))


def resolve_in_tree(path: str, links: Mapping[str, str]) -> str | None:
    """Where ``path`` lands after following the tree's symlinks as the kernel would.

    ``links`` maps each symlink's path to its target. Returns the resolved path relative
    to the root ('' for the root itself), or ``None`` if resolution climbs above the root,
    meets an absolute target, or exceeds :data:`MAX_SYMLINK_HOPS` (a loop). Components
    that are not in ``links`` are taken as real directories or files, existing or not.
    """
    resolved: list[str] = []
    pending = list(reversed(path.split("/")))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is None:
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS or target.startswith("/"):
            return None
        # The link is replaced by its target, read from the directory that holds it.
        resolved.pop()
        pending.extend(reversed(target.split("/")))
    return "/".join(resolved)


def escaping_symlinks(links: Mapping[str, str]) -> list[str]:
    """The symlinks (sorted) that leave the tree, or loop, when followed through the others."""
    return [p for p in sorted(links) if resolve_in_tree(p, links) is None]


def _fold(p: str) -> str:
    # Case-insensitive filesystems also ignore Unicode normalization (APFS) or case-fold
    # a decomposed form; comparing NFC of the casefolded NFD covers both.
    if p.isascii():  # the same, for ASCII: no normalization to do, casefold() is lower()
        return p.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", p).casefold())


def _with_ancestors(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def casefold_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct paths (or implied parent directories) equal ignoring case.

    ``A/x`` and ``a/y`` collide through their directories ``A`` and ``a``. Each pair is
    (first in sorted order, the other); exact duplicates are not reported here.
    """
    seen: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for p in sorted(_with_ancestors(paths)):
        key = _fold(p)
        first = seen.setdefault(key, p)
        if first != p:
            pairs.append((first, p))
    return pairs


def under_glob(rel: str, patterns: Iterable[str]) -> bool:
    """Whether the release path ``rel`` or one of its parent directories matches one of the
    ``fnmatch`` globs ``patterns`` (``[verify.security] allow``: the scan on PUBLIC and the
    push's own check of the tree read it alike)."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(c, p.strip("/")) for p in patterns for c in candidates)
