"""``deploy init``: start a project in the current tree.

Writes a commented ``ashat.toml`` (its comments and defaults rendered from
:mod:`ashat.config_reference`, so they say what the code does), makes ALPHA's signing key
``.ashat/keys/alpha.key`` unless it exists, and adds ``.ashat/`` to ``.gitignore``. The
file is checked with the project's own parsers before anything is written; an existing
``ashat.toml`` is only replaced with ``force``.
"""

from __future__ import annotations

import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.errors import InvalidInput
from ashat.ids import app_name_from, validate_app_name
from ashat.project import CONFIG_NAME, STATE_DIR, write_private

KEY_NAME = "alpha"
KEY_DIR = f"{STATE_DIR}/keys"
IGNORE_LINE = f"{STATE_DIR}/"
# Tables written uncommented (possibly empty); the others are shown commented out.
OPEN_TABLES = ("app", "signing", "verify", "approval", "distribution")
RUN_GUESSES = ("serve.py", "app.py", "main.py")


@dataclass(frozen=True)
class InitPlan:
    """What ``deploy init`` will write; :func:`plan_init` fills the blanks from the tree."""

    name: str
    run: str | None
    health_path: str
    modules: tuple[str, ...]


@dataclass(frozen=True)
class InitResult:
    config: Path
    replaced: bool  # an existing ashat.toml was overwritten (--force)
    key: Path
    public_key: Path
    key_created: bool
    gitignore: Path
    gitignore_changed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "replaced": self.replaced,
            "signing_key": str(self.key),
            "public_key": str(self.public_key),
            "key_created": self.key_created,
            "gitignore": str(self.gitignore),
            "gitignore_changed": self.gitignore_changed,
        }


def guess_modules(root: Path) -> tuple[str, ...]:
    """Top-level packages of the tree (directories with ``__init__.py``), tests excluded."""
    found = [
        d.name
        for d in sorted(root.iterdir())
        if d.is_dir()
        and (d / "__init__.py").is_file()
        and d.name.isidentifier()
        and not d.name.startswith(("test", "."))
    ]
    return tuple(found)


def guess_run(root: Path) -> str | None:
    """A plausible ``[app] run`` for a tree with a script at its top, else None."""
    for script in RUN_GUESSES:
        if (root / script).is_file():
            return f"python3 {script} --port {{port}}"
    return None


def plan_init(
    root: Path, name: str | None = None, run: str | None = None, health_path: str | None = None
) -> InitPlan:
    """Fill what was not given: the directory's name (as an app name), no run command,
    ``/``, its packages. A ``name`` that cannot be an app name is :class:`InvalidInput`."""
    return InitPlan(
        name=validate_app_name(name) if name else app_name_from(root.resolve().name),
        run=run or None,
        health_path=health_path or "/",
        modules=guess_modules(root),
    )


def _comment(text: str, indent: str = "") -> list[str]:
    plain = text.replace("`", "")
    return [
        f"{indent}# {line}"
        for line in textwrap.wrap(plain, 88 - len(indent), break_on_hyphens=False)
    ]


def _value(value: Any) -> str:
    from ashat.config_reference import toml_value

    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return toml_value(value)


def render_config(plan: InitPlan) -> str:
    """The commented ``ashat.toml`` for ``plan``."""
    from ashat.config_reference import all_keys, all_tables, heading

    given: dict[tuple[str, str], Any] = {
        ("app", "name"): plan.name,
        ("app", "health_path"): plan.health_path,
        ("app", "modules"): list(plan.modules),
        ("signing", "key"): f"{KEY_DIR}/{KEY_NAME}.key",
    }
    if plan.run:
        given["app", "run"] = plan.run
    out = [
        "# ashat.toml, written by `deploy init`. The reference of every key is in",
        '# docs/guide.md ("Configuration reference"). A commented "# key = value" line',
        "# shows the default; remove the '#' to change it. [app] travels in every bundle,",
        "# so write no secret here (use the *_env keys and the agent's --app-env file).",
    ]
    keys = all_keys()
    for table in all_tables():
        if table.name == "verify.CHECK":
            continue
        is_open = table.name in OPEN_TABLES
        prefix = "" if is_open else "# "
        out += ["", *_comment(table.doc), f"{prefix}{heading(table)}"]
        for k in keys:
            if k.table != table.name:
                continue
            out += _comment(k.doc)
            if (table.name, k.name) in given:
                out.append(f"{k.name} = {_value(given[table.name, k.name])}")
            elif k.default and not k.default.startswith("`"):
                out.append(f"# {k.name} = {k.default}")
            else:
                out.append(f"# {k.name} = <{k.type}>")
    return "\n".join(out) + "\n"


def check_config_text(text: str) -> None:
    """Parse ``text`` as the project does; raise :class:`InvalidInput` when it is refused."""
    from ashat.config import AppConfig
    from ashat.notify.config import parse_targets
    from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy

    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a value given on the command line broke it
        raise InvalidInput(f"the ashat.toml to write would not be valid TOML: {e}") from e
    AppConfig.parse(tables.get("app"))
    ApprovalPolicy.parse(tables.get("approval") or {})
    DistributionPolicy.parse(tables.get("distribution") or {})
    parse_targets(tables.get("notify"))
    from ashat.notify.trackers import parse_updates

    parse_updates((tables.get("tasks") or {}).get("update"))


def _ignored(lines: list[str]) -> bool:
    wanted = {STATE_DIR, IGNORE_LINE, f"/{STATE_DIR}", f"/{IGNORE_LINE}"}
    return any(line.strip() in wanted for line in lines)


def ensure_gitignore(root: Path) -> tuple[Path, bool]:
    """Add ``.ashat/`` to ``root/.gitignore`` unless it is there; (path, whether changed)."""
    path = root / ".gitignore"
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {path}: {e}") from e
    if _ignored(old.splitlines()):
        return path, False
    sep = "" if not old or old.endswith("\n") else "\n"
    text = f"{old}{sep}# ashat's local state: control store, keys, secrets\n{IGNORE_LINE}\n"
    write_private(path, text.encode("utf-8"), mode=0o644)
    return path, True


def init_project(root: Path, plan: InitPlan, *, force: bool = False) -> InitResult:
    """Write ``ashat.toml``, the signing key (unless there is one) and ``.gitignore``.

    Raises InvalidInput (exit 2) when ``ashat.toml`` exists and not ``force``, when the
    values given make a file the project would refuse, or when a file cannot be written;
    nothing is written then.
    """
    from ashat.bundle.keys import generate_keypair

    config = root / CONFIG_NAME
    existed = config.exists()
    if existed and not force:
        raise InvalidInput(f"{config} already exists; use --force to replace it")
    text = render_config(plan)
    check_config_text(text)

    key_dir = root / KEY_DIR
    key, pub = key_dir / f"{KEY_NAME}.key", key_dir / f"{KEY_NAME}.pub"
    key_created = False
    if not key.exists():
        key, pub = generate_keypair(KEY_NAME, key_dir)
        key_created = True
    try:
        write_private(config, text.encode("utf-8"), mode=0o644)
    except OSError as e:
        raise InvalidInput(f"cannot write {config}: {e.strerror}") from e
    gitignore, changed = ensure_gitignore(root)
    return InitResult(config, existed, key, pub, key_created, gitignore, changed)
