"""``ashat.toml``, read once and checked: wrong types are refused with the key that is wrong.

Only the tables the verbs use are typed here; unknown keys are kept (a later issue or a
plug-in may read them) but never guessed at.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.errors import InvalidInput
from ashat.project import CONFIG_NAME

SIGNING_KEY_ENV = "ASHAT_SIGNING_KEY"


def _json_safe(value: Any) -> Any:
    """TOML values as JSON values (dates become ISO strings) for the manifest's ``app``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    return value


def _want(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise InvalidInput(f"{where}.{key} must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise InvalidInput(
            f"{where}.{key} must be {_kind_name(kind)}, not {type(value).__name__}: {value!r}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names |= {list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _python(value: str | None) -> str | None:
    """``[app] python``: a command name or a path (relative: inside the release)."""
    if value is not None and (not value.strip() or len(value) > 300 or "\n" in value):
        raise InvalidInput("[app].python must name an interpreter, e.g. '.venv/bin/python'")
    return value.strip() if value is not None else None


PLATFORM_RE = re.compile(r"[a-z0-9_.]{1,100}")  # a wheel platform tag
PYTHON_VERSION_RE = re.compile(r"3(\.\d{1,2})?")


def _requirements(value: str | None) -> str | None:
    """``[app] requirements``: a path relative to the project's root, inside it."""
    if value is None:
        return None
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(
            f"[app].requirements must be a path inside the project, e.g. "
            f"'requirements.txt', not {value!r}"
        )
    return value


def _target_word(table: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    value = _want(table, key, str, "[app]")
    if value is None:
        return None
    if not pattern.fullmatch(value):
        example = "manylinux2014_x86_64" if key == "platform" else "3.11"
        raise InvalidInput(f"[app].{key} must look like {example!r}, not {value!r}")
    if table.get("requirements") is None:
        raise InvalidInput(f"[app].{key} is the target of [app].requirements, which is not set")
    return value


@dataclass(frozen=True)
class AppConfig:
    """The ``[app]`` table: how the agent runs and health-checks the release."""

    name: str | None = None
    run: str | None = None
    health_path: str = "/"
    modules: tuple[str, ...] = ()
    prepare: str | None = None
    migrate: str | None = None
    rollback_migrate: str | None = None
    health_timeout_s: float = 30.0
    python: str | None = None  # the app's interpreter (the Module Load Test imports with it)
    requirements: str | None = None  # a pip requirements file: its wheels ship in the bundle
    platform: str | None = None  # the wheels' target platform, when not ALPHA's own
    python_version: str | None = None  # and the target's Python, e.g. "3.11"
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, table: Any) -> AppConfig:
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise InvalidInput("[app] in ashat.toml must be a table")
        w = "[app]"
        run = _want(table, "run", str, w)
        if run is not None and "{port}" not in run:
            raise InvalidInput("[app].run must contain {port}: the agent chooses the port")
        health_path = _want(table, "health_path", str, w) or "/"
        if not health_path.startswith("/"):
            raise InvalidInput(f"[app].health_path must start with '/', not {health_path!r}")
        modules = _want(table, "modules", list, w) or []
        if not all(isinstance(m, str) and m for m in modules):
            raise InvalidInput("[app].modules must be a list of module names (strings)")
        timeout = _want(table, "health_timeout_s", (int, float), w)
        if timeout is not None and not 0 < timeout <= 3600:
            raise InvalidInput(f"[app].health_timeout_s must be in (0, 3600], not {timeout}")
        return cls(
            name=_want(table, "name", str, w),
            run=run,
            health_path=health_path,
            modules=tuple(modules),
            prepare=_want(table, "prepare", str, w),
            migrate=_want(table, "migrate", str, w),
            rollback_migrate=_want(table, "rollback_migrate", str, w),
            python=_python(_want(table, "python", str, w)),
            requirements=_requirements(_want(table, "requirements", str, w)),
            platform=_target_word(table, "platform", PLATFORM_RE),
            python_version=_target_word(table, "python_version", PYTHON_VERSION_RE),
            health_timeout_s=float(timeout) if timeout is not None else 30.0,
            raw=_json_safe(table),
        )


@dataclass(frozen=True)
class Config:
    """A project's ``ashat.toml``; :meth:`load` refuses malformed files with exit code 2."""

    root: Path
    app: AppConfig
    signing_key: Path | None
    tables: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Config:
        path = root / CONFIG_NAME
        tables: dict[str, Any] = {}
        if path.is_file():
            try:
                tables = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as e:
                raise InvalidInput(f"{path} is not valid TOML: {e}") from e
            except RecursionError as e:  # tomllib recurses into nested arrays and tables
                raise InvalidInput(f"{path} is nested too deeply to read") from e
            except (OSError, UnicodeDecodeError) as e:
                raise InvalidInput(f"cannot read {path}: {e}") from e
        signing = tables.get("signing") or {}
        if not isinstance(signing, dict):
            raise InvalidInput("[signing] in ashat.toml must be a table")
        key = _want(signing, "key", str, "[signing]")
        return cls(
            root=root,
            app=AppConfig.parse(tables.get("app")),
            signing_key=(root / key) if key else None,
            tables=tables,
        )

    def table(self, name: str) -> dict[str, Any]:
        """A top-level table (``{}`` when absent); raise when it is not a table."""
        value = self.tables.get(name) or {}
        if not isinstance(value, dict):
            raise InvalidInput(f"[{name}] in ashat.toml must be a table")
        return value

    def signing_key_path(self) -> Path:
        """``ASHAT_SIGNING_KEY``, else ``[signing] key``; raise with how to make one."""
        env = os.environ.get(SIGNING_KEY_ENV)
        if env:
            return Path(env).expanduser()
        if self.signing_key is not None:
            return self.signing_key
        raise InvalidInput(
            "no signing key: make one with 'ashat keys generate alpha --dir .ashat/keys', "
            'then set [signing] key = ".ashat/keys/alpha.key" in ashat.toml '
            f"(or {SIGNING_KEY_ENV}=path), and start the agents with --trust "
            ".ashat/keys/alpha.pub"
        )
