"""Python dependencies as part of the release: wheels built once on ALPHA, shipped as blobs.

``[app] requirements = "requirements.txt"`` names a pip requirements file in the tree. At
push, pip builds a wheel of every requirement and dependency (``pip wheel``), or, for a
declared ``[app] platform`` and ``python_version``, downloads binary wheels for that target
(``pip download --only-binary=:all:``), into a cache, ``.ashat/wheels/<key>/``, keyed by the
file's content, the target and pip's ``PIP_*`` settings: an unchanged file costs nothing.

The wheels and a lock (``name==version --hash=sha256:…`` per wheel) join the bundle under
``.ashat/wheels/``, a name the pushed tree can never hold itself (``.ashat`` at the root is
always left out), so they travel as content-addressed blobs like any file: a release whose
lock did not change moves none of them. The manifest's ``app.environment`` names the lock
and its digest; every server builds the app's environment from those exact wheels, offline
and hash-checked (:mod:`ashat.agent.environments`), so what runs is what was verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ashat.bundle.build import Built, hash_file
from ashat.bundle.errors import BundleError
from ashat.bundle.manifest import FileEntry
from ashat.errors import OperationFailed

WHEELS_DIR = ".ashat/wheels"  # in the bundle (and so in every release tree)
LOCK_NAME = "requirements.lock"
LOCK_PATH = f"{WHEELS_DIR}/{LOCK_NAME}"
FORMAT = 1  # of the cache key and the lock: a change rebuilds every wheelhouse
PIP_TIMEOUT_S = 1800.0
LOG_LINES = 40
# name-version(-build)?-python-abi-platform.whl (PEP 427)
WHEEL_RE = re.compile(r"([A-Za-z0-9_.]+)-([A-Za-z0-9_.!+]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl")


@dataclass(frozen=True)
class Target:
    """Where the wheels will run: this machine's Python (both None), or another platform."""

    platform: str | None = None  # e.g. "manylinux2014_x86_64"
    python_version: str | None = None  # e.g. "3.11"

    def to_json(self) -> dict[str, str]:
        out = {"platform": self.platform, "python_version": self.python_version}
        return {k: v for k, v in out.items() if v}


DIGESTS_NAME = "digests.json"  # in the cache only: each file's digest and size, once


@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels and their lock; ``reused`` when the cache already held it."""

    path: Path
    digests: dict[str, tuple[str, int]]  # file name (wheels and the lock) -> sha256, size
    reused: bool
    seconds: float

    @property
    def wheels(self) -> tuple[str, ...]:
        return tuple(sorted(n for n in self.digests if n != LOCK_NAME))

    @property
    def lock_sha256(self) -> str:
        return self.digests[LOCK_NAME][0]


def _cache_key(requirements: bytes, target: Target) -> str:
    pip_env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    text = json.dumps(
        {"format": FORMAT, "target": target.to_json(), "pip": pip_env}, sort_keys=True
    )
    return hashlib.sha256(requirements + b"\0" + text.encode()).hexdigest()[:32]


def pip_argv(requirements: Path, out: Path, target: Target) -> list[str]:
    """The pip command that fills ``out`` with the wheels of ``requirements``."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    if target.platform or target.python_version:
        argv = [*pip, "download", "--only-binary=:all:", "--implementation", "cp"]
        if target.platform:
            argv += ["--platform", target.platform]
        if target.python_version:
            argv += ["--python-version", target.python_version]
        return [*argv, "--dest", str(out), "-r", str(requirements)]
    return [*pip, "wheel", "--wheel-dir", str(out), "-r", str(requirements)]


def lock_text(wheels: list[Path]) -> str:
    """One ``name==version --hash=sha256:…`` line per wheel: what ``pip install
    --require-hashes --no-deps`` installs, and nothing else."""
    lines = [f"# ashat lock format {FORMAT}: the wheels beside this file, by digest"]
    for w in sorted(wheels, key=lambda p: p.name):
        m = WHEEL_RE.fullmatch(w.name)
        if m is None:
            raise BundleError(f"pip produced {w.name!r}, which is not a wheel's file name")
        sha, _ = hash_file(str(w))
        lines.append(f"{m.group(1)}=={m.group(2)} --hash=sha256:{sha}")
    return "\n".join(lines) + "\n"


def build_wheelhouse(requirements: Path, cache: Path, target: Target) -> Wheelhouse:
    """The wheels of ``requirements`` for ``target``, from ``cache`` or built now.

    Raises :class:`BundleError` (the file cannot be read) or :class:`OperationFailed`
    (pip failed: its last lines say why; nothing is left in the cache).
    """
    started = time.perf_counter()
    try:
        content = requirements.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read [app].requirements {requirements}: {e.strerror}") from e
    key = _cache_key(content, target)
    done = cache / key
    if (done / LOCK_NAME).is_file():
        return _house(done, True, started)
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".{key}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        argv = pip_argv(requirements, work, target)
        try:
            proc = subprocess.run(
                argv,
                cwd=requirements.parent,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise OperationFailed(
                f"pip did not build the wheels of {requirements.name} within {PIP_TIMEOUT_S:g} s"
            ) from e
        except OSError as e:
            raise OperationFailed(f"cannot run pip ({sys.executable} -m pip): {e}") from e
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).decode("utf-8", "replace").splitlines()
            raise OperationFailed(
                f"pip could not get the wheels of {requirements.name} (exit status "
                f"{proc.returncode}); nothing was pushed",
                log_tail="\n".join(said[-LOG_LINES:]),
            )
        strays = [p.name for p in work.iterdir() if not p.name.endswith(".whl")]
        if strays:
            raise OperationFailed(
                f"pip left {', '.join(sorted(strays)[:5])} beside the wheels of "
                f"{requirements.name}: only wheels can be installed offline (is a "
                "requirement a source distribution with no wheel for the target?)"
            )
        (work / LOCK_NAME).write_text(lock_text(list(work.glob("*.whl"))), encoding="utf-8")
        digests = {p.name: hash_file(str(p)) for p in sorted(work.iterdir())}
        (work / DIGESTS_NAME).write_text(json.dumps(digests), encoding="utf-8")
        try:
            os.replace(work, done)
        except OSError:  # another push filled it meanwhile: theirs is as good
            if not (done / LOCK_NAME).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _house(done, False, started)


def _house(path: Path, reused: bool, started: float) -> Wheelhouse:
    """The cached wheelhouse at ``path``, its digests read rather than computed again (the
    bundle's own digests are checked by every server that receives the blobs)."""
    try:
        raw = json.loads((path / DIGESTS_NAME).read_text(encoding="utf-8"))
        digests = {str(n): (str(d[0]), int(d[1])) for n, d in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        digests = {p.name: hash_file(str(p)) for p in path.iterdir() if p.name != DIGESTS_NAME}
    return Wheelhouse(path, digests, reused, time.perf_counter() - started)


def add_wheels(built: Built, house: Wheelhouse) -> Built:
    """``built`` with the wheelhouse under ``.ashat/wheels/`` and ``app.environment``
    naming its lock."""
    entries = list(built.manifest.files)
    blobs = dict(built.blobs)
    for name in (*house.wheels, LOCK_NAME):
        path = house.path / name
        sha, size = house.digests[name]
        entries.append(FileEntry(f"{WHEELS_DIR}/{name}", sha, size, 0o644))
        blobs.setdefault(sha, path)
    app = {**built.manifest.app, "environment": {"lock": LOCK_PATH, "sha256": house.lock_sha256}}
    manifest = replace(built.manifest, files=tuple(entries), app=app)
    return replace(built, manifest=manifest, blobs=blobs)


def with_dependencies(
    built: Built, requirements: str, cache: Path, target: Target
) -> tuple[Built, Wheelhouse]:
    """Add the wheels of ``requirements`` (a path in the pushed tree) to ``built``."""
    listed = {f.path: f for f in built.manifest.files}
    entry = listed.get(requirements)
    if entry is None or entry.kind != "file":
        raise BundleError(
            f"[app].requirements names {requirements!r}, which is not a file in the tree "
            "being pushed"
        )
    house = build_wheelhouse(built.tree / requirements, cache, target)
    return add_wheels(built, house), house
