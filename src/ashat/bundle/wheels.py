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


def requirement_lines(path: Path, target: Target) -> bytes:
    """What pip is given for ``[app] requirements``: a requirements file as it is; for a
    ``pyproject.toml``, its ``[project] dependencies``; for a PEP 751 ``pylock.toml``, each
    package for ``target`` (its marker) pinned with its hashes; for a ``uv.lock``, what
    ``uv export --locked`` makes of it (uv must be installed here; a lock that no longer
    matches its ``pyproject.toml`` is refused). Raises :class:`BundleError`."""
    try:
        content = path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read [app].requirements {path}: {e.strerror}") from e
    name = path.name
    if name == "uv.lock":
        return _uv_export(path)
    if name == "pyproject.toml" or re.fullmatch(r"pylock(\.[^.]+)?\.toml", name):
        import tomllib

        try:
            data = tomllib.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise BundleError(f"[app].requirements {name} is not valid TOML: {e}") from e
        lines = _pyproject(data) if name == "pyproject.toml" else _pylock(data, target)
        return ("".join(f"{line}\n" for line in lines)).encode("utf-8")
    return content


def _pyproject(data: dict[str, object]) -> list[str]:
    project = data.get("project")
    deps = project.get("dependencies") if isinstance(project, dict) else None
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BundleError(
            "[app].requirements names pyproject.toml, which has no [project] dependencies list"
        )
    return [str(d) for d in deps]


_SYSTEMS = (  # a wheel platform tag's start -> the markers of that system
    (("manylinux", "musllinux", "linux"), ("linux", "Linux", "posix")),
    (("macosx",), ("darwin", "Darwin", "posix")),
    (("win",), ("win32", "Windows", "nt")),
)
_MACHINES = ("x86_64", "aarch64", "arm64", "i686", "ppc64le", "s390x", "armv7l", "amd64")


def marker_environment(target: Target) -> dict[str, str]:
    """The PEP 508 environment markers are evaluated in: this Python, or ``target``'s."""
    from packaging.markers import default_environment

    env = {k: str(v) for k, v in default_environment().items()}
    if target.python_version:
        env["python_version"] = target.python_version
        env["python_full_version"] = f"{target.python_version}.0"
    platform = target.platform or ""
    for starts, (sys_platform, system, os_name) in _SYSTEMS if platform else ():
        if platform.startswith(starts):
            env.update(sys_platform=sys_platform, platform_system=system, os_name=os_name)
    for machine in _MACHINES if platform else ():
        if platform.endswith(machine):
            env["platform_machine"] = "AMD64" if machine == "amd64" else machine
    return env


def _pylock(data: dict[str, object], target: Target) -> list[str]:
    """PEP 751: ``name==version --hash=…`` for each package whose marker holds for
    ``target``; a package with no version (a directory or VCS source) is refused."""
    from packaging.markers import InvalidMarker, Marker

    packages = data.get("packages")
    if not isinstance(packages, list):
        raise BundleError("[app].requirements names a pylock.toml with no [[packages]]")
    env = marker_environment(target)
    lines = []
    for p in packages:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BundleError("a [[packages]] entry of the pylock.toml has no name")
        name = p["name"]
        marker = p.get("marker")
        try:
            if isinstance(marker, str) and not Marker(marker).evaluate(env):
                continue
        except InvalidMarker as e:
            raise BundleError(f"pylock.toml: package {name}: marker {marker!r}: {e}") from e
        version = p.get("version")
        other = next((k for k in ("vcs", "archive", "directory") if p.get(k)), None)
        if other is not None:
            raise BundleError(
                f"pylock.toml: package {name} comes from a {other}, not an index: only "
                "packages from an index, pinned by their hashes, can ship"
            )
        if not isinstance(version, str):
            raise BundleError(
                f"pylock.toml: package {name} has no version (a directory or VCS source): "
                "only packages from an index can ship"
            )
        files = [*(p.get("wheels") or []), *([p["sdist"]] if p.get("sdist") else [])]
        hashes = sorted(
            {
                f["hashes"]["sha256"]
                for f in files
                if isinstance(f, dict) and isinstance((f.get("hashes") or {}).get("sha256"), str)
            }
        )
        if not hashes:
            raise BundleError(
                f"pylock.toml: package {name} lists no sha256 hash: the lock must pin bytes"
            )
        pin = f"{name}=={version}"
        lines.append(" ".join([pin, *(f"--hash=sha256:{h}" for h in hashes)]))
    return lines


def _uv_export(path: Path) -> bytes:
    """``uv export`` of the project's ``uv.lock``: its pins and hashes, the project itself
    and dev groups left out; a lock out of step with ``pyproject.toml`` is refused
    (``--locked``) rather than shipped stale."""
    uv = shutil.which("uv")
    if uv is None:
        raise BundleError(
            "[app].requirements names uv.lock, which needs uv on this machine (pip install "
            "uv), or name a file made by `uv export --no-dev -o requirements.txt`"
        )
    argv = [uv, "export", "--locked", "--no-dev", "--no-emit-project", "--no-header"]
    argv += ["--format", "requirements-txt", "--quiet"]
    try:
        proc = subprocess.run(
            argv, cwd=path.parent, capture_output=True, timeout=120, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BundleError(f"cannot run uv export for {path.name}: {e}") from e
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BundleError(
            f"uv export of {path.name} failed (exit status {proc.returncode}; is the lock "
            "up to date? uv lock): " + (" ".join(s.strip() for s in said[-2:]) or "no output")
        )
    return proc.stdout


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
    content = requirement_lines(requirements, target)
    key = _cache_key(content, target)
    done = cache / key
    if (done / LOCK_NAME).is_file():
        return _house(done, True, started)
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".{key}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    given = requirements
    if content != _read(requirements):  # derived from a lock or pyproject: pip reads a copy
        given = cache / f".{key}.{os.getpid()}.txt"
        given.write_bytes(content)
    try:
        argv = pip_argv(given, work, target)
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
        if given != requirements:
            given.unlink(missing_ok=True)
    return _house(done, False, started)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read [app].requirements {path}: {e.strerror}") from e


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
