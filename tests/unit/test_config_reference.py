"""The configuration reference cannot fall behind the code: every key a parser reads is in
:mod:`ashat.config_reference`, and docs/guide.md holds exactly what it renders."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from ashat import config_reference
from ashat.bake import Query
from ashat.config import AppConfig
from ashat.notify.config import EMAIL_KEYS, SMS_KEYS, Target
from ashat.notify.config import KEYS as NOTIFY_KEYS
from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "ashat"


def documented(table: str) -> set[str]:
    return {k.name for k in config_reference.all_keys() if k.table == table}


def fields(cls: type, *skip: str) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - set(skip)


def test_the_dataclass_models_are_documented() -> None:
    assert fields(AppConfig, "raw") == documented("app")
    assert fields(ApprovalPolicy) == documented("approval")
    # pause_after is written inside waves ("pause" between two); bake is BakePolicy's keys
    assert fields(DistributionPolicy, "pause_after", "bake") | {
        "bake_s",
        "prometheus",
    } == documented("distribution")
    assert fields(Query) == documented("distribution.analysis")
    # mail, sms: their own keys; tracker: [[tasks.update]]
    assert fields(Target, "index", "mail", "sms", "tracker") <= documented("notify")
    assert documented("notify") == NOTIFY_KEYS | EMAIL_KEYS | SMS_KEYS


# The names the checks read their tables through (ctx.settings("x") is [verify.x]).
CONFIG_NAMES = {"cfg", "entry", "verify_cfg", "ctx_verify", "table"}


def _keys_read(path: Path) -> set[str]:
    """String keys read from a config table: NAME.get("k"), NAME["k"], "k" in NAME, and the
    helper(NAME, "k", ...), and the string tuples a comprehension filters by "k in NAME"."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target: ast.expr | None = None
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and node.args:
                target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Call) and len(node.args) >= 2:  # helper(cfg, "key", ...)
            target, key = node.args[0], node.args[1]
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In):
            target, key = node.comparators[0], node.left
        elif isinstance(node, ast.comprehension) and isinstance(node.iter, ast.Tuple):
            conds = [c for c in node.ifs if isinstance(c, ast.Compare)]
            if any(ast.unparse(c.comparators[0]) in CONFIG_NAMES for c in conds):
                found |= {
                    e.value
                    for e in node.iter.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
        if target is None or not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        name = ast.unparse(target)
        if name in CONFIG_NAMES or name == "ctx.verify":
            found.add(key.value)
    return found


def test_every_verify_key_the_checks_read_is_documented() -> None:
    read: set[str] = set()
    for module in ("api", "security", "performance", "agent_side", "runner"):
        read |= _keys_read(SRC / "verify" / f"{module}.py")
    read |= _keys_read(SRC / "ops" / "verify.py")
    verify_keys = {k.name for k in config_reference.all_keys() if k.table.startswith("verify")}
    tables = {t.name.split(".", 1)[1] for t in config_reference.all_tables() if "." in t.name}
    undocumented = read - verify_keys - tables
    assert not undocumented, f"keys read but not in ashat.config_reference: {undocumented}"
    # the scan does find what it should
    assert {
        "expect_keys",
        "max_p95_ms",
        "min_cert_days",
        "app_url",
        "expect_schema_version",
    } <= read


def test_every_table_the_checks_read_is_documented() -> None:
    from ashat.verify.registry import builtin_checks

    tables = {t.name for t in config_reference.all_tables()}
    for check in builtin_checks():
        assert f"verify.{check.name}" in tables or check.name in ("health", "modules"), check


def test_the_guide_holds_the_generated_reference() -> None:
    text = (REPO / "docs" / "guide.md").read_text()
    section = config_reference.generated_section(text)
    assert section is not None, "docs/guide.md lacks the generated configuration reference"
    assert section == config_reference.render_markdown(), (
        "docs/guide.md is out of date: regenerate with python -m ashat.config_reference"
    )
    for key in config_reference.all_keys():
        assert f"| `{key.name}` |" in section


def test_the_check_mode_of_the_generator(tmp_path: Path) -> None:
    good = tmp_path / "good.md"
    good.write_text("# x\n" + config_reference.render_markdown() + "after\n")
    assert config_reference.main(["--check", str(good)]) == 0
    bad = tmp_path / "bad.md"
    bad.write_text(good.read_text().replace("| `waves` |", "| `wavez` |"))
    assert config_reference.main(["--check", str(bad)]) == 1
