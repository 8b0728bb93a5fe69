"""``deploy init`` on a copy of examples/hello-service without its ashat.toml."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ashat.cli.deploy import cli
from ashat.config import Config
from ashat.errors import InvalidInput
from ashat.notify.config import parse_targets
from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello-service"
RUN = "python3 serve.py --port {port}"


def deploy(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="deploy", input=input)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hello"
    shutil.copytree(HELLO, root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (root / "ashat.toml").unlink()
    monkeypatch.chdir(root)
    monkeypatch.delenv("ASHAT_SIGNING_KEY", raising=False)
    return root


def test_init_yes_writes_a_file_the_project_loads(tree: Path) -> None:
    res = deploy("init", "--yes", "--run", RUN, "--health-path", "/healthz")
    assert res.exit_code == 0, res.output
    config = Config.load(tree)
    assert config.app.name == "hello"
    assert config.app.run == RUN
    assert config.app.health_path == "/healthz"
    assert config.app.modules == ("hello_service",)
    assert config.signing_key_path() == tree / ".ashat/keys/alpha.key"
    ApprovalPolicy.parse(config.table("approval"))
    assert DistributionPolicy.parse(config.table("distribution")) == DistributionPolicy()
    assert parse_targets(config.tables.get("notify")) == []
    key = tree / ".ashat/keys/alpha.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tree / ".ashat/keys/alpha.pub").is_file()
    assert ".ashat/" in (tree / ".gitignore").read_text().splitlines()
    assert "signing key .ashat/keys/alpha.key" in res.output
    # the comments say what each key does, and show the defaults
    text = (tree / "ashat.toml").read_text()
    assert "# waves = [10, 50, 100]" in text
    assert "# required = 1" in text


def test_init_refuses_to_overwrite_without_force_and_keeps_the_key(tree: Path) -> None:
    assert deploy("init", "--yes").exit_code == 0
    (tree / "ashat.toml").write_text("[app]\nname = 'mine'\n")
    key_before = (tree / ".ashat/keys/alpha.key").read_bytes()
    res = deploy("init", "--yes")
    assert res.exit_code == 2
    assert "already exists; use --force" in res.output
    assert (tree / "ashat.toml").read_text() == "[app]\nname = 'mine'\n"
    res = deploy("init", "--yes", "--force", "--name", "other")
    assert res.exit_code == 0, res.output
    assert "already there, kept" in res.output
    assert Config.load(tree).app.name == "other"
    assert (tree / ".ashat/keys/alpha.key").read_bytes() == key_before
    assert (tree / ".gitignore").read_text().count(".ashat/") == 1


def test_init_with_a_bad_run_command_writes_nothing(tree: Path) -> None:
    res = deploy("init", "--yes", "--run", "python3 serve.py")
    assert res.exit_code == 2
    assert "must contain {port}" in res.output
    assert not (tree / "ashat.toml").exists()
    assert not (tree / ".ashat").exists()
    assert not (tree / ".gitignore").exists()


def test_init_quotes_values_that_would_break_toml(tree: Path) -> None:
    run = 'python3 serve.py --greeting "say \\"hi\\" \\ there" --port {port}'
    res = deploy("init", "--yes", "--run", run)
    assert res.exit_code == 0, res.output
    assert Config.load(tree).app.run == run


def test_init_refuses_an_app_name_a_host_agent_would_refuse(tree: Path) -> None:
    """A review: ``--name "My App"`` was written, and no ``--apps`` agent could ever serve
    the project ([app] name is the name a host agent's app goes by)."""
    res = deploy("init", "--yes", "--name", "My App")
    assert res.exit_code == 2
    assert "app name 'My App': lower-case letters, digits" in res.output
    assert not (tree / "ashat.toml").exists() and not (tree / ".ashat").exists()


def test_init_makes_an_app_name_of_the_directorys_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "My Shop (v2)"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.delenv("ASHAT_SIGNING_KEY", raising=False)
    res = deploy("init", "--yes")
    assert res.exit_code == 0, res.output
    assert Config.load(root).app.name == "my-shop-v2"


def test_init_asks_again_for_a_name_it_refuses(tree: Path) -> None:
    res = deploy("init", input="My Shop\nshop\n\n/healthz\n")
    assert res.exit_code == 0, res.output
    assert "app name 'My Shop'" in res.output
    assert Config.load(tree).app.name == "shop"


def test_init_appends_to_an_existing_gitignore(tree: Path) -> None:
    (tree / ".gitignore").write_text("*.pyc")  # no final newline
    assert deploy("init", "--yes").exit_code == 0
    lines = (tree / ".gitignore").read_text().splitlines()
    assert lines[0] == "*.pyc" and lines[-1] == ".ashat/"


def test_init_leaves_a_gitignore_that_already_ignores_ashat(tree: Path) -> None:
    (tree / ".gitignore").write_text("/.ashat\n")
    res = deploy("init", "--yes", "--json")
    assert res.exit_code == 0, res.output
    assert '"gitignore_changed": false' in res.output
    assert (tree / ".gitignore").read_text() == "/.ashat\n"


def test_init_asks_without_yes(tree: Path) -> None:
    res = deploy("init", input="shop\n\n/healthz\n")
    assert res.exit_code == 0, res.output
    assert f"[{RUN}]" in res.output  # serve.py was found and offered
    config = Config.load(tree)
    assert (config.app.name, config.app.run, config.app.health_path) == ("shop", RUN, "/healthz")
    # A review: with ashat.toml there, it asked all three questions before refusing.
    again = deploy("init", input="shop\n\n/healthz\n")
    assert again.exit_code == 2 and "already exists; use --force" in again.output
    assert "Application name" not in again.output


@pytest.mark.parametrize(
    ("waves", "numbers", "gates"),
    [
        ([10, 50, 100], (10, 50, 100), ()),
        ([10, "pause", 100], (10, 100), (0,)),
        ([5, "pause", 30, "pause", 100], (5, 30, 100), (0, 1)),
    ],
)
def test_a_pause_between_waves_is_a_gate(
    waves: list[Any], numbers: tuple[int, ...], gates: tuple[int, ...]
) -> None:
    policy = DistributionPolicy.parse({"waves": waves})
    assert (policy.waves, policy.pause_after) == (numbers, gates)
    assert policy.to_json()["pause_after"] == list(gates)


@pytest.mark.parametrize(
    "waves", [["pause", 100], [10, "pause"], [10, "pause", "pause", 100], [10, "wait", 100]]
)
def test_a_misplaced_pause_is_refused(waves: list[Any]) -> None:
    with pytest.raises(InvalidInput, match='"pause" between two of them'):
        DistributionPolicy.parse({"waves": waves})
