"""Reading one commit of a git repository exactly: its tree listing and its raw blobs.

``git ls-tree -r -z`` lists the commit; ``git cat-file --batch`` streams the blobs, which
are written under a destination directory and hashed on the way (so nothing is read
twice). Not ``git archive``: that honours ``export-ignore``/``export-subst`` and eol
attributes, so its output is not the commit. Paths are validated, and the listing checked
for duplicates and files-under-files, before anything is written, so every directory
created is a fresh one and no write can follow a symlink. Used by
:func:`ashat.bundle.build.build_from_git`; every failure is a :class:`BundleError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ashat.bundle.errors import BundleError, DuplicatePath, UnsafePath
from ashat.bundle.paths import symlink_target_ok, validate_rel_path

CHUNK = 1024 * 1024  # bytes copied at a time
GIT_TIMEOUT = 120  # seconds, for each one-shot git command
MAX_SYMLINK_TARGET = 4096  # bytes
GIT_FILE_MODES = {"100644": 0o644, "100664": 0o644, "100755": 0o755}
GIT_SYMLINK = "120000"
GIT_SUBMODULE = "160000"
_OID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _git_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            env=_git_env(),
            check=False,
        )
    except FileNotFoundError as e:
        raise BundleError("git is not installed (needed for a --git build)") from e
    except subprocess.TimeoutExpired as e:
        raise BundleError(f"git {args[0]} timed out after {GIT_TIMEOUT} s in {repo}") from e


def _git_fail(repo: Path, what: str, r: subprocess.CompletedProcess[bytes]) -> BundleError:
    msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
    return BundleError(f"{what} in {repo}: {msg[0] if msg else f'exit {r.returncode}'}")


def resolve_commit(repo_dir: Path, ref: str) -> str:
    """The full commit id ``ref`` names in ``repo_dir``. Raises :class:`BundleError`."""
    if not ref or ref.startswith("-") or any(c in ref for c in "\0\n"):
        raise BundleError(f"invalid git ref {ref!r}")
    r = _git(repo_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if r.returncode == 1 and not r.stderr.strip():
        raise BundleError(f"unknown git ref {ref!r} (no such commit) in {repo_dir}")
    if r.returncode != 0:
        raise _git_fail(repo_dir, f"cannot resolve git ref {ref!r}", r)
    sha = r.stdout.decode("ascii", "replace").strip()
    if len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
        raise BundleError(f"git rev-parse gave an unexpected answer for {ref!r}")
    return sha


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    oid: str
    rel: str


def list_tree(repo: Path, sha: str) -> list[TreeEntry]:
    """Every blob, symlink and submodule of commit ``sha``, with validated paths."""
    r = _git(repo, "ls-tree", "-r", "-z", "--full-tree", sha)
    if r.returncode != 0:
        raise _git_fail(repo, f"cannot list commit {sha[:12]}", r)
    out: list[TreeEntry] = []
    for rec in r.stdout.split(b"\0"):
        if not rec:
            continue
        head, _, raw = rec.partition(b"\t")
        fields = head.decode("ascii", "replace").split(" ")
        if len(fields) != 3:
            raise BundleError(f"git ls-tree gave an unexpected line for commit {sha[:12]}")
        mode, _typ, oid = fields
        if not mode.isdigit() or not _OID_RE.fullmatch(oid):
            raise BundleError(f"git ls-tree gave an unexpected line for commit {sha[:12]}")
        try:
            rel = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            shown = raw.decode("utf-8", "replace")
            raise UnsafePath(f"committed path {shown!r} is not UTF-8", path=shown) from e
        out.append(TreeEntry(mode, oid, validate_rel_path(rel)))
    return out


def check_layout(entries: list[TreeEntry]) -> None:
    """Refuse a listing with a path twice, or a path under another entry.

    A crafted tree object can hold the same name twice, or a blob and a tree of one name;
    refusing before writing makes every parent that :func:`extract` creates a fresh
    directory, never a symlink.
    """
    paths: set[str] = set()
    for e in entries:
        if e.rel in paths:
            raise DuplicatePath(f"committed path {e.rel!r} appears twice", path=e.rel)
        paths.add(e.rel)
    for e in entries:
        parts = e.rel.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise UnsafePath(f"committed path {e.rel!r} lies under a file", path=e.rel)


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise BundleError("git cat-file ended early")
    return data


def extract(repo: Path, entries: list[TreeEntry], dest: Path) -> dict[str, tuple[str, int]]:
    """Write each entry's raw blob under ``dest`` (files 0644/0755, symlinks as links).

    Returns rel -> (sha256, size) for the regular files, hashed as they were written.
    Call only with entries that passed :func:`check_layout`. Raises :class:`BundleError`
    (or :class:`UnsafePath` for a symlink target leaving the tree).
    """
    digests: dict[str, tuple[str, int]] = {}
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_git_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    ok = False
    try:
        for e in entries:
            proc.stdin.write(e.oid.encode("ascii") + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob" or not header[2].isdigit():
                raise BundleError(f"git has no blob for committed path {e.rel!r}")
            size = int(header[2])
            out = os.path.join(dest, e.rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if e.mode == GIT_SYMLINK:
                if size > MAX_SYMLINK_TARGET:
                    raise UnsafePath(f"symlink {e.rel!r} has an over-long target", path=e.rel)
                raw = _read_exact(proc.stdout, size)
                target = raw.decode("utf-8", "surrogateescape")
                if not symlink_target_ok(e.rel, target):
                    raise UnsafePath(
                        f"symlink {e.rel!r} -> {target!r} points outside the tree",
                        path=e.rel,
                        target=target,
                    )
                os.symlink(target, out)
            else:
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC)
                with os.fdopen(fd, "wb") as f:
                    h = hashlib.sha256()
                    left = size
                    while left:
                        chunk = proc.stdout.read(min(CHUNK, left))
                        if not chunk:
                            raise BundleError("git cat-file ended early")
                        h.update(chunk)
                        f.write(chunk)
                        left -= len(chunk)
                    os.fchmod(fd, GIT_FILE_MODES[e.mode])
                digests[e.rel] = (h.hexdigest(), size)
            if proc.stdout.read(1) != b"\n":
                raise BundleError("git cat-file answered out of step")
        ok = True
    except OSError as e:
        raise BundleError(f"cannot extract commit into {dest}: {e.strerror}") from e
    finally:
        with contextlib.suppress(OSError):  # git may be gone already
            proc.stdin.close()
        if not ok:
            proc.kill()
        proc.wait(timeout=GIT_TIMEOUT)
        proc.stdout.close()
    if proc.returncode != 0:
        raise BundleError(f"git cat-file failed in {repo} (exit {proc.returncode})")
    return digests


def read_blob(repo: Path, oid: str, what: str) -> bytes:
    """The content of one blob (for small files such as ``.ashatignore``)."""
    r = _git(repo, "cat-file", "blob", oid)
    if r.returncode != 0:
        raise _git_fail(repo, f"cannot read {what}", r)
    return r.stdout
