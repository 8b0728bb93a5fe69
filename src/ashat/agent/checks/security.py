"""Security Scan, agent side: the release tree's secrets, world-writable paths, dependencies.

The tree is walked without following symlinks (a symlink is neither read nor judged by its
mode). Regular files up to 5 MB that are not binary are scanned for secrets
(:mod:`.secrets`); files and directories with the world-write bit are reported;
``requirements*.txt`` pins are checked against OSV records (:mod:`.osv`): the
agent's own snapshot (:mod:`.advisories`, ``ashat advisories update``) and a directory the
release ships (``advisories``, relative to it). A virtual environment built in the tree (a
directory holding ``pyvenv.cfg``) and ``__pycache__`` are not scanned: they are installed
packages and compiled bytes, not the project's code. ``allow`` globs — ``fnmatch`` on the
path relative to the release, or on any of its parent directories — drop secret and
world-writable findings.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.agent.checks.base import (
    Deadline,
    guarded,
    optional_str,
    release_root,
    result,
    str_list,
    timeout_of,
)
from ashat.agent.checks.osv import (
    MAX_ADVISORY_BYTES,
    Advisory,
    MalformedAdvisory,
    Pin,
    parse_advisories,
    parse_requirements,
    vulnerabilities,
)
from ashat.agent.checks.secrets import Finding, scan_text
from ashat.bundle.paths import under_glob

MAX_SCAN_BYTES = 5 * 1024 * 1024  # bytes; larger files are not scanned for secrets
BINARY_PROBE_BYTES = 8192  # a NUL in this prefix marks a file as binary
MAX_LISTED = 200  # findings of each kind listed in details (all are counted)
SECRETS_NAMED = 3  # secrets whose file and line the one-line summary names
REQUIREMENTS_GLOB = "requirements*.txt"
# What ``ashat advisories update`` (ashat.agent.advisories) writes beside a snapshot's
# records: no .json, so the records' glob passes over it.
SOURCE_FILE = "SOURCE"


class ScanError(Exception):
    """The scan cannot be done as asked (advisories unusable); answered as ``error``."""


@dataclass
class Tree:
    """What a walk of the release found."""

    files_scanned: int = 0
    skipped: dict[str, int] = field(
        default_factory=lambda: {"large": 0, "binary": 0, "unreadable": 0}
    )
    secrets: list[Finding] = field(default_factory=list)
    world_writable: list[dict[str, Any]] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)  # built, not scanned
    allowed: int = 0
    pins: list[Pin] = field(default_factory=list)
    requirements_files: list[str] = field(default_factory=list)
    finished: bool = True


def source_of(directory: Path) -> dict[str, Any] | None:
    """What ``SOURCE`` says of a snapshot (``source``, ``fetched_at``, ``records``), if any."""
    try:
        data = json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_advisories(directory: Path) -> list[Advisory]:
    """Every ``*.json`` OSV file of ``directory``; raises :class:`ScanError` naming a bad one."""
    if not directory.is_dir():
        raise ScanError(f"advisories directory {directory} does not exist")
    out: list[Advisory] = []
    for path in sorted(directory.glob("*.json")):
        try:
            if path.stat().st_size > MAX_ADVISORY_BYTES:
                raise MalformedAdvisory(f"larger than {MAX_ADVISORY_BYTES} bytes")
            data = json.loads(path.read_bytes())
            out += parse_advisories(data)
        except (OSError, ValueError) as e:  # JSONDecodeError and MalformedAdvisory included
            raise ScanError(f"malformed advisory file {path.name}: {e}") from e
    return out


def _read_text(path: Path, size: int, tree: Tree) -> str | None:
    if size > MAX_SCAN_BYTES:
        tree.skipped["large"] += 1
        return None
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SCAN_BYTES + 1)
    except OSError:
        tree.skipped["unreadable"] += 1
        return None
    if b"\x00" in data[:BINARY_PROBE_BYTES]:
        tree.skipped["binary"] += 1
        return None
    tree.files_scanned += 1
    return data.decode("utf-8", errors="replace")


def walk(root: Path, allow: list[str], deadline: Deadline) -> Tree:
    """Scan the tree under ``root``; stops early (``finished=False``) when time is up."""
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        built = [d for d in dirnames if _built(here / d)]
        if here == root and SHIPPED_DIR in dirnames:  # ashat's own: the shipped wheels
            built.append(SHIPPED_DIR)
            _read_lock(root, tree)
        tree.environments += [(here / d).relative_to(root).as_posix() for d in sorted(built)]
        dirnames[:] = sorted(d for d in dirnames if d not in built)
        for name in [*dirnames, *sorted(filenames)]:
            if deadline.expired():
                tree.finished = False
                return tree
            path = here / name
            rel = path.relative_to(root).as_posix()
            try:
                st = path.lstat()
            except OSError:
                tree.skipped["unreadable"] += 1
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)):
                continue  # symlinks, fifos, sockets, devices: never opened
            is_allowed = under_glob(rel, allow)
            if st.st_mode & stat.S_IWOTH:
                if is_allowed:
                    tree.allowed += 1
                else:
                    tree.world_writable.append(
                        {
                            "path": rel,
                            "type": "directory" if is_dir else "file",
                            "mode": oct(stat.S_IMODE(st.st_mode)),
                        }
                    )
            if is_dir:
                continue
            text = _read_text(path, st.st_size, tree)
            if text is None:
                continue
            if fnmatch.fnmatchcase(name, REQUIREMENTS_GLOB):
                tree.requirements_files.append(rel)
                tree.pins += parse_requirements(text, rel)
            findings = scan_text(text, rel)
            if is_allowed:
                tree.allowed += len(findings)
            else:
                tree.secrets += findings
    return tree


SHIPPED_DIR = ".ashat"  # a release's .ashat/wheels/ (ashat.bundle.wheels): not the app's code


def _read_lock(root: Path, tree: Tree) -> None:
    """The pins of the shipped wheels' lock: every dependency, resolved, for the advisories."""
    from ashat.bundle.wheels import LOCK_PATH

    path = root / LOCK_PATH
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        text = _read_text(path, st.st_size, tree)
        if text is not None:
            tree.requirements_files.append(LOCK_PATH)
            tree.pins += parse_requirements(text, LOCK_PATH)


def _built(path: Path) -> bool:
    """A directory of installed or compiled code: a virtual environment, ``__pycache__``."""
    if path.name == "__pycache__":
        return True
    try:
        return (path / "pyvenv.cfg").is_file() and not path.is_symlink()
    except OSError:
        return False


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summarize(tree: Tree, vulnerable: list[dict[str, Any]], advisories: int | None) -> str:
    """The one-line verdict: counts on failure, what was checked when clean."""
    if tree.secrets or tree.world_writable or vulnerable:
        secrets = _plural(len(tree.secrets), "secret", "secrets")
        if tree.secrets:  # where, never what: the file and line of the first few
            shown = [f"{s.path}:{s.line}" for s in tree.secrets[:SECRETS_NAMED]]
            more = len(tree.secrets) - len(shown)
            secrets += f" ({', '.join(shown)}{f' and {more} more' if more else ''})"
        line = ", ".join(
            [
                secrets,
                _plural(len(tree.world_writable), "world-writable file", "world-writable files"),
                _plural(len(vulnerable), "vulnerable dependency", "vulnerable dependencies"),
            ]
        )
        if vulnerable:
            named = dict.fromkeys(
                f"{v['name']} {v['version']}: {', '.join(a['id'] for a in v['advisories'])}"
                for v in vulnerable
            )
            line += f" ({'; '.join(named)})"
        return line
    deps = len({(p.name, p.version) for p in tree.pins})
    checked = (
        "no advisories configured"
        if advisories is None
        else f"{_plural(deps, 'dependency', 'dependencies')} checked against "
        f"{_plural(advisories, 'advisory', 'advisories')}"
    )
    return f"no secrets, no world-writable files, {checked}"


@guarded("security")
def check_security(
    release_dir: Path,
    body: dict[str, Any],
    env: Mapping[str, str],
    snapshot: Path | None = None,
) -> dict[str, Any]:
    """Scan the release tree for secrets, world-writable paths and vulnerable pins.

    Details: ``files_scanned``; ``skipped`` ({"large", "binary", "unreadable"}: counts);
    ``counts`` ({"secrets", "world_writable", "vulnerable"}); ``secrets`` ([{"path", "line",
    "kind", "match"}], match masked); ``world_writable`` ([{"path", "type", "mode"}]);
    ``allowed`` (findings dropped by ``allow``); ``requirements_files``; ``dependencies``
    ([{"name", "version", "file", "line"}]); ``advisories`` ({"path", "count"}, path None
    when not configured); ``vulnerable`` ([{"name", "version", "file", "line",
    "advisories": [{"id", "summary", "aliases", "fixed"}]}]). Lists hold at most 200 entries.
    """
    timeout_s = timeout_of(body)
    allow = str_list(body, "allow")
    advisories_dir = optional_str(body, "advisories")
    root = release_root(release_dir)
    deadline = Deadline(timeout_s)

    # The agent's own snapshot (ashat advisories update), and a directory the release
    # ships; never a path of the agent's machine named by the request.
    sources: list[Path] = []
    if snapshot is not None and snapshot.is_dir():
        sources.append(snapshot)
    if advisories_dir is not None:
        named = Path(advisories_dir)
        if named.is_absolute() or ".." in named.parts:
            return result(
                "error",
                f"advisories {advisories_dir!r} is not a directory of the release: the agent's "
                "own snapshot is its operator's (ashat advisories update; ashat agent "
                "--advisories DIR)",
                advisories={"path": advisories_dir},
            )
        inside = (root / named).resolve()
        if not inside.is_relative_to(root.resolve()):
            return result(
                "error",
                f"advisories {advisories_dir!r} leads out of the release (a symlink)",
                advisories={"path": advisories_dir},
            )
        sources.append(inside)
    advisories: list[Advisory] | None = None
    fetched_at: str | None = None
    for adv_path in sources:
        try:
            advisories = (advisories or []) + load_advisories(adv_path)
        except ScanError as e:
            return result("error", str(e), advisories={"path": str(adv_path)})
        if adv_path == snapshot:
            fetched_at = (source_of(adv_path) or {}).get("fetched_at")

    tree = walk(root, allow, deadline)
    vulnerable = vulnerabilities(tree.pins, advisories or [])
    details: dict[str, Any] = {
        "files_scanned": tree.files_scanned,
        "skipped": tree.skipped,
        "counts": {
            "secrets": len(tree.secrets),
            "world_writable": len(tree.world_writable),
            "vulnerable": len(vulnerable),
        },
        "secrets": [f.to_json() for f in tree.secrets[:MAX_LISTED]],
        "world_writable": tree.world_writable[:MAX_LISTED],
        "allowed": tree.allowed,
        "requirements_files": tree.requirements_files[:MAX_LISTED],
        "environments_skipped": tree.environments[:MAX_LISTED],
        "dependencies": [p.to_json() for p in tree.pins[:MAX_LISTED]],
        "advisories": {
            "path": str(sources[0]) if sources else None,
            "paths": [str(p) for p in sources],
            "count": len(advisories or []),
            "fetched_at": fetched_at,
        },
        "vulnerable": vulnerable[:MAX_LISTED],
    }
    if not tree.finished:
        return result(
            "error",
            f"the security scan did not finish within {timeout_s:g} s "
            f"({tree.files_scanned} files scanned)",
            **details,
        )
    summary = summarize(tree, vulnerable, None if advisories is None else len(advisories))
    if fetched_at:
        summary += f" (fetched {fetched_at[:10]})"
    if tree.environments:
        built = _plural(len(tree.environments), "built environment", "built environments")
        summary += f"; {built} not scanned"
    failed = tree.secrets or tree.world_writable or vulnerable
    return result("failed" if failed else "passed", summary, **details)
