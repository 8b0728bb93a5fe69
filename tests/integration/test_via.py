"""``deploy --via URL``: the verbs through a real ``ashat serve``, against real agents and
mainframes, printing what they print locally; push through the API (the bundle built here,
its blobs uploaded to the server, signed there); and each way it is refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle import build_from_dir
from support import configure, deploy


@pytest.fixture
def via(
    hello_fleet: Any,
    serve_process: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
):
    """A fleet of two, ``ashat serve --db`` (SQLite, then PostgreSQL) over its project
    (holding the signing key), and a separate checkout of the tree as the cwd, with no key
    and no store: only --via."""
    fleet = hello_fleet(n=2)
    with monkeypatch.context() as mp:  # the same servers, in the store under test
        mp.setenv("ASHAT_DB", db_url)
        configure("public", fleet.public)
        configure("omega", fleet.omega)
    serve = serve_process(fleet.root, db_url=db_url)
    monkeypatch.setenv("ASHAT_TEST_STORE", db_url)
    tokens = {
        "alice": serve.add_user("alice", "deployer"),
        "bob": serve.add_user("bob", "approver"),
        "vera": serve.add_user("vera", "viewer"),
    }
    client = tmp_path / "checkout"
    shutil.copytree(fleet.root, client, ignore=shutil.ignore_patterns(".ashat"))
    monkeypatch.chdir(client)
    monkeypatch.delenv("ASHAT_SIGNING_KEY")
    monkeypatch.setenv("ASHAT_CONTROL", serve.url)
    monkeypatch.setenv("ASHAT_TOKEN", tokens["alice"])
    return fleet, serve, tokens, client


def spooled(root: Path) -> list[Path]:
    return [p for p in (root / ".ashat" / "spool").rglob("*") if p.is_file()]


def as_user(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("ASHAT_TOKEN", token)


def local(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """``deploy ARGS`` in the server's project, on its store, with no --via."""
    with monkeypatch.context() as mp:
        mp.chdir(root)
        mp.delenv("ASHAT_CONTROL")
        mp.setenv("ASHAT_DB", os.environ["ASHAT_TEST_STORE"])
        return deploy(*args)


def test_the_whole_workflow_through_the_server_prints_what_it_prints_locally(
    via: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, _serve, tokens, client = via
    (client / "VERSION").write_text("1.0.1\n")
    res = deploy("push", "v1", "version 1.0.1")
    assert res.exit_code == 0, res.output
    assert "ASHAT Deployment Workflow Initiated" in res.output
    assert "Target: Public" in res.output
    for step in ("record", "plan", "upload", "stage", "activate"):
        assert f"✅ {step}" in res.output
    assert "Pushed v1 to Public" in res.output
    assert not (client / ".ashat" / "manifests").exists()  # signed and kept by the server
    assert (fleet.root / ".ashat" / "manifests" / "v1.json").is_file()
    assert spooled(fleet.root) == [], "the spool keeps nothing once PUBLIC has it"
    with fleet.public.client() as public:
        assert public.health()["current"] == "v1"

    # Reading verbs: the same lines and the same JSON either way.
    for args in (
        ("status", "v1"),
        ("status",),
        ("history",),
        ("log", "v1"),
        ("servers",),
        ("audit", "verify"),
    ):
        for fmt in ((), ("--json",)):
            there = deploy(*args, *fmt)
            here = local(fleet.root, monkeypatch, *args, *fmt)
            assert (there.exit_code, there.stdout) == (here.exit_code, here.stdout), args

    res = deploy("verify", "v1", "--only", "health")
    assert res.exit_code == 0, res.output
    assert "Update ID: v1 on Public" in res.output
    assert "Verification PASSED!" in res.output

    as_user(monkeypatch, tokens["bob"])
    res = deploy("approve", "v1", "--comment", "ship it")
    assert res.exit_code == 0, res.output
    assert "Approval by bob recorded: 1 of 1" in res.output
    assert "released to Omega" in res.output
    assert "Deployment completed successfully!" in res.output
    assert fleet.currents() == ["v1", "v1"]
    data = json.loads(deploy("status", "v1", "--json").stdout)
    assert data["deployment"]["state"] == "completed"

    # A second release, then the fleet back on the first, all through the server.
    as_user(monkeypatch, tokens["alice"])
    (client / "VERSION").write_text("1.0.2\n")
    res = deploy("push", "v2", "version 1.0.2", "--json")
    assert res.exit_code == 0, res.output
    pushed = json.loads(res.stdout)
    assert pushed["blobs_sent"] == 1  # only the changed file moved
    assert "steps" not in pushed  # the same document as a local push
    assert deploy("verify", "v2", "--only", "health").exit_code == 0
    as_user(monkeypatch, tokens["bob"])
    res = deploy("approve", "v2")
    assert res.exit_code == 0, res.output
    assert fleet.currents() == ["v2", "v2"]
    res = deploy("rollback", "v2", "--reason", "bad")
    assert res.exit_code == 0, res.output
    assert "ASHAT Rollback of OMEGA and the Licensed Mainframes" in res.output
    assert "2 of 2 mainframes back on v1" in res.output
    assert fleet.currents() == ["v1", "v1"]


def test_push_cancel_and_refusals_keep_their_exit_codes(
    via: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, _serve, tokens, _client = via
    res = deploy("push", "c1", "to be cancelled")
    assert res.exit_code == 0, res.output
    res = deploy("cancel", "c1", "--reason", "changed my mind")
    assert res.exit_code == 0, res.output
    assert "Deployment c1 cancelled (changed my mind)" in res.output

    res = deploy("cancel", "c1")  # the state machine refuses: exit 3, as locally
    assert res.exit_code == 3
    assert "cancelled" in res.output
    assert deploy("status", "nope").exit_code == 2  # unknown id
    assert deploy("status", "Bad Id!").exit_code == 2  # refused before anything is sent
    res = deploy("push", "c1", "again")  # the id exists: refused by the server (exit 3)
    assert res.exit_code == 3, res.output
    assert "already exists" in res.output

    res = deploy("approve", "c1")  # a deployer may not approve: 403, exit 4, the reason
    assert res.exit_code == 4
    assert "alice is a deployer" in res.output
    as_user(monkeypatch, tokens["bob"])
    res = deploy("approve", "c1", "--as", "carol")
    assert res.exit_code == 2
    assert "approve as the token's user (bob)" in res.output
    as_user(monkeypatch, tokens["vera"])
    assert deploy("push", "c2", "a viewer").exit_code == 4
    assert deploy("history").exit_code == 0

    as_user(monkeypatch, "not-a-token")
    res = deploy("history")
    assert res.exit_code == 4
    assert "unknown or replaced token" in res.output
    assert "not-a-token" not in res.output
    monkeypatch.delenv("ASHAT_TOKEN")
    res = deploy("history")
    assert res.exit_code == 2
    assert "ASHAT_TOKEN" in res.output
    as_user(monkeypatch, tokens["alice"])
    assert deploy("--via", "ftp://example", "history").exit_code == 2
    res = deploy("--via", "http://127.0.0.1:9", "history")
    assert res.exit_code == 4
    assert "cannot reach" in res.output
    res = deploy("configure", "public", "http://127.0.0.1:1", "X", "--ca-cert", "ca.pem")
    assert res.exit_code == 2
    assert "server's machine" in res.output
    with fleet.public.client() as public:
        assert public.health()["current"] == "c1"  # nothing above reached PUBLIC


def test_a_push_whose_blobs_were_not_uploaded_is_refused_before_it_is_recorded(
    via: Any,
) -> None:
    fleet, serve, tokens, client = via
    (client / "NEW_FILE").write_text("never uploaded\n")
    built = build_from_dir(
        client,
        update_id="n1",
        sequence=1,
        description="n",
        app={},
        created_at="2026-11-30T00:00:00+00:00",
    )
    body = {"description": "n", "manifest": built.manifest.to_dict()}
    with httpx.Client(base_url=serve.url, timeout=60) as http:
        auth = {"Authorization": f"Bearer {tokens['alice']}"}
        answer = http.post("/v1/deployments/n1/push", json=body, headers=auth)
        assert answer.status_code == 400
        assert "neither uploaded nor on PUBLIC" in answer.json()["error"]
        assert http.get("/v1/deployments/n1", headers=auth).status_code == 404

        other = {**body, "manifest": {**body["manifest"], "update_id": "n2"}}
        answer = http.post("/v1/deployments/n1/push", json=other, headers=auth)
        assert answer.status_code == 400
        assert "the manifest is for 'n2'" in answer.json()["error"]

        bad_pack = b"0" * 64 + b" 5\nabcde"  # the digest does not match the bytes
        answer = http.post("/v1/blobs/pack", content=bad_pack, headers=auth)
        assert answer.status_code == 400
        assert spooled(fleet.root) == []
        answer = http.post("/v1/blobs/pack", content=bad_pack)
        assert answer.status_code == 401


def step_names(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith("  ✅ ")]


def test_a_failed_push_shows_the_steps_done_before_it_failed_as_locally(
    via: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, _serve, _tokens, client = via
    failing = """[app]\nprepare = "sh -c 'echo no room; exit 1'"\n"""
    for root in (client, fleet.root):
        toml = root / "ashat.toml"
        toml.write_text(toml.read_text().replace("[app]\n", failing, 1))
    there = deploy("push", "f1", "prepare fails")
    with monkeypatch.context() as mp:
        mp.setenv("ASHAT_SIGNING_KEY", str(fleet.public.key_path))
        here = local(fleet.root, monkeypatch, "push", "f2", "prepare fails")
    assert there.exit_code == here.exit_code != 0, there.output + here.output
    assert step_names(there.output) == step_names(here.output) != [], there.output
    for res in (there, here):
        assert "push failed; PUBLIC keeps its previous release" in res.output
        assert "prepare hook \"sh -c 'echo no room; exit 1'\" failed" in res.output
    there = deploy("push", "f3", "prepare fails", "--json")
    assert "steps" not in there.stdout  # the same error document as a local push
    with fleet.public.client() as public:
        assert public.health()["current"] is None


def test_the_upload_spool_has_a_quota_per_user_and_in_all(
    hello_fleet: Any, serve_process: Any
) -> None:
    """Issue 15: ``ashat serve``'s spool (uploads waiting for their push) is bounded for each
    user and in all; an upload past a quota is refused 413 naming it, and leaves nothing."""
    import hashlib

    fleet = hello_fleet(n=0)
    serve = serve_process(fleet.root, args=("--spool-user-quota", "3000", "--spool-quota", "5000"))
    alice, carol = serve.add_user("alice", "deployer"), serve.add_user("carol", "deployer")

    def upload(token: str, size: int) -> httpx.Response:
        data = os.urandom(size)
        body = f"{hashlib.sha256(data).hexdigest()} {size}\n".encode() + data
        with serve.http(token) as http:
            return http.post("/v1/blobs/pack", content=body)

    assert upload(alice, 2500).status_code == 200
    refused = upload(alice, 1000)
    assert refused.status_code == 413, refused.text
    assert "your upload quota of 3000 bytes (ashat serve --spool-user-quota)" in refused.text
    assert upload(carol, 2000).status_code == 200
    refused = upload(carol, 1000)
    assert refused.status_code == 413, refused.text
    assert "the server's upload quota of 5000 bytes (ashat serve --spool-quota)" in refused.text
    spooled_files = [p for p in (fleet.root / ".ashat" / "spool").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in spooled_files) == 4500  # nothing of the refused
