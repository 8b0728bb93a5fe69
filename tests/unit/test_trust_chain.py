"""The chain of trust, pure (ashat.trust): root.json with thresholds and rotation, PUBLIC's
verification statement, approvers' statements, and the check OMEGA and every mainframe run.
Each refusal of issue 14's hostile-input list is a row here, with real Ed25519 keys."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
from typing import Any

import pytest

from ashat.bundle.keys import SigningKey
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest
from ashat.bundle.sign import sign_manifest
from ashat.trust.chain import check_chain, check_verification
from ashat.trust.keys import TrustKey, sign_ed25519
from ashat.trust.root import (
    ROLES,
    ROOT_NAMESPACE,
    RoleKeys,
    Root,
    TrustRefused,
    load_trusted,
    parse_root,
    update,
    update_chain,
)
from ashat.trust.statements import (
    APPROVAL_NAMESPACE,
    VERIFICATION_NAMESPACE,
    approval_signed,
    digest,
    sign,
    verification_signed,
)

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
ROOT1, ROOT2, ROOT3 = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
ALICE = SigningKey.generate()  # the releaser
VERIFIER = SigningKey.generate()
OMEGA = SigningKey.generate()
BOB, CAROL, DAVE = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
MALLORY = SigningKey.generate()
SIX = ("health", "modules", "api", "database", "performance", "security")


def tk(key: SigningKey, name: str) -> TrustKey:
    return TrustKey.ed25519(key.public, name)


def make_root(
    version: int = 1,
    *,
    approvers: tuple[tuple[SigningKey, str], ...] = ((BOB, "bob"), (CAROL, "carol")),
    k: int = 2,
    roots: tuple[SigningKey, ...] = (ROOT1, ROOT2),
    root_threshold: int = 2,
    expires: dt.datetime = NOW + dt.timedelta(days=365),
    retired: dict[str, tuple[str, ...]] | None = None,
    allow_self: bool = False,
    extra_keys: tuple[TrustKey, ...] = (),
) -> Root:
    keys = {
        t.keyid: t
        for t in [
            *(tk(r, f"root{i}") for i, r in enumerate(roots)),
            tk(ALICE, "alice"),
            tk(VERIFIER, "public"),
            tk(OMEGA, "omega"),
            *(tk(key, name) for key, name in approvers),
            *extra_keys,
        ]
    }
    roles = {
        "root": RoleKeys(tuple(r.keyid for r in roots), root_threshold),
        "releasers": RoleKeys((ALICE.keyid,), 1),
        "verifiers": RoleKeys((VERIFIER.keyid,), 1),
        "approvers": RoleKeys(tuple(key.keyid for key, _ in approvers), k),
        "omega": RoleKeys((OMEGA.keyid,), 1),
        "license_issuers": RoleKeys((OMEGA.keyid,), 1),
    }
    return Root(
        version=version,
        expires=expires,
        keys=keys,
        roles=roles,
        retired=retired or {},
        allow_self_approval=allow_self,
    )


def signed_by(root: Root, *keys: SigningKey) -> bytes:
    for key in keys:
        root = root.with_signature(
            key.keyid, sign_ed25519(key, ROOT_NAMESPACE, root.signed_bytes())
        )
    return root.to_bytes()


def manifest(update_id: str = "hello-002", sequence: int = 2) -> Manifest:
    body = f"release {update_id}".encode()
    m = Manifest(
        schema=SCHEMA,
        update_id=update_id,
        sequence=sequence,
        description="test",
        created_at="2030-01-01T12:00:00+00:00",
        source={"kind": "dir", "path": "."},
        app={},
        files=(FileEntry("index.html", hashlib.sha256(body).hexdigest(), len(body), 0o644),),
    )
    return sign_manifest(m, ALICE)


def signer(key: SigningKey) -> Any:
    return lambda ns, msg: (key.keyid, sign_ed25519(key, ns, msg))


def verification(m: Manifest, key: SigningKey = VERIFIER, **status: str) -> dict[str, Any]:
    results = [{"name": n, "status": status.get(n, "passed"), "summary": "ok"} for n in SIX]
    signed = verification_signed(
        update_id=m.update_id,
        sequence=m.sequence,
        manifest_digest=m.digest(),
        results=results,
        required=list(SIX),
        settings={"timeout_s": 20},
        verifier="public",
        at="2030-05-01T11:00:00Z",
    )
    return sign(signed, VERIFICATION_NAMESPACE, signer(key))


def approval(
    m: Manifest, v: dict[str, Any], key: SigningKey, name: str, **over: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "update_id": m.update_id,
        "sequence": m.sequence,
        "manifest_digest": m.digest(),
        "verification_digest": digest(v),
        "approver": name,
        "at": "2030-05-01T11:30:00Z",
        "comment": None,
        **over,
    }
    return sign(approval_signed(**fields), APPROVAL_NAMESPACE, signer(key))


def evidence(m: Manifest, *who: tuple[SigningKey, str]) -> dict[str, Any]:
    v = verification(m)
    return {"verification": v, "approvals": [approval(m, v, key, name) for key, name in who]}


ROOT_V1 = parse_root(signed_by(make_root(), ROOT1, ROOT2))


def test_a_release_with_its_whole_chain_passes() -> None:
    m = manifest()
    report = check_chain(ROOT_V1, m, evidence(m, (BOB, "bob"), (CAROL, "carol")))
    assert report.approvers == ("bob", "carol") and report.releasers == ("alice",)


def _refused(reason: str, m: Manifest, ev: Any, root: Root = ROOT_V1) -> str:
    with pytest.raises(TrustRefused) as e:
        check_chain(root, m, ev)
    assert e.value.reason == reason, e.value.message
    assert e.value.exit_code == 3
    return e.value.message


OTHER = manifest("hello-003", 3)


def _hostile_rows() -> list[tuple[str, str, Any]]:
    m = manifest()
    v = verification(m)
    good_bob = approval(m, v, BOB, "bob")
    rows: list[tuple[str, str, Any]] = []
    rows.append(
        (
            "approval for another manifest",
            "approvals",
            {"verification": v, "approvals": [good_bob, approval(OTHER, v, CAROL, "carol")]},
        )
    )
    rows.append(
        (
            "approval by a name not in root",
            "approvals",
            {"verification": v, "approvals": [good_bob, approval(m, v, MALLORY, "mallory")]},
        )
    )
    rows.append(
        (
            "approval by a key signing under another's name",
            "approvals",
            {"verification": v, "approvals": [good_bob, approval(m, v, MALLORY, "carol")]},
        )
    )
    rows.append(
        ("one signature short of k", "approvals", {"verification": v, "approvals": [good_bob]})
    )
    rows.append(
        (
            "the same approver twice",
            "approvals",
            {"verification": v, "approvals": [good_bob, approval(m, v, BOB, "bob")]},
        )
    )
    older = manifest("hello-001", 1)
    v_old = verification(older)
    rows.append(
        (
            "a replayed approval of an older release",
            "approvals",
            {"verification": v, "approvals": [good_bob, approval(older, v_old, CAROL, "carol")]},
        )
    )
    rows.append(
        (
            "an approval of another verification statement",
            "approvals",
            {
                "verification": v,
                "approvals": [
                    good_bob,
                    approval(m, verification(m, security="failed"), CAROL, "carol"),
                ],
            },
        )
    )
    tampered = copy.deepcopy(approval(m, v, CAROL, "carol"))
    tampered["signed"]["comment"] = "changed after signing"
    rows.append(
        (
            "an approval altered after signing",
            "approvals",
            {"verification": v, "approvals": [good_bob, tampered]},
        )
    )
    rows.append(
        (
            "a verification statement for another digest",
            "other_release",
            {"verification": verification(OTHER), "approvals": []},
        )
    )
    rows.append(
        (
            "a verification statement with a failed check",
            "verification_failed",
            {"verification": verification(m, performance="failed"), "approvals": []},
        )
    )
    rows.append(
        (
            "a verification statement signed by another key",
            "verification_signature",
            {"verification": verification(m, key=MALLORY), "approvals": []},
        )
    )
    rows.append(("no evidence at all", "no_evidence", None))
    return rows  # fmt: skip


@pytest.mark.parametrize(("what", "reason", "ev"), _hostile_rows(), ids=lambda v: str(v)[:40])
def test_hostile_evidence_is_refused(what: str, reason: str, ev: Any) -> None:
    _refused(reason, manifest(), ev)


def test_a_missing_check_is_a_failed_verification_even_when_the_statement_omits_it() -> None:
    m = manifest()
    v = verification(m)
    v["signed"]["checks"] = [c for c in v["signed"]["checks"] if c["name"] != "security"]
    v["signed"]["required"] = [n for n in SIX if n != "security"]
    v = sign(v["signed"], VERIFICATION_NAMESPACE, signer(VERIFIER))  # PUBLIC signed it so
    message = _refused("verification_failed", m, {"verification": v, "approvals": []})
    assert "security not run" in message  # root requires it, whatever ashat.toml said


def test_a_skipped_module_load_test_of_a_release_that_names_modules_is_refused() -> None:
    """PUBLIC loads the modules of the release's signed [app]: a statement that says it
    skipped them for a release that names some is not one an honest PUBLIC signs."""
    m = manifest()
    m = sign_manifest(dataclasses.replace(m, app={"modules": ["app"]}, signatures=()), ALICE)
    v = verification(m, modules="skipped")
    message = _refused("verification_failed", m, {"verification": v, "approvals": []})
    assert "names modules to load" in message and "skipped" in message
    plain = manifest()  # a release that names none: skipped is what PUBLIC says
    check_verification(ROOT_V1, plain, verification(plain, modules="skipped"))


def test_the_evidence_read_is_that_of_the_approval_signature_that_verifies() -> None:
    """A review: the evidence came from the first approval signature naming an OMEGA key,
    verified or not, so one by another OMEGA key (a root may list two) placed before the
    real one hid the evidence that holds; the roots a mainframe is offered likewise."""
    from ashat.bundle.manifest import Signature
    from ashat.fleet.mainframe import offered_roots
    from ashat.trust.chain import ed25519_keys, evidence_of

    other_omega = SigningKey.generate()
    m = manifest()
    good = evidence(m, (BOB, "bob"), (CAROL, "carol"))
    payload = {"update_id": m.update_id, "evidence": good, "roots": ["the real chain"]}
    approved = sign_manifest(m, OMEGA, "approval", payload)
    bogus = {"evidence": {"verification": {}}, "roots": ["a chain that does not hold"]}
    fake = Signature("approval", other_omega.keyid, "A" * 86 + "==", bogus)
    hiding = dataclasses.replace(approved, signatures=(fake, *approved.signatures))
    keys = {**ed25519_keys(ROOT_V1, "omega"), other_omega.keyid: other_omega.public}
    found = evidence_of(hiding, keys)
    assert found == good
    assert check_chain(ROOT_V1, hiding, found).approvers == ("bob", "carol")
    offered = offered_roots(hiding.to_bytes().decode())
    assert ["the real chain"] in offered and len(offered) == 2


def test_self_approval_is_refused_unless_root_allows_it() -> None:
    m = manifest()
    approvers = ((BOB, "bob"), (ALICE, "alice"))
    ev = evidence(m, (BOB, "bob"), (ALICE, "alice"))
    strict = parse_root(signed_by(make_root(approvers=approvers), ROOT1, ROOT2))
    assert "may not approve it too" in _refused("approvals", m, ev, strict)
    lenient = parse_root(signed_by(make_root(approvers=approvers, allow_self=True), ROOT1, ROOT2))
    assert check_chain(lenient, m, ev).approvers == ("alice", "bob")


def test_who_asked_a_server_to_push_may_not_approve_it_either() -> None:
    """A review: through ``ashat serve``, whose key signs the release, the chain saw the
    server as the releaser, so no self-approval was only the server's rule. The person the
    server names in what it signs (``source.pushed_by``) is now one who released it."""
    m = manifest()
    pushed = dataclasses.replace(m, source={**m.source, "pushed_by": "Bob"}, signatures=())
    pushed = sign_manifest(pushed, ALICE)  # alice's key: here, the server's
    message = _refused("approvals", pushed, evidence(pushed, (BOB, "bob"), (CAROL, "carol")))
    assert "bob released hello-002 and may not approve it too" in message.lower()
    assert check_chain(ROOT_V1, m, evidence(m, (BOB, "bob"), (CAROL, "carol"))).approvers


def test_names_that_differ_only_in_case_are_one_person() -> None:
    """Approver names were compared as written: Bob's laptop key as "Bob" and his
    hardware key as "bob" made two approvers of one person, and alice's approving key
    named "Alice" was not her own approval. Names are compared ignoring case."""
    m = manifest()
    twice = parse_root(signed_by(make_root(approvers=((BOB, "Bob"), (CAROL, "bob"))), ROOT1, ROOT2))
    message = _refused("approvals", m, evidence(m, (BOB, "Bob"), (CAROL, "bob")), twice)
    assert "has 1 valid approval(s) of the 2" in message
    own = parse_root(signed_by(make_root(approvers=((BOB, "bob"), (DAVE, "Alice"))), ROOT1, ROOT2))
    assert "may not approve it too" in _refused(
        "approvals", m, evidence(m, (BOB, "bob"), (DAVE, "Alice")), own
    )


def test_a_removed_key_counts_for_nothing_and_a_retired_one_only_for_what_it_approved() -> None:
    before = manifest("hello-002", 2)
    v2 = make_root(2, approvers=((BOB, "bob"), (DAVE, "dave")), extra_keys=(tk(CAROL, "carol"),),
                   retired={CAROL.keyid: (before.digest(),)})  # fmt: skip
    root2 = update(ROOT_V1, signed_by(v2, ROOT1, ROOT2), NOW)
    check_chain(root2, before, evidence(before, (BOB, "bob"), (CAROL, "carol")))
    after = manifest("hello-003", 3)
    _refused("approvals", after, evidence(after, (BOB, "bob"), (CAROL, "carol")), root2)
    # a new release minted with an old sequence is not what carol approved (review finding)
    minted = manifest("evil-001", 1)
    _refused("approvals", minted, evidence(minted, (BOB, "bob"), (CAROL, "carol")), root2)
    check_chain(root2, after, evidence(after, (BOB, "bob"), (DAVE, "dave")))
    revoked = make_root(2, approvers=((BOB, "bob"), (DAVE, "dave")))
    root2b = update(ROOT_V1, signed_by(revoked, ROOT1, ROOT2), NOW)
    _refused("approvals", before, evidence(before, (BOB, "bob"), (CAROL, "carol")), root2b)


def test_one_key_under_two_encodings_is_one_key() -> None:
    """TUF's distinct keys: ROOT1 listed again as an OpenSSH key cannot sign twice."""
    import base64

    raw = ROOT1.public.raw
    blob = b"".join(len(x).to_bytes(4, "big") + x for x in (b"ssh-ed25519", raw))
    twin = TrustKey.ssh("ssh-ed25519 " + base64.b64encode(blob).decode(), "root-again")
    assert twin.keyid != ROOT1.keyid
    with pytest.raises(TrustRefused, match="one key under two encodings"):
        parse_root(make_root(extra_keys=(twin,)).to_bytes())


def test_a_servers_key_never_counts_as_an_approvers() -> None:
    """Root listed OMEGA's key (or PUBLIC's verifier key) among the approvers too: one
    server's key and one person shipped with k = 2. Such a root still loads (a history is
    signed and cannot be rewritten), but a server's key approves nothing."""
    m = manifest()
    for server in (OMEGA, VERIFIER):
        root = parse_root(
            signed_by(make_root(approvers=((BOB, "bob"), (server, "ops"))), ROOT1, ROOT2)
        )
        message = _refused("approvals", m, evidence(m, (BOB, "bob"), (server, "ops")), root)
        assert "1 valid approval(s) of the 2" in message


def test_root_signed_by_too_few_keys_is_refused() -> None:
    with pytest.raises(TrustRefused) as e:
        load_trusted(signed_by(make_root(), ROOT1), NOW)
    assert e.value.reason == "threshold"


def test_rotation_needs_a_threshold_of_the_old_root_keys_and_of_the_new() -> None:
    # v2 replaces ROOT2 by ROOT3: signed by the new keys only, it is refused
    v2 = make_root(2, roots=(ROOT1, ROOT3))
    with pytest.raises(TrustRefused) as e:
        update(ROOT_V1, signed_by(v2, ROOT1, ROOT3), NOW)
    assert e.value.reason == "threshold" and "version 1's" in e.value.message
    # by the old keys only, it is refused too: its own threshold is not met
    with pytest.raises(TrustRefused) as e:
        update(ROOT_V1, signed_by(v2, ROOT1, ROOT2), NOW)
    assert e.value.reason == "threshold" and "its own" in e.value.message
    assert update(ROOT_V1, signed_by(v2, ROOT1, ROOT2, ROOT3), NOW).version == 2


def test_an_older_a_skipped_or_an_expired_root_is_refused() -> None:
    v2 = parse_root(signed_by(make_root(2), ROOT1, ROOT2))
    for version in (1, 2, 4):  # older, the same, one skipped
        data = signed_by(make_root(version), ROOT1, ROOT2)
        with pytest.raises(TrustRefused) as e:
            update(v2, data, NOW)
        assert e.value.reason == "version"
    expired = signed_by(make_root(3, expires=NOW - dt.timedelta(days=1)), ROOT1, ROOT2)
    with pytest.raises(TrustRefused) as e:
        update(v2, expired, NOW)
    assert e.value.reason == "expired"
    # an expired version in the middle of a chain is fine; the last must be current
    v3_expired = signed_by(make_root(3, expires=NOW - dt.timedelta(days=1)), ROOT1, ROOT2)
    v4 = signed_by(make_root(4), ROOT1, ROOT2)
    assert update_chain(v2, [v3_expired, v4], NOW).version == 4


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["signed"].update(version=0),
        lambda d: d["signed"]["roles"].pop("omega"),
        lambda d: d["signed"]["roles"]["approvers"].update(threshold=3),
        lambda d: d["signed"]["roles"]["approvers"]["keyids"].append("0" * 16),
        lambda d: d["signed"].update(surprise=True),
        lambda d: d["signed"]["keys"][BOB.keyid].update(type="rsa"),
        lambda d: d["signed"]["keys"].update({"0" * 16: d["signed"]["keys"][BOB.keyid]}),
        lambda d: d.update(signatures="none"),
    ],
    ids=["version 0", "a role missing", "k over the approvers", "an unknown keyid",
         "an unknown field", "an unknown key type", "a key under another id", "bad signatures"],
)  # fmt: skip
def test_a_malformed_root_is_refused_naming_what_is_wrong(change: Any) -> None:
    import json

    doc = json.loads(signed_by(make_root(), ROOT1, ROOT2))
    change(doc)
    with pytest.raises(TrustRefused) as e:
        parse_root(json.dumps(doc).encode())
    assert e.value.reason == "malformed" and e.value.message.startswith("root.json refused: ")


def test_a_root_round_trips_and_roles_are_all_there() -> None:
    again = parse_root(ROOT_V1.to_bytes())
    assert again == ROOT_V1 and set(again.roles) == set(ROLES)
    assert dataclasses.replace(again, version=2).digest() != again.digest()


def test_junk_root_chains_in_a_poll_answer_are_logged_once_and_bounded(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A review answered a mainframe's poll with a manifest carrying 60,000 'approval'
    signatures, each offering a junk root: before anything was checked, each wrote a
    warning (32 MB of log in 30 s, again at every poll). A poll answer's chains are now
    offered once each, 16 at most, with one line for those not taken, repeated only when
    the reason changes."""
    import json
    import logging
    import os

    from ashat.agent.config import AgentConfig, AgentRole, MainframeConfig
    from ashat.agent.core import Agent
    from ashat.bundle.manifest import Signature
    from ashat.fleet.mainframe import Mainframe

    root_file = tmp_path / "1.root.json"
    root_file.write_bytes(signed_by(make_root(), ROOT1, ROOT2))
    mf = MainframeConfig(
        omega_url="http://omega.test:8700", license="license.x.y", mainframe_id="mf-1",
        license_id="lic-1", trusted_omega={OMEGA.keyid: OMEGA.public},
    )  # fmt: skip
    config = AgentConfig(
        role=AgentRole.MAINFRAME, data=tmp_path / "data", host="127.0.0.1", port=0, token="t",
        trusted={ALICE.keyid: ALICE.public}, mainframe=mf, root_file=root_file,
        app_user=os.environ.get("ASHAT_APP_USER"),
    )  # fmt: skip
    agent = Agent(config)
    agent.open()
    try:
        loop = Mainframe(agent, mf)
        signed = sign_manifest(manifest(), ALICE)
        junk = [
            Signature("approval", f"{i:016x}", "sig", {"roots": [{"version": 2, "n": i}]})
            for i in range(2000)
        ]
        doc = json.loads(signed.to_bytes())
        doc["signatures"] += [s.to_dict() for s in junk]
        text = json.dumps(doc)
        caplog.set_level(logging.WARNING)
        for _ in range(3):  # three polls
            loop._offer_roots(text)
        lines = [r.getMessage() for r in caplog.records if "root chain" in r.getMessage()]
        assert len(lines) == 1, lines[:3]
        assert "more than 16 chains offered at once" in lines[0] or "17 root chain" in lines[0]
    finally:
        agent.shutdown()
