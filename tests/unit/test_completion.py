"""Shell completion (Click's ``_DEPLOY_COMPLETE`` mechanism) and ``--version``, as a shell
runs them: a fresh ``deploy`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ashat import __version__
from ashat.ops.project import Project
from ashat.workflow.states import State


def run(module: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F _deploy_completion deploy"),
     ("zsh", "#compdef deploy"),
     ("fish", "complete --no-files --command deploy")],
)  # fmt: skip
def test_completion_scripts(shell: str, marker: str) -> None:
    script = run("ashat.cli.deploy", env={"_DEPLOY_COMPLETE": f"{shell}_source"})
    assert marker in script


def complete(words: str, cword: int, module: str = "ashat.cli.deploy") -> list[str]:
    var = "_DEPLOY_COMPLETE" if module.endswith("deploy") else "_ASHAT_COMPLETE"
    out = run(module, env={var: "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    return [line.split(",", 1)[1] for line in out.splitlines() if line]


def test_verbs_and_options_complete() -> None:
    assert complete("deploy pu", 1) == ["push"]
    assert "init" in complete("deploy ", 1)
    assert complete("deploy verify x --on", 3) == ["--only"]
    assert complete("ashat li", 1, "ashat.cli.ashat") == ["license"]
    assert complete("deploy history --state ver", 3) == [
        "verifying",
        "verified",
        "verification_failed",
    ]


def test_update_ids_complete_from_the_store(project: Path) -> None:
    assert complete("deploy verify ", 2) == []
    assert not (project / ".ashat").exists(), "a TAB must not create the store"
    p = Project.find()
    try:
        wf = p.workflow()
        wf.create("hello-001", "first")
        wf.move("hello-001", State.FAILED)  # a push that never finished frees PUBLIC's lease
        wf.create("hotfix-002", "second")
    finally:
        p.close()
    assert sorted(complete("deploy verify h", 2)) == ["hello-001", "hotfix-002"]
    assert complete("deploy rollback hot", 2) == ["hotfix-002"]
    assert complete("deploy status hello", 2) == ["hello-001"]


@pytest.mark.parametrize("module", ["ashat.cli.deploy", "ashat.cli.ashat"])
def test_version(module: str) -> None:
    name = module.rsplit(".", 1)[1]
    assert run(module, "--version").strip() == f"{name}, version {__version__}"
