"""Passkeys as approver keys (ashat.trust.webauthn): registrations read into a root's key
line, and assertions checked offline, with real P-256 and Ed25519 keys and the exact byte
layouts of W3C WebAuthn; every field a hostile browser or server could change is refused."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ashat.trust.keys import TrustKey
from ashat.trust.webauthn import (
    Passkey,
    WebAuthnError,
    assertion_signature,
    b64url,
    challenge_for,
    public_from_registration,
    verify_assertion,
)

RP = "ctl.example"
ORIGIN = "https://ctl.example"
NS, MSG = "ashat-approval", b'{"approver":"bob"}'
CRED = b"credential-1"


def cose_of(key: Any) -> dict[int, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.public_key().public_numbers()
        return {1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")}
    raw = key.public_key().public_bytes_raw()
    return {1: 1, 3: -8, -1: 6, -2: raw}


def registration(
    key: Any, challenge: bytes, *, flags: int = 0x45, rp: str = RP,
    kind: str = "webauthn.create", origin: str = ORIGIN,
) -> tuple[str, str]:  # fmt: skip
    auth = (
        hashlib.sha256(rp.encode()).digest() + bytes([flags]) + (0).to_bytes(4, "big")
        + bytes(16) + len(CRED).to_bytes(2, "big") + CRED + cbor2.dumps(cose_of(key))
    )  # fmt: skip
    client = json.dumps({"type": kind, "challenge": b64url(challenge), "origin": origin})
    att = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth})
    return b64url(att), b64url(client.encode())


def assertion(key: Any, *, challenge: bytes | None = None, rp: str = RP, flags: int = 0x05,
              kind: str = "webauthn.get", origin: str = ORIGIN,
              cross_origin: bool = False) -> str:  # fmt: skip
    auth = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + (7).to_bytes(4, "big")
    client = json.dumps({
        "type": kind, "challenge": b64url(challenge or challenge_for(NS, MSG)), "origin": origin,
        "crossOrigin": cross_origin,
    }).encode()  # fmt: skip
    signed = auth + hashlib.sha256(client).digest()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(signed)
    return assertion_signature(b64url(auth), b64url(client), b64url(sig))


@pytest.fixture(params=["ES256", "EdDSA"])
def key(request: pytest.FixtureRequest) -> Any:
    if request.param == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def registered(key: Any) -> Passkey:
    att, client = registration(key, b"c" * 32)
    passkey, cred = public_from_registration(
        att, client, challenge=b"c" * 32, rp_id=RP, origin=ORIGIN
    )
    assert cred == b64url(CRED)
    return passkey


def test_a_registered_passkey_becomes_a_root_key_and_its_assertions_verify(key: Any) -> None:
    passkey = registered(key)
    trust_key = TrustKey.webauthn(passkey.to_text(), "bob")
    assert trust_key.keyid == passkey.keyid and trust_key.type == "webauthn"
    assert TrustKey.from_json(trust_key.keyid, trust_key.to_json()) == trust_key
    assert trust_key.verify(NS, MSG, assertion(key))


@pytest.mark.parametrize(
    ("what", "over"),
    [
        ("another statement", {"challenge": challenge_for(NS, b"other")}),
        ("another namespace", {"challenge": challenge_for("ashat-root", MSG)}),
        ("another relying party", {"rp": "evil.example"}),
        ("another origin", {"origin": "https://evil.example"}),
        ("a subdomain of the relying party", {"origin": "https://evil.ctl.example"}),
        ("another scheme", {"origin": "http://ctl.example"}),
        ("another port", {"origin": "https://ctl.example:8443"}),
        ("a touch without user verification", {"flags": 0x01}),
        ("no user presence", {"flags": 0x04}),
        ("a registration, not an assertion", {"kind": "webauthn.create"}),
    ],
)
def test_an_assertion_for_anything_else_is_refused(key: Any, what: str, over: Any) -> None:
    assert not verify_assertion(registered(key), NS, MSG, assertion(key, **over)), what


def test_another_key_a_tampered_or_malformed_signature_is_refused(key: Any) -> None:
    passkey = registered(key)
    other: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else ec.generate_private_key(ec.SECP256R1())
    )
    assert not verify_assertion(passkey, NS, MSG, assertion(other))
    good = json.loads(assertion(key))
    good["signature"] = good["signature"][:-4] + "AAAA"
    assert not verify_assertion(passkey, NS, MSG, json.dumps(good))
    for bad in ("", "{}", "not json", "[]", json.dumps({"authenticator_data": "!!"}), 7, None):
        assert not verify_assertion(passkey, NS, MSG, bad)
    junk = json.loads(assertion(key))  # another spelling of the same bytes is not accepted
    junk["signature"] = junk["signature"][:8] + "*" + junk["signature"][8:]
    assert not verify_assertion(passkey, NS, MSG, json.dumps(junk))
    cross = json.loads(assertion(key))
    client = json.loads(base64.urlsafe_b64decode(cross["client_data_json"] + "=="))
    assert not verify_assertion(passkey, NS, MSG, assertion(key, cross_origin=True))
    assert client["origin"] == ORIGIN


def test_a_passkey_line_names_an_exact_origin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    line = registered(key).to_text()
    assert line.split()[2] == ORIGIN
    for origin in ("http://ctl.example", "https://ctl.example/path", "ftp://x", "ctl.example"):
        with pytest.raises(WebAuthnError, match="not an origin"):
            Passkey.from_text(line.replace(ORIGIN, origin))


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"kind": "webauthn.get"}, "webauthn.create"),
        ({"origin": "https://evil.example"}, "comes from"),
        ({"rp": "evil.example"}, "another site"),
        ({"flags": 0x41}, "verify the user"),
    ],
)
def test_a_bad_registration_is_refused_naming_why(over: Any, needle: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    att, client = registration(key, b"c" * 32, **over)
    with pytest.raises(WebAuthnError, match=needle):
        public_from_registration(att, client, challenge=b"c" * 32, rp_id=RP, origin=ORIGIN)
    att, client = registration(key, b"c" * 32)
    with pytest.raises(WebAuthnError, match="another challenge"):
        public_from_registration(att, client, challenge=b"d" * 32, rp_id=RP, origin=ORIGIN)
    with pytest.raises(WebAuthnError, match="not a WebAuthn attestation"):
        public_from_registration("AAAA", client, challenge=b"c" * 32, rp_id=RP, origin=ORIGIN)


def test_passkey_approvals_count_only_up_to_roots_cap() -> None:
    """k - 1 by default: a browser signs what the dashboard's server hands it, so at least
    one approver signs on their own machine (review finding)."""
    import dataclasses

    from test_trust_chain import (
        BOB,
        ROOT1,
        ROOT2,
        ROOT_V1,
        make_root,
        manifest,
        signed_by,
        verification,
    )  # fmt: skip

    from ashat.trust.chain import check_chain
    from ashat.trust.root import TrustRefused, parse_root
    from ashat.trust.statements import APPROVAL_NAMESPACE, approval_signed, digest, sign

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    passkeys = [registered(k) for k in keys]
    extra = tuple(TrustKey.webauthn(p.to_text(), f"pk{i}") for i, p in enumerate(passkeys))
    base = make_root(approvers=((BOB, "bob"),), k=2, extra_keys=extra)
    roles = dict(base.roles)
    roles["approvers"] = dataclasses.replace(
        roles["approvers"], keyids=(BOB.keyid, *(t.keyid for t in extra))
    )
    root = parse_root(signed_by(dataclasses.replace(base, roles=roles), ROOT1, ROOT2))
    assert root.passkey_cap() == 1 and ROOT_V1.passkey_cap() == 1
    m = manifest()
    v = verification(m)

    def by(name: str, signer: Any) -> dict[str, Any]:
        signed = approval_signed(
            update_id=m.update_id, sequence=m.sequence, manifest_digest=m.digest(),
            verification_digest=digest(v), approver=name, at="2030-05-01T11:30:00Z", comment=None,
        )  # fmt: skip
        return sign(signed, APPROVAL_NAMESPACE, signer)

    def passkey_signer(i: int) -> Any:
        return lambda ns, msg: (
            passkeys[i].keyid,
            assertion(keys[i], challenge=challenge_for(ns, msg)),
        )

    from test_trust_chain import signer as ed_signer

    two_passkeys = [by("pk0", passkey_signer(0)), by("pk1", passkey_signer(1))]
    with pytest.raises(TrustRefused, match="of which root counts 1"):
        check_chain(root, m, {"verification": v, "approvals": two_passkeys})
    one_each = [by("bob", ed_signer(BOB)), by("pk0", passkey_signer(0))]
    assert check_chain(root, m, {"verification": v, "approvals": one_each}).approvers == (
        "bob", "pk0",
    )  # fmt: skip


def test_a_key_off_the_curve_or_deeply_nested_client_data_is_refused_not_a_500() -> None:
    """A review: a registration whose ES256 key is not a point of P-256, or whose client
    data is 12,000 nested brackets, answered 500 (ValueError, RecursionError) to any
    signed-in user; each is now a refusal naming why."""
    off = {1: 2, 3: -7, -1: 1, -2: (1).to_bytes(32, "big"), -3: (2).to_bytes(32, "big")}
    auth = (
        hashlib.sha256(RP.encode()).digest() + bytes([0x45]) + (0).to_bytes(4, "big")
        + bytes(16) + len(CRED).to_bytes(2, "big") + CRED + cbor2.dumps(off)
    )  # fmt: skip
    client = json.dumps({"type": "webauthn.create", "challenge": b64url(b"c" * 32),
                         "origin": ORIGIN})  # fmt: skip
    att = b64url(cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth}))
    with pytest.raises(WebAuthnError, match="not a point of P-256"):
        public_from_registration(
            att, b64url(client.encode()), challenge=b"c" * 32, rp_id=RP, origin=ORIGIN
        )
    deep = b64url(b"[" * 12000)
    with pytest.raises(WebAuthnError, match="not a WebAuthn attestation"):
        public_from_registration(att, deep, challenge=b"c" * 32, rp_id=RP, origin=ORIGIN)
