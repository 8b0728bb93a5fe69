"""docs/guide.md documents every verb and every option the two commands have."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from ashat.cli.ashat import cli as ashat_cli
from ashat.cli.deploy import cli as deploy_cli

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "guide.md").read_text(encoding="utf-8")


def commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            found += commands(cmd, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", cmd))
    return found


ALL = commands(deploy_cli, "deploy") + commands(ashat_cli, "ashat")


def section(path: str) -> str:
    """The guide's text under the #### heading that names ``path``, up to the next heading."""
    heading = re.compile(rf"^#### .*`{re.escape(path)}[ `]", re.M)
    m = heading.search(GUIDE)
    assert m, f"docs/guide.md has no '#### `{path} ...`' heading"
    end = re.compile(r"^#{2,4} ", re.M).search(GUIDE, m.end())
    return GUIDE[m.start() : end.start() if end else len(GUIDE)]


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=[p for p, _ in ALL])
def test_every_command_and_option_is_documented(path: str, cmd: click.Command) -> None:
    text = section(path)
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name not in ("as_json", "help"):
            longest = max(param.opts, key=len)
            assert longest in text, f"{path}: {longest} is not documented in its section"


@pytest.mark.parametrize("group", [deploy_cli, ashat_cli], ids=["deploy", "ashat"])
def test_the_commands_own_options_are_documented(group: click.Group) -> None:
    for param in group.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert max(param.opts, key=len) in GUIDE, param.opts


def test_every_deploy_verb_says_its_exit_codes_or_has_the_common_ones() -> None:
    assert "**Exit codes**, the same for every verb" in GUIDE
    for code in "01234":
        assert f"\n| {code} |" in GUIDE


def code_messages() -> str:
    """Every string literal of src/ashat, f-string placeholders as NUL (no fragment of a
    message in the guide may span one), one per line."""
    import ast

    texts = []
    for path in (Path(__file__).resolve().parents[2] / "src" / "ashat").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                texts.append(
                    "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    return "\n".join(texts)


def test_troubleshooting_quotes_real_messages() -> None:
    part = GUIDE[GUIDE.index("## Troubleshooting") :]
    quoted = re.findall(r"\*\*`([^`]+)`\*\*", part)
    assert len(quoted) >= 15
    code = code_messages()
    for message in quoted:
        for fragment in re.split(r"…|PUBLIC|OMEGA|\bN\b|'", message):
            fragment = fragment.strip(' .;:()[]"')
            if len(fragment) >= 8:
                assert fragment in code, f"not a message of the code: {fragment!r} ({message})"
