"""``.ashatignore``: which paths of a source tree stay out of the bundle (gitignore-lite).

Rules, one pattern a line:

- blank lines and lines starting with ``#`` are ignored; surrounding whitespace is stripped;
- a trailing ``/`` matches directories only (``build/``);
- a pattern without ``/`` matches a name at any depth (``*.pyc``, ``node_modules``);
- a pattern with ``/``, or anchored by a leading ``/``, is matched against the whole
  relative path with :func:`fnmatch.fnmatchcase` (``docs/*.md``, ``/dist``); note that
  there ``*`` also matches ``/``; a leading ``**/`` also matches at the root;
- an ignored directory is not descended into, so everything under it is ignored too;
- negation (``!pattern``) is not supported and is refused rather than silently misread.

``.git`` and ``.ashat`` at the root (:data:`ALWAYS_EXCLUDED`) are left out whatever the
file says. Pure: :meth:`IgnoreRules.parse` takes the file's text, :meth:`IgnoreRules.matches`
a path.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ashat.bundle.errors import BundleError

IGNORE_FILE = ".ashatignore"
ALWAYS_EXCLUDED = frozenset({".git", ".ashat"})  # names at the root only
MAX_IGNORE_BYTES = 1024 * 1024  # bytes


@dataclass(frozen=True)
class IgnorePattern:
    glob: str
    dir_only: bool
    whole_path: bool

    def matches(self, relpath: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if not self.whole_path:
            return fnmatchcase(posixpath.basename(relpath), self.glob)
        if fnmatchcase(relpath, self.glob):
            return True
        return self.glob.startswith("**/") and fnmatchcase(relpath, self.glob[3:])


@dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[IgnorePattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        """Parse ``.ashatignore`` text. Raises :class:`BundleError` for a ``!`` pattern."""
        out: list[IgnorePattern] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!"):
                raise BundleError(
                    f"{IGNORE_FILE} line {lineno}: negated patterns ('!') are not supported"
                )
            dir_only = line.endswith("/")
            anchored = line.startswith("/")
            glob = line.strip("/")
            if not glob:
                continue
            out.append(IgnorePattern(glob, dir_only, anchored or "/" in glob))
        return cls(tuple(out))

    def matches(self, relpath: str, is_dir: bool) -> bool:
        """Whether ``relpath`` (POSIX, relative to the root) is ignored."""
        return any(p.matches(relpath, is_dir) for p in self.patterns)

    def excludes(self, relpath: str, is_dir: bool) -> bool:
        """Whether ``relpath`` is left out: at the root always-excluded, or it or any of
        its parent directories ignored. For flat listings; a walk prunes instead."""
        parts = relpath.split("/")
        if parts[0] in ALWAYS_EXCLUDED:
            return True
        parents = ("/".join(parts[:i]) for i in range(1, len(parts)))
        return any(self.matches(d, True) for d in parents) or self.matches(relpath, is_dir)
