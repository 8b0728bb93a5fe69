"""The chain of trust with real processes (issue 14): PUBLIC signs what it verified, approvers
sign with their own keys, OMEGA and every mainframe check the whole chain against a root of
trust themselves — so whoever holds the control store, the release key and OMEGA's token (or
even OMEGA's key) but not k approvers' keys cannot ship to the fleet."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from process_fixtures import Chain
from support import (
    ashat,
    configure,
    deploy,
    deploy_json,
    project_manifest,
    wait_for,
)


def test_the_whole_chain_through_the_cli(
    make_chain: Any, db_url: str, monkeypatch: pytest.MonkeyPatch, ssh_agent: Any
) -> None:
    """bob signs with an ashat key, carol with the OpenSSH key her ssh-agent holds."""
    chain = make_chain()
    monkeypatch.setenv("ASHAT_DB", db_url)  # the control store: SQLite, then PostgreSQL
    configure("public", chain.public)
    configure("omega", chain.omega)
    chain.ship("hello-001", "1.0.1")
    _, status = deploy_json("status", "hello-001")
    statement = status["deployment"]["details"]["verification"]
    assert statement["signed"]["manifest_digest"] and statement["signed"]["checks"]
    assert "signed by PUBLIC" in deploy("status", "hello-001").stdout

    # without a key there is nothing to approve with
    res = deploy("approve", "hello-001")
    assert res.exit_code == 2 and "--key FILE" in res.stderr
    # mallory's key is not an approver key of root
    res = deploy("approve", "hello-001", "--key", chain.key("mallory"))
    assert res.exit_code == 3 and "not an approver key" in res.stderr
    assert "approval.refused" in deploy("log", "hello-001").stdout
    res = deploy("approve", "hello-001", "--key", chain.key("bob"))
    assert res.exit_code == 0, res.output
    assert "Approval by bob recorded" in res.stdout and "Waiting for 1 more" in res.stdout
    # the key, not --as, says who approves
    res = deploy("approve", "hello-001", "--key", chain.key("carol"), "--as", "bob")
    assert res.exit_code == 3 and "signed by carol's key" in res.stderr, res.output
    # carol's private key is in her ssh-agent: she names its public half
    ssh_agent(chain.keys / "carol.key")
    (chain.keys / "carol.key").unlink()
    res = deploy("approve", "hello-001", "--key", str(chain.keys / "carol.key.pub"))
    assert res.exit_code == 0, res.output
    assert "Deployment completed successfully!" in res.stdout
    assert chain.currents() == ["hello-001", "hello-001"]
    for mf in chain.mainframes:
        assert mf.health()["fleet"]["root_version"] == 1


def _approved_by_bob_only(chain: Chain) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """hello-001 on the fleet; hello-002 pushed, verified, approved by bob alone. Returns
    hello-002's verification statement and its one approval statement."""
    from ashat.store.db import Database, default_sqlite_url
    from ashat.store.store import Store

    chain.ship("hello-001", "1.0.1")
    assert deploy("approve", "hello-001", "--key", chain.key("bob")).exit_code == 0
    assert deploy("approve", "hello-001", "--key", chain.key("carol")).exit_code == 0
    assert chain.currents() == ["hello-001", "hello-001"]
    chain.ship("hello-002", "1.0.2")
    assert deploy("approve", "hello-002", "--key", chain.key("bob")).exit_code == 0
    _, status = deploy_json("status", "hello-002")
    store = Store(Database(default_sqlite_url(chain.root)))
    try:
        approvals = store.approval_statements("hello-002")
    finally:
        store.db.close()
    assert len(approvals) == 1
    return status["deployment"]["details"]["verification"], approvals


def _send_to_omega(chain: Chain, update_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a holder of OMEGA's token can do, bypassing ``deploy``: relay the blobs, stage
    the release, ask OMEGA to counter-sign it. Returns OMEGA's answer or refusal body."""
    from ashat.ops.approve import blob_sizes, make_relay
    from ashat.transport.errors import AgentRejected

    manifest = project_manifest(chain.root, update_id)
    with chain.public.client() as public, chain.omega.client() as omega:
        relay = make_relay(public, omega, blob_sizes(manifest))
        relay(omega.missing(sorted(blob_sizes(manifest))))
        omega.stage(manifest)
        try:
            return omega.request(
                "POST", f"/v1/releases/{update_id}/approve", json_body={"approval": record}
            )
        except AgentRejected as e:
            return e.body


def _forgeries(verification: dict[str, Any], approvals: list[dict[str, Any]]) -> list[Any]:
    forged = json.loads(json.dumps(approvals[0]))
    forged["signed"]["approver"] = "carol"  # bob's signature under carol's name
    return [
        {"verification": verification, "approvals": approvals},
        {"verification": verification, "approvals": [*approvals, forged]},
        {"verification": verification, "approvals": [*approvals, approvals[0]]},
        None,
    ]


def test_a_thief_of_the_store_the_release_key_and_omegas_token_cannot_ship(
    make_chain: Any,
) -> None:
    chain = make_chain()
    verification, approvals = _approved_by_bob_only(chain)

    # 1. the thief edits the store: approved, as if carol had approved too
    db = sqlite3.connect(chain.root / ".ashat" / "ashat.db")
    with db:
        db.execute("UPDATE deployments SET state = 'approved' WHERE id = 'hello-002'")
        db.execute(
            "INSERT INTO approvals (deployment_id, approver, at, comment) "
            "VALUES ('hello-002', 'carol', '2030-01-01T00:00:00Z', NULL)"
        )
    db.close()
    res = deploy("approve", "hello-002")
    assert res.exit_code == 3, res.output
    assert "1 valid approval(s) of the 2" in res.stderr
    assert "release.refused" in deploy("log", "hello-002").stdout

    # 2. straight to OMEGA with its token: one approval short, a forged one, bob twice, none
    for evidence in _forgeries(verification, approvals):
        answer = _send_to_omega(chain, "hello-002", {"evidence": evidence})
        assert answer.get("kind") == "trust_refused", answer
    assert "refused to approve hello-002" in chain.omega.output()
    time.sleep(1.5)  # a poll or two
    assert chain.currents() == ["hello-001", "hello-001"]


def test_an_omega_that_signs_anything_cannot_make_a_mainframe_install(make_chain: Any) -> None:
    """OMEGA itself (its key, or whoever owns its host) counter-signs and rolls out a release
    one approval short: each mainframe checks the chain alone and refuses it."""
    chain = make_chain(omega_root=False)
    verification, approvals = _approved_by_bob_only(chain)
    record = {"evidence": {"verification": verification, "approvals": approvals}}
    answer = _send_to_omega(chain, "hello-002", record)
    assert "manifest_digest" in answer, answer  # counter-signed: OMEGA has no root
    with chain.omega.client() as omega:
        omega.activate("hello-002")
        rollout = omega.request(
            "POST",
            "/v1/fleet/rollouts",
            json_body={"update_id": "hello-002", "waves": [100], "max_failure_ratio": 0.0,
                       "wave_timeout_s": 30, "auto_rollback": False},
        )  # fmt: skip

        def ended() -> dict[str, Any] | None:
            got = omega.request("GET", f"/v1/fleet/rollouts/{rollout['rollout_id']}")
            return got if got["state"] != "running" else None

        final = wait_for(ended, 30, "the forged rollout to end")
    assert final["state"] == "failed", final
    assert chain.currents() == ["hello-001", "hello-001"]
    for mf in chain.mainframes:
        assert "refused the directive" in mf.output() and "(approvals)" in mf.output()


def test_an_approver_leaves_root_v2_and_releases_they_approved_stay_installable(
    make_chain: Any,
) -> None:
    chain = make_chain()
    chain.ship("hello-001", "1.0.1")  # sequence 1
    assert deploy("approve", "hello-001", "--key", chain.key("bob")).exit_code == 0
    assert deploy("approve", "hello-001", "--key", chain.key("carol")).exit_code == 0
    assert chain.currents() == ["hello-001", "hello-001"]

    # carol leaves: retired through sequence 1; dave joins; the root key signs version 2
    res = ashat("trust", "remove-key", "approvers", "carol", "--retire-through", "1")
    assert res.exit_code == 0, res.output
    res = ashat("trust", "add-key", "approvers", str(chain.keys / "dave.pub"), "--name", "dave")
    assert res.exit_code == 0, res.output
    res = ashat("trust", "sign", "--key", chain.key("root"))
    assert res.exit_code == 0 and "root version 2 is signed and in force" in res.stdout
    assert ashat("trust", "verify").exit_code == 0
    # the idle fleet hears of it from OMEGA's next answers
    res = ashat("trust", "push")
    assert res.exit_code == 0 and "OMEGA holds root version 2" in res.stdout, res.output
    wait_for(
        lambda: all(mf.health()["fleet"]["root_version"] == 2 for mf in chain.mainframes),
        15,
        "the mainframes to take root version 2 from OMEGA's poll answers",
    )

    chain.ship("hello-002", "1.0.2")  # sequence 2
    res = deploy("approve", "hello-002", "--key", chain.key("carol"))
    assert res.exit_code == 3 and "not an approver key of root version 2" in res.stderr
    assert deploy("approve", "hello-002", "--key", chain.key("bob")).exit_code == 0
    res = deploy("approve", "hello-002", "--key", chain.key("dave"))
    assert res.exit_code == 0, res.output
    assert chain.currents() == ["hello-002", "hello-002"]
    for mf in chain.mainframes:  # root v2 came with the release, and it chained
        assert mf.health()["fleet"]["root_version"] == 2

    # back to hello-001, approved by carol before she left: still installable
    res = deploy("rollback", "hello-002", "--reason", "test the way back")
    assert res.exit_code == 0, res.output
    assert chain.currents() == ["hello-001", "hello-001"]


def test_the_whole_chain_through_deploy_via(
    make_chain: Any,
    serve_process: Any,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through ``ashat serve`` (SQLite, then PostgreSQL): the approvers sign on their own
    machines; the server only carries the signatures, and checks them."""
    chain = make_chain()
    with monkeypatch.context() as mp:
        mp.setenv("ASHAT_DB", db_url)
        configure("public", chain.public)
        configure("omega", chain.omega)
    serve = serve_process(chain.root, db_url=db_url)
    tokens = {
        "alice": serve.add_user("alice", "deployer"),
        "bob": serve.add_user("bob", "approver"),
        "carol": serve.add_user("carol", "approver"),
    }
    checkout = tmp_path / "checkout"  # the tree and its trust/, no store, no release key
    shutil.copytree(chain.root, checkout, ignore=shutil.ignore_patterns(".ashat"))
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("ASHAT_SIGNING_KEY")
    monkeypatch.setenv("ASHAT_CONTROL", serve.url)
    monkeypatch.setenv("ASHAT_TOKEN", tokens["alice"])
    (checkout / "VERSION").write_text("1.0.1\n")
    assert deploy("push", "v1", "version 1.0.1").exit_code == 0
    # the server's key signed it; the person who asked is in what it signed (no approving it)
    assert json.loads(project_manifest(chain.root, "v1"))["source"]["pushed_by"] == "alice"
    res = deploy("verify", "v1")
    assert res.exit_code == 0, res.output

    monkeypatch.setenv("ASHAT_TOKEN", tokens["bob"])
    res = deploy("approve", "v1", "--key", chain.key("carol"))  # bob with carol's key
    assert res.exit_code == 3 and "carol's" in res.stderr, res.output
    res = deploy("approve", "v1")  # no key: the server asks for one
    assert res.exit_code == 2 and "--key FILE" in res.stderr, res.output
    res = deploy("approve", "v1", "--key", chain.key("bob"), "--comment", "reviewed")
    assert res.exit_code == 0 and "Waiting for 1 more" in res.stdout, res.output
    monkeypatch.setenv("ASHAT_TOKEN", tokens["carol"])
    res = deploy("approve", "v1", "--key", chain.key("carol"))
    assert res.exit_code == 0, res.output
    assert chain.currents() == ["v1", "v1"]


def test_a_mainframes_own_bearer_routes_take_only_what_carries_its_chain(
    make_chain: Any,
) -> None:
    """Whoever holds a mainframe's operator token stages, activates and rolls back by hand:
    the same chain is required on each route, against the root the mainframe holds."""
    import httpx

    from ashat.bundle import parse_manifest, sign_manifest
    from ashat.bundle.keys import load_private_key

    chain = make_chain()
    chain.ship("hello-001", "1.0.1")
    for who in ("bob", "carol"):
        assert deploy("approve", "hello-001", "--key", chain.key(who)).exit_code == 0
    chain.ship("hello-002", "1.0.2")
    for who in ("bob", "carol"):
        assert deploy("approve", "hello-002", "--key", chain.key(who)).exit_code == 0
    assert chain.currents() == ["hello-002", "hello-002"]
    mf = chain.mainframes[0]
    auth = {"Authorization": f"Bearer {chain.mainframe_token}"}

    # a release OMEGA's key approved with bob's approval only, staged by hand
    chain.ship("hello-003", "1.0.3")
    assert deploy("approve", "hello-003", "--key", chain.key("bob")).exit_code == 0
    _, status = deploy_json("status", "hello-003")
    from ashat.store.db import Database, default_sqlite_url
    from ashat.store.store import Store

    store = Store(Database(default_sqlite_url(chain.root)))
    evidence = {
        "verification": status["deployment"]["details"]["verification"],
        "approvals": store.approval_statements("hello-003"),
    }
    store.db.close()
    m = parse_manifest(project_manifest(chain.root, "hello-003"))
    forged = sign_manifest(m, load_private_key(chain.keys / "omega.key"), "approval",
                           {"update_id": "hello-003", "evidence": evidence})  # fmt: skip
    r = httpx.post(f"{mf.url}/v1/releases", content=forged.to_bytes(), headers=auth)
    assert r.status_code == 409 and "1 valid approval(s) of the 2" in r.json()["error"], r.text

    # carol's key is revoked (not retired): hello-001 no longer carries a valid chain
    assert ashat("trust", "remove-key", "approvers", "carol").exit_code == 0
    assert ashat("trust", "add-key", "approvers", str(chain.keys / "dave.pub"),
                 "--name", "dave").exit_code == 0  # fmt: skip
    assert ashat("trust", "sign", "--key", chain.key("root")).exit_code == 0
    assert ashat("trust", "push").exit_code == 0
    wait_for(lambda: mf.health()["fleet"]["root_version"] == 2, 15, "root version 2")
    r = httpx.post(f"{mf.url}/v1/rollback", json={"to": "hello-001"}, headers=auth)
    assert r.status_code == 409 and "rollback directive" in r.json()["error"], r.text
    r = httpx.post(f"{mf.url}/v1/releases/hello-002/activate", headers=auth)
    assert r.status_code == 409, r.text  # what runs was approved by a revoked key, too
    assert chain.currents() == ["hello-002", "hello-002"]


def test_a_mainframes_bearer_token_cannot_take_it_back_to_a_rolled_back_or_older_release(
    make_chain: Any,
) -> None:
    """DESIGN §7: a mainframe goes back only on a rollback directive OMEGA signed. Its own
    bearer token (one token) may stage and activate forward, but neither run again what
    OMEGA rolled back there nor go to a lower sequence, by /activate or /v1/rollback."""
    import httpx

    chain = make_chain()
    for update_id, version in (("hello-001", "1.0.1"), ("hello-002", "1.0.2")):
        chain.ship(update_id, version)
        for who in ("bob", "carol"):
            assert deploy("approve", update_id, "--key", chain.key(who)).exit_code == 0
    res = deploy("rollback", "hello-002", "--reason", "hello-002 is bad")
    assert res.exit_code == 0, res.output
    assert chain.currents() == ["hello-001", "hello-001"]
    mf = chain.mainframes[0]
    auth = {"Authorization": f"Bearer {chain.mainframe_token}"}

    r = httpx.post(f"{mf.url}/v1/releases/hello-002/activate", headers=auth)
    assert r.status_code == 409, r.text
    assert "hello-002 was rolled back here" in r.json()["error"], r.text
    assert r.json()["rule"] == "mainframe_forward_only"

    chain.ship("hello-003", "1.0.3")
    for who in ("bob", "carol"):
        assert deploy("approve", "hello-003", "--key", chain.key(who)).exit_code == 0
    assert chain.currents() == ["hello-003", "hello-003"]
    r = httpx.post(f"{mf.url}/v1/releases/hello-001/activate", headers=auth)
    assert r.status_code == 409, r.text
    assert "sequence 1, not higher than 3 of the running hello-003" in r.json()["error"]
    for body in ({}, {"from": "hello-003", "to": "hello-001"}):
        r = httpx.post(f"{mf.url}/v1/rollback", json=body, headers=auth)
        assert r.status_code == 409 and "rollback directive" in r.json()["error"], r.text
    assert chain.currents() == ["hello-003", "hello-003"]


def test_a_project_with_no_database_to_check_is_verified_under_a_root(make_chain: Any) -> None:
    """A review: with a root of trust and no ``[verify.database]``, the control side said
    "skipped" without asking PUBLIC, PUBLIC would not sign a server-side check it did not
    run, and every ``deploy verify`` failed the same way ("run deploy verify again"). Now
    PUBLIC is asked, says skipped itself, and signs that."""
    import re

    chain = make_chain()
    toml = chain.root / "ashat.toml"
    text = re.sub(r"\[verify\.database\]\n(?:[^\[\n].*\n)*", "", toml.read_text())
    text = text.replace('"database", ', "").replace(', "database"', "")
    assert "database" not in text, text
    toml.write_text(text)
    (chain.root / "VERSION").write_text("1.0.1\n")
    assert deploy("push", "hello-001", "no database").exit_code == 0
    res = deploy("verify", "hello-001")
    assert res.exit_code == 0, res.output
    assert "Database Connection: no [verify.database] url or url_env configured" in res.output
    _, status = deploy_json("status", "hello-001")
    statement = status["deployment"]["details"]["verification"]["signed"]
    assert {c["name"]: c["status"] for c in statement["checks"]}["database"] == "skipped"


def test_an_approval_of_an_earlier_verification_does_not_count_and_may_be_renewed(
    make_chain: Any,
) -> None:
    """Re-verifying between approvals made a new verification statement: bob's approval (of
    the old one) was counted by the control side, the deployment was called approved, and
    the chain refused its release; approved may go only to releasing, so it could never be
    released, cancelled or approved again."""
    chain = make_chain()  # k = 2: bob, carol
    chain.ship("hello-001", "1.0.1")
    res = deploy("approve", "hello-001", "--key", chain.key("bob"))
    assert res.exit_code == 0 and "Waiting for 1 more" in res.stdout, res.output
    assert deploy("verify", "hello-001").exit_code == 0  # a new verification statement
    res = deploy("approve", "hello-001", "--key", chain.key("carol"))
    assert res.exit_code == 0, res.output
    assert "Approval by carol recorded: 1 of 2" in res.stdout, res.output
    assert "1 recorded approval(s) do not count: bob: approves another verification" in (res.stdout)
    assert "Waiting for 1 more" in res.stdout
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "verified"
    res = deploy("approve", "hello-001", "--key", chain.key("bob"))  # bob approves this one
    assert res.exit_code == 0, res.output
    assert "Deployment completed successfully!" in res.stdout
    assert chain.currents() == ["hello-001", "hello-001"]
    assert "approval.renewed" in deploy("log", "hello-001").stdout


def test_passkey_approvals_past_roots_cap_do_not_make_it_approved(make_chain: Any) -> None:
    """Two people approving with dashboard passkeys where root counts one (the default
    max_passkey_approvals): the control side counted two and called it approved."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ashat.canonical import canonical_json
    from ashat.ops.approve import approval_to_sign, run_approve
    from ashat.ops.project import Project
    from ashat.trust.statements import APPROVAL_NAMESPACE
    from ashat.trust.webauthn import Passkey, assertion_signature, b64url, challenge_for

    chain = make_chain(approvers=("carol",), k=1)
    origin = "https://ctl.example"
    keys = {}
    for name in ("erin", "frank"):
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys[name] = (key, Passkey("ES256", origin, spki))
        (chain.root / f"{name}.pub").write_text(keys[name][1].to_text() + "\n")
        res = ashat("trust", "add-key", "approvers", f"{name}.pub", "--name", name)
        assert res.exit_code == 0, res.output
    assert ashat("trust", "edit", "--threshold", "approvers=2").exit_code == 0
    assert ashat("trust", "sign", "--key", chain.key("root")).exit_code == 0
    chain.ship("hello-001", "1.0.1")
    rp = hashlib.sha256(b"ctl.example").digest() + bytes([0x05]) + (1).to_bytes(4, "big")
    waiting = []
    for name in ("erin", "frank"):  # two people, each with the passkey of their browser
        project = Project(chain.root, None)
        try:
            signed = approval_to_sign(project, "hello-001", name, None)
            challenge = challenge_for(APPROVAL_NAMESPACE, canonical_json(signed))
            client = json.dumps({"type": "webauthn.get", "challenge": b64url(challenge),
                                 "origin": origin, "crossOrigin": False}).encode()  # fmt: skip
            key, passkey = keys[name]
            der = key.sign(rp + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
            sig = assertion_signature(b64url(rp), b64url(client), b64url(der))
            statement = {"signed": signed, "signatures": [{"keyid": passkey.keyid, "sig": sig}]}
            out = run_approve(project, "hello-001", actor=name, wait=False, statement=statement)
            waiting.append(out.waiting_for)
        finally:
            project.close()
    assert waiting == [1, 1]  # frank's passkey approval is past root's cap: not counted
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "verified"
    res = deploy("approve", "hello-001", "--key", chain.key("carol"))  # an OpenSSH key
    assert res.exit_code == 0, res.output
    assert chain.currents() == ["hello-001", "hello-001"]


def test_a_mainframe_whose_root_expired_says_so_and_counts_no_answer_authenticated(
    make_chain: Any,
) -> None:
    """A mainframe whose root expired installs nothing; it still took OMEGA's signed "no
    directive" (by keys of the expired root) as authenticated, so the freeze alarm its
    docs point to (last_authenticated) stayed green and nothing said why."""
    import datetime as dt

    chain = make_chain()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)
    res = ashat("trust", "edit", "--expires", soon.isoformat(timespec="seconds"))
    assert res.exit_code == 0, res.output
    assert ashat("trust", "sign", "--key", chain.key("root")).exit_code == 0
    assert ashat("trust", "push").exit_code == 0
    mf = chain.mainframes[0]
    wait_for(lambda: mf.health()["fleet"]["root_version"] == 2, 15, "root version 2")
    assert mf.health()["fleet"]["root_expires"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    wait_for(lambda: dt.datetime.now(dt.UTC) > soon, 15, "the root to expire")
    fleet = wait_for(lambda: (f := mf.health()["fleet"])["last_error"] and f, 15, "a poll after it")
    assert "expired" in fleet["last_error"], fleet
    authenticated = fleet["last_authenticated"]
    time.sleep(2.5)  # polls go on (poll_wait 1 s): none counts as authenticated
    again = mf.health()["fleet"]
    assert again["last_authenticated"] == authenticated and "expired" in again["last_error"]


def test_key_names_that_differ_only_in_case_are_refused_in_a_root(tmp_path: Path) -> None:
    """One person's keys as "Bob" and "bob" counted as two approvers (names were compared
    as written); the chain now compares them ignoring case, and a root that names two
    keys so is refused before it is written, so that it says what the chain counts."""
    from ashat.bundle import generate_keypair

    pub = {n: generate_keypair(n, tmp_path / "keys")[1] for n in
           ("root", "alice", "bob", "bob-yubikey", "public", "omega")}  # fmt: skip
    trust = tmp_path / "trust"
    base = ["trust", "init", "--dir", str(trust), "--root-key", str(tmp_path / "keys/root.key"),
            "--releaser", f"alice={pub['alice']}", "--verifier", str(pub["public"]),
            "--omega", str(pub["omega"])]  # fmt: skip
    res = ashat(*base, "--approver", f"Bob={pub['bob']}", "--approver",
                f"bob={pub['bob-yubikey']}", "--approvals", "2")  # fmt: skip
    assert res.exit_code == 2 and "'Bob' and 'bob' differ only in case" in res.stderr, res.output
    assert not trust.exists() or not any(trust.iterdir())  # nothing written
    assert ashat(*base, "--approver", f"bob={pub['bob']}").exit_code == 0
    res = ashat("trust", "add-key", "--dir", str(trust), "approvers", str(pub["bob-yubikey"]),
                "--name", "BOB")  # fmt: skip
    assert res.exit_code == 2 and "'bob' and 'BOB' differ only in case" in res.stderr, res.output
    res = ashat("trust", "add-key", "--dir", str(trust), "approvers", str(pub["bob-yubikey"]),
                "--name", "bob")  # fmt: skip
    assert res.exit_code == 0, res.output  # one person, two keys: one name


def _keep_two(mainframe_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mainframes started with ``--keep 2`` (the fewest releases an agent keeps)."""
    start = mainframe_factory.start

    def keeping_two(**kw: Any) -> Any:
        return start(**{**kw, "args": (*kw.get("args", ()), "--keep", "2")})

    monkeypatch.setattr(mainframe_factory, "start", keeping_two)


def _rolled_back_twice(chain: Any) -> bytes:
    """hello-001..003 released to the fleet, then hello-003 and hello-002 rolled back: the
    mainframes (keeping two releases) run hello-001 and have pruned hello-003. Returns
    hello-003's manifest, as a mainframe's operator read it on its disk before."""
    for update_id, version in (("hello-001", "1.0.1"), ("hello-002", "1.0.2"),
                               ("hello-003", "1.0.3")):  # fmt: skip
        chain.ship(update_id, version)
        for who in ("bob", "carol"):
            assert deploy("approve", update_id, "--key", chain.key(who)).exit_code == 0
    assert chain.currents() == ["hello-003", "hello-003"]
    manifest = (chain.mainframes[0].data / "manifests" / "hello-003.json").read_bytes()
    for update_id in ("hello-003", "hello-002"):
        res = deploy("rollback", update_id, "--reason", f"{update_id} is bad")
        assert res.exit_code == 0, res.output
    wait_for(lambda: chain.currents() == ["hello-001", "hello-001"], 30, "the fleet on hello-001")
    assert not (chain.mainframes[0].data / "releases" / "hello-003").exists()
    return manifest


@pytest.mark.parametrize("restarted", [False, True])
def test_a_release_rolled_back_on_a_mainframe_stays_refused_once_pruned_there(
    make_chain: Any, mainframe_factory: Any, monkeypatch: pytest.MonkeyPatch, restarted: bool
) -> None:
    """A review: a mainframe forgot that a release was rolled back there once it pruned the
    release (or restarted), so its bearer token alone, with the manifest from its own disk
    and the blobs its license fetches, staged and activated the withdrawn hello-003 again.
    It remembers now."""
    _keep_two(mainframe_factory, monkeypatch)
    chain = make_chain()
    manifest = _rolled_back_twice(chain)
    mf = chain.mainframes[0]
    if restarted:
        mf.stop()
        mf = mainframe_factory.restart(mf)
        mainframe_factory.ready(mf)
    auth = {"Authorization": f"Bearer {chain.mainframe_token}"}
    lic = {"Authorization": "License " + (mf.data.parent / "license").read_text().strip()}
    with httpx.Client(base_url=mf.url, headers=auth, timeout=30) as c:
        needed = sorted({f["sha256"] for f in json.loads(manifest)["files"]})
        for sha in c.post("/v1/blobs/missing", json={"digests": needed}).json()["missing"]:
            blob = httpx.get(f"{chain.omega.url}/v1/blobs/{sha}", headers=lic, timeout=30)
            assert c.put(f"/v1/blobs/{sha}", content=blob.content).status_code in (200, 201, 204)
        c.post("/v1/releases", content=manifest)
        r = c.post("/v1/releases/hello-003/activate")
    assert r.status_code == 409 and "rolled back here" in r.text, r.text
    assert mf.current() == "hello-001"


def test_omega_starts_no_rollout_of_a_release_it_rolled_back(
    make_chain: Any, mainframe_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: OMEGA's bearer token alone put the withdrawn hello-003 back on OMEGA and
    started an install rollout of it, which every mainframe that had pruned it took again.
    OMEGA refuses that rollout now (as it refuses a pin to it), and a mainframe would
    refuse the install anyway."""
    _keep_two(mainframe_factory, monkeypatch)
    chain = make_chain()
    _rolled_back_twice(chain)
    auth = {"Authorization": f"Bearer {chain.omega.token}"}
    with httpx.Client(base_url=chain.omega.url, headers=auth, timeout=30) as c:
        assert c.post("/v1/releases/hello-003/activate").status_code == 200
        r = c.post("/v1/fleet/rollouts", json={"update_id": "hello-003", "waves": [100]})
    assert r.status_code == 409 and "hello-003 was rolled back on this OMEGA" in r.text, r.text
    time.sleep(3)  # a poll or two
    assert chain.currents() == ["hello-001", "hello-001"]
