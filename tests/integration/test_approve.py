"""``deploy approve``: the approval policy through the CLI, on a deployment that really was
pushed to and verified on a PUBLIC agent, with a real OMEGA configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support import configure, deploy, deploy_json, enter_hello_project, verify_health_only

APPROVAL = """
[approval]
required = 2
approvers = ["bob", "carol", "alice"]
allow_self_approval = false
"""


@pytest.fixture
def verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any) -> Path:
    """hello-service pushed and verified as hello-001 by alice, needing two approvals."""
    public = agent_factory()
    omega = agent_factory(role="omega")
    root = enter_hello_project(tmp_path / "alpha", monkeypatch, public.key_path)
    toml = (root / "ashat.toml").read_text()
    start = toml.index("[approval]")
    end = toml.index("[distribution]")
    (root / "ashat.toml").write_text(toml[:start] + APPROVAL + "\n" + toml[end:])
    verify_health_only(root)
    configure("public", public)
    configure("omega", omega)
    assert deploy("push", "hello-001", "to approve").exit_code == 0
    assert deploy("verify", "hello-001", "--only", "health").exit_code == 0
    return root


def test_self_approval_is_refused_with_exit_3(verified: Path) -> None:
    res = deploy("approve", "hello-001")
    assert res.exit_code == 3 and "may not approve it too" in res.stderr
    res = deploy("approve", "hello-001", "--as", "Alice")  # names compare ignoring case
    assert res.exit_code == 3 and "may not approve it too" in res.stderr
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "verified"


def test_only_listed_approvers_count(verified: Path) -> None:
    res = deploy("approve", "hello-001", "--as", "mallory")
    assert res.exit_code == 3 and "not an approver" in res.stderr


def test_approving_twice_counts_once_and_waits_for_more(verified: Path) -> None:
    code, out = deploy_json("approve", "hello-001", "--as", "bob", "--comment", "ok")
    assert code == 0 and out["state"] == "verified" and len(out["approvals"]) == 1
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0 and "counted once" in res.stdout and "1 of 2" in res.stdout
    res = deploy("approve", "hello-001", "--as", "BOB")  # one person, whatever the case
    assert res.exit_code == 0 and "counted once" in res.stdout and "1 of 2" in res.stdout
    log = deploy("log", "hello-001").stdout
    assert log.count("approval.recorded") == 1


def test_unverified_deployment_cannot_be_approved(
    verified: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (verified / "VERSION").write_text("3.0.0\n")
    assert deploy("push", "hello-002", "not verified").exit_code == 0
    res = deploy("approve", "hello-002", "--as", "bob")
    assert res.exit_code == 3 and "pushed" in res.stderr
    assert deploy("approve", "no-such-id", "--as", "bob").exit_code == 2


def test_bad_approval_policy_is_refused_naming_the_key(verified: Path) -> None:
    toml = (verified / "ashat.toml").read_text()
    (verified / "ashat.toml").write_text(toml.replace("required = 2", "required = 0"))
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 2 and "[approval].required" in res.stderr
