"""The app's Python environment, built on each server from the wheels in its release.

A release whose manifest names ``app.environment`` carries its dependencies as wheels under
``.ashat/wheels/`` with a lock of their digests (:mod:`ashat.bundle.wheels`). Before its
``prepare`` hook, the agent builds a virtual environment from exactly those wheels: offline
(``--no-index``: no package index is asked, none need be reachable), hash-checked
(``--require-hashes``) and nothing else (``--no-deps``), into ``DIR/envs/<key>/``, where the
key is the lock's digest and the base interpreter. A later release with the same lock reuses
it: one build per server, however many releases share the lock. Installing wheels runs no
code of theirs.

The environment is the agent's: the app reads it and never writes it (bound read-only in
its sandbox, like its release). Its marker file is written last, so a crash while building
leaves a directory the next activation removes and builds again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.agent.errors import ActivationFailed
from ashat.bundle.errors import ManifestInvalid
from ashat.bundle.paths import validate_rel_path

COMPLETE = ".ashat-complete"  # written last: the environment is whole
SHA256_RE = re.compile(r"[0-9a-f]{64}")
PIP_QUIET_ENV = {
    "PIP_CONFIG_FILE": os.devnull,  # no index or find-links from a config file
    "PIP_NO_INPUT": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


@dataclass(frozen=True)
class EnvSpec:
    """``app.environment`` of a manifest: the lock in the release, and its digest."""

    lock: str
    sha256: str
    python: str | None  # the interpreter to build it with (``[app] python``), else ours

    @classmethod
    def from_app(cls, app: Mapping[str, Any]) -> EnvSpec | None:
        """Raises :class:`ManifestInvalid` naming the field at fault."""
        value = app.get("environment")
        if value is None:
            return None
        lock = value.get("lock") if isinstance(value, dict) else None
        sha = value.get("sha256") if isinstance(value, dict) else None
        if not isinstance(lock, str) or not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise ManifestInvalid(
                "app.environment must be {lock: path, sha256: digest}", field="app.environment"
            )
        validate_rel_path(lock)
        python = app.get("python")
        if python is not None and (
            not isinstance(python, str) or ("/" in python and not python.startswith("/"))
        ):
            raise ManifestInvalid(
                "app.python must be an absolute path or a command name when the release "
                "ships its dependencies (the environment is built with it)",
                field="app.python",
            )
        return cls(lock, sha, python)

    def base_python(self, path_env: str | None) -> str:
        """The interpreter's path; raises ``FileNotFoundError`` naming it."""
        if self.python is None:
            return sys.executable
        if "/" in self.python:
            if not os.access(self.python, os.X_OK):
                raise FileNotFoundError(f"the app's interpreter {self.python} does not exist")
            return self.python
        found = shutil.which(self.python, path=path_env or os.defpath)
        if found is None:
            raise FileNotFoundError(f"the app's interpreter {self.python!r} is not on its PATH")
        return found


# What a lock may say: ashat's own format (bundle/wheels.py lock_text), nothing pip would
# also take — no option line ("-r FILE" would make the agent's pip read any file of the host
# and quote it back in its error), no URL, no marker.
LOCK_LINE_RE = re.compile(r"[A-Za-z0-9_.]+==[A-Za-z0-9_.!+]+(?: --hash=sha256:[0-9a-f]{64})+")


def check_lock(text: str, lock: str) -> None:
    """Refuse a lock with a line that is not ``name==version --hash=sha256:…`` (or a
    comment). Raises :class:`ActivationFailed` naming the line."""
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#") and not LOCK_LINE_RE.fullmatch(line):
            raise ActivationFailed(
                f"the release's dependency lock {lock}, line {n}: not 'name==version "
                "--hash=sha256:…' (the lock ashat writes); nothing was switched",
                log_tail="",
            )


def check_base_python(base: str, data_dir: Path) -> str:
    """Refuse an interpreter the agent must not run (it builds the environment as itself,
    outside the app's sandbox): one in the agent's data directory (a release's file, the
    app's shared directory), or one that a user other than root or the agent could have
    written — the file or any directory above it owned by another user, or writable by
    group or others. Returns the file checked (links resolved: what is run). Raises
    :class:`ActivationFailed` naming why."""
    real = Path(os.path.realpath(base))
    if real.is_relative_to(data_dir.resolve()):
        raise ActivationFailed(
            f"the app's interpreter {base} is a file of the agent's data directory (a "
            "release's, or the app's shared directory); the environment is built only with "
            "an interpreter installed on this server; nothing was switched",
            log_tail="",
        )
    trusted = {0, os.geteuid()}
    for path in (real, *real.parents):
        try:
            st = os.stat(path)
        except OSError as e:
            raise ActivationFailed(
                f"the app's interpreter {base}: cannot check {path} ({e.strerror}); nothing "
                "was switched",
                log_tail="",
            ) from e
        sticky = path != real and st.st_mode & 0o1000 and st.st_uid == 0  # /tmp: entries stay
        if st.st_uid not in trusted or (st.st_mode & 0o022 and not sticky):
            raise ActivationFailed(
                f"the app's interpreter {base}: {path} could be written by another user "
                f"(owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o}); the environment is "
                "built only with an interpreter root or the agent owns; nothing was switched",
                log_tail="",
            )
    return str(real)


class Environments:
    """``DIR/envs/``: one virtual environment per lock (and base interpreter)."""

    def __init__(self, root: Path, data_dir: Path | None = None) -> None:
        self.root = root
        self.data_dir = data_dir if data_dir is not None else root.parent

    def path(self, spec: EnvSpec, base: str) -> Path:
        key = hashlib.sha256(f"{spec.sha256}\0{os.path.realpath(base)}".encode()).hexdigest()
        return self.root / key[:32]

    def ready(self, path: Path) -> bool:
        return (path / COMPLETE).is_file()

    def ensure(
        self, release_dir: Path, spec: EnvSpec, base: str, log: Path, timeout_s: float
    ) -> tuple[Path, bool]:
        """The environment for ``spec``, and whether it was there already. Output goes to
        ``log`` (the release's). Raises :class:`ActivationFailed` with what pip said."""
        env = self.path(spec, base)
        if self.ready(env):
            return env, True
        lock = release_dir / spec.lock
        try:
            data = lock.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
        except OSError as e:
            raise ActivationFailed(
                f"the release's dependency lock {spec.lock} cannot be read: {e.strerror}",
                log_tail="",
            ) from e
        if digest != spec.sha256:
            raise ActivationFailed(
                f"the release's dependency lock {spec.lock} is not the one its manifest names",
                log_tail="",
            )
        check_lock(data.decode("utf-8", "replace"), spec.lock)
        if base != sys.executable:
            base = check_base_python(base, self.data_dir)  # the file checked is the one run
        shutil.rmtree(env, ignore_errors=True)  # what a crash left half-built
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o711)  # the app's user may read an environment, not list
        python = env / "bin" / "python"
        steps = [
            ("make the environment", [base, "-m", "venv", "--without-pip", str(env)]),
            (
                "install the release's wheels",
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--no-index",
                    "--find-links",
                    str(lock.parent),
                    "--require-hashes",
                    "--no-deps",
                    "--only-binary=:all:",
                    "-r",
                    str(lock),
                ],
            ),
        ]
        deadline = time.monotonic() + timeout_s
        for what, argv in steps:
            _run(what, argv, log, deadline, timeout_s)
        _open_to_readers(env)
        (env / COMPLETE).write_text(spec.sha256 + "\n", encoding="utf-8")
        return env, False

    def prune(self, keep: set[Path]) -> list[str]:
        """Remove the environments no kept release uses; return their names."""
        gone = []
        with contextlib.suppress(FileNotFoundError):
            for child in self.root.iterdir():
                if child not in keep and child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                    gone.append(child.name)
        return gone


def _run(what: str, argv: list[str], log: Path, deadline: float, timeout_s: float) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- ashat: {what}: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**_without_pip_settings(os.environ), **PIP_QUIET_ENV},
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ActivationFailed(
                f"the app's environment: {what} did not finish within {timeout_s:g}s; "
                "nothing was switched",
                log_tail=_tail(log),
            ) from e
        except OSError as e:
            raise ActivationFailed(
                f"the app's environment: cannot {what}: {e}; nothing was switched",
                log_tail=_tail(log),
            ) from e
    if proc.returncode != 0:
        raise ActivationFailed(
            f"the app's environment: {what} failed with exit status {proc.returncode}; "
            "nothing was switched",
            log_tail=_tail(log),
        )


def _tail(log: Path, lines: int = 40) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 16384, 0))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _open_to_readers(env: Path) -> None:
    """Readable (not writable) by the app's user, whatever the agent's umask."""
    for dirpath, _dirs, filenames in os.walk(env):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & 0o755)


def _without_pip_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus ``PIP_*``: no index or find-links reaches the install."""
    return {k: v for k, v in env.items() if not k.startswith("PIP_")}
