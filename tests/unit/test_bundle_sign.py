"""Signing and verifying manifests (ashat.bundle.sign): trusted, untrusted, missing and
tampered signatures, roles, and — by property — any single change to a signed manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ashat.bundle.errors import (
    BadSignature,
    BundleError,
    ManifestTooLarge,
    MissingSignature,
    SignatureError,
    UnknownKey,
)
from ashat.bundle.keys import PublicKey, SigningKey
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest, Signature
from ashat.bundle.sign import check_signatures, sign_manifest, signed_message, verify_manifest
from ashat.canonical import canonical_json

ALPHA = SigningKey.generate()
OMEGA = SigningKey.generate()
MALLORY = SigningKey.generate()
APPROVAL = {"approved_by": "olga", "at": "2030-01-02T00:00:00+00:00", "checks": ["smoke", 3]}


def trust(*keys: SigningKey) -> dict[str, PublicKey]:
    return {k.keyid: k.public for k in keys}


def make() -> Manifest:
    def blob(path: str, content: bytes, mode: int = 0o644) -> FileEntry:
        return FileEntry(path, hashlib.sha256(content).hexdigest(), len(content), mode)

    return Manifest(
        schema=SCHEMA,
        update_id="u-7",
        sequence=7,
        description="fix the login page",
        created_at="2030-01-01T12:00:00+00:00",
        source={"kind": "git", "commit": "c" * 40, "ref": "main"},
        app={"name": "web", "port": 8080, "env": {"DEBUG": False}, "hosts": ["a", "b"]},
        files=(
            blob("index.html", b"<html>"),
            blob("bin/start", b"#!/bin/sh", 0o755),
            FileEntry.symlink("latest", "index.html"),
        ),
    )


def _mutate_json(data: bytes, edit: Any) -> bytes:
    d = json.loads(data)
    edit(d)
    return json.dumps(d).encode()


# --- examples --------------------------------------------------------------------------


def test_good_signature_verifies() -> None:
    signed = sign_manifest(make(), ALPHA)
    (sig,) = signed.signatures
    assert (sig.role, sig.keyid, sig.payload) == ("release", ALPHA.keyid, None)
    # ALPHA's release signature is over the canonical manifest without signatures.
    assert ALPHA.public.verify(base64.b64decode(sig.sig), make().signing_bytes())
    assert verify_manifest(signed.to_bytes(), trust(ALPHA)) == signed


def test_tampered_after_signing_is_bad_signature() -> None:
    data = sign_manifest(make(), ALPHA).to_bytes()

    def edit(d: dict[str, Any]) -> None:
        d["files"][0]["sha256"] = hashlib.sha256(b"<evil>").hexdigest()

    with pytest.raises(BadSignature) as ei:
        verify_manifest(_mutate_json(data, edit), trust(ALPHA))
    assert ei.value.role == "release" and ei.value.keyids == (ALPHA.keyid,)


def test_untrusted_key_is_unknown_key() -> None:
    data = sign_manifest(make(), MALLORY).to_bytes()
    with pytest.raises(UnknownKey) as ei:
        verify_manifest(data, trust(ALPHA))
    assert MALLORY.keyid in ei.value.message


def test_unsigned_is_missing_signature() -> None:
    with pytest.raises(MissingSignature):
        verify_manifest(make().to_bytes(), trust(ALPHA))


def test_untrusted_signature_beside_a_good_one_is_ignored() -> None:
    signed = sign_manifest(sign_manifest(make(), MALLORY), ALPHA)
    assert verify_manifest(signed.to_bytes(), trust(ALPHA)) == signed


@pytest.mark.parametrize("bad", ["not base64!!", "AAAA", "", base64.b64encode(b"\0" * 64).decode()])
def test_corrupt_signature_bytes_are_bad_signature(bad: str) -> None:
    m = make().with_signature(Signature("release", ALPHA.keyid, bad))
    with pytest.raises(BadSignature):
        verify_manifest(m.to_bytes(), trust(ALPHA))


def test_approval_signature_with_payload() -> None:
    m = sign_manifest(sign_manifest(make(), ALPHA), OMEGA, role="approval", payload=APPROVAL)
    approval = next(s for s in m.signatures if s.role == "approval")
    assert approval.payload == APPROVAL
    expected = canonical_json({"manifest": m.digest(), "role": "approval", "payload": APPROVAL})
    assert signed_message(m, "approval", APPROVAL) == expected
    assert OMEGA.public.verify(base64.b64decode(approval.sig), expected)

    by_role = {"release": trust(ALPHA), "approval": trust(OMEGA)}
    roles = ("release", "approval")
    got = verify_manifest(m.to_bytes(), {}, roles, trusted_by_role=by_role)
    assert got == m

    # Each role only trusts its own key: ALPHA cannot approve, OMEGA cannot release.
    self_approved = sign_manifest(sign_manifest(make(), ALPHA), ALPHA, "approval", APPROVAL)
    with pytest.raises(UnknownKey) as ei:
        verify_manifest(self_approved.to_bytes(), {}, roles, trusted_by_role=by_role)
    assert ei.value.role == "approval"
    # Without the approval, a release-only check still passes.
    assert verify_manifest(self_approved.to_bytes(), {}, trusted_by_role=by_role)


def test_changed_payload_is_bad_signature() -> None:
    data = sign_manifest(make(), OMEGA, role="approval", payload=APPROVAL).to_bytes()

    def edit(d: dict[str, Any]) -> None:
        d["signatures"][0]["payload"]["approved_by"] = "mallory"

    with pytest.raises(BadSignature):
        verify_manifest(_mutate_json(data, edit), trust(OMEGA), ("approval",))


def test_signature_cannot_be_relabelled_to_another_role() -> None:
    # The same key trusted for both roles: the role is still bound by the signed bytes.
    release = sign_manifest(make(), ALPHA)
    relabelled = make().with_signature(
        Signature("approval", ALPHA.keyid, release.signatures[0].sig)
    )
    with pytest.raises(BadSignature):
        verify_manifest(relabelled.to_bytes(), trust(ALPHA), ("approval",))
    approval = sign_manifest(make(), ALPHA, role="approval")
    as_release = make().with_signature(
        Signature("release", ALPHA.keyid, approval.signatures[0].sig)
    )
    with pytest.raises(BadSignature):
        verify_manifest(as_release.to_bytes(), trust(ALPHA))


def test_trusted_map_is_indexed_by_each_keys_own_id() -> None:
    data = sign_manifest(make(), ALPHA).to_bytes()
    assert verify_manifest(data, {"mislabelled": ALPHA.public})
    with pytest.raises(UnknownKey):
        verify_manifest(data, {ALPHA.keyid: MALLORY.public})


def test_resigning_replaces_the_old_signature() -> None:
    once = sign_manifest(make(), ALPHA)
    twice = sign_manifest(once, ALPHA)
    assert len(twice.signatures) == 1


def test_no_required_roles_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check_signatures(make(), trust(ALPHA), ())


def test_size_limit_applies_before_signatures() -> None:
    data = sign_manifest(make(), ALPHA).to_bytes()
    with pytest.raises(ManifestTooLarge):
        verify_manifest(data, trust(ALPHA), max_bytes=100)


def test_signature_errors_are_bundle_errors_with_exit_2() -> None:
    for cls in (BadSignature, MissingSignature, UnknownKey):
        assert issubclass(cls, SignatureError)
        assert issubclass(cls, BundleError)
    with pytest.raises(SignatureError) as ei:
        verify_manifest(make().to_bytes(), trust(ALPHA))
    assert ei.value.exit_code == 2
    assert ei.value.to_json()["details"] == {"role": "release"}


# --- property: any single change to a signed manifest is refused ----------------------

SIGNED = sign_manifest(sign_manifest(make(), ALPHA), OMEGA, role="approval", payload=APPROVAL)
SIGNED_DICT = SIGNED.to_dict()
ROLES = ("release", "approval")
BY_ROLE = {"release": trust(ALPHA), "approval": trust(OMEGA)}

Path_ = tuple[Any, ...]


def _walk(obj: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """Every node (path, value) below ``obj``, containers included."""
    out: list[tuple[Path_, Any]] = [(path, obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _walk(v, (*path, i))
    return out


NODES = _walk(SIGNED_DICT)
LEAVES = [(p, v) for p, v in NODES if p and not isinstance(v, dict | list)]
DICTS = [p for p, v in NODES if isinstance(v, dict)]
KEYS = [(*p, k) for p, v in NODES if isinstance(v, dict) for k in v]
LIST_ITEMS = [p for p, _ in NODES if p and isinstance(p[-1], int)]

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=70),
)


def _parent(d: Any, path: Path_) -> Any:
    for k in path[:-1]:
        d = d[k]
    return d


@st.composite
def mutations(draw: st.DrawFn) -> dict[str, Any]:
    d = json.loads(json.dumps(SIGNED_DICT))
    kind = draw(st.sampled_from(["replace", "tweak", "delete", "add", "drop"]))
    if kind in ("replace", "tweak"):
        path, old = draw(st.sampled_from(LEAVES))
        if kind == "tweak" and isinstance(old, str):
            new: Any = old + draw(st.text(min_size=1, max_size=3))
        elif kind == "tweak" and isinstance(old, int) and not isinstance(old, bool):
            new = old + draw(st.sampled_from([-1, 1, 8]))
        else:
            new = draw(_scalar.filter(lambda v: canonical_json(v) != canonical_json(old)))
        _parent(d, path)[path[-1]] = new
    elif kind == "delete":
        path = draw(st.sampled_from(KEYS))
        del _parent(d, path)[path[-1]]
    elif kind == "add":
        path = draw(st.sampled_from(DICTS))
        target = d
        for k in path:
            target = target[k]
        key = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in target))
        target[key] = draw(_scalar)
    else:
        path = draw(st.sampled_from(LIST_ITEMS))
        del _parent(d, path)[path[-1]]
    return d


def test_the_unmutated_signed_manifest_verifies() -> None:
    data = json.dumps(SIGNED_DICT).encode()
    assert verify_manifest(data, {}, ROLES, trusted_by_role=BY_ROLE) == SIGNED


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_any_single_mutation_of_a_signed_manifest_is_refused(mutated: dict[str, Any]) -> None:
    with pytest.raises(BundleError):
        verify_manifest(json.dumps(mutated).encode(), {}, ROLES, trusted_by_role=BY_ROLE)


# --- property: build -> canonical JSON -> parse -> verify round-trips ------------------

_name = st.text(alphabet="abcXYZ019._-é", min_size=1, max_size=6).filter(
    lambda c: c not in (".", "..")
)
_tree = st.dictionaries(
    st.lists(_name, min_size=1, max_size=3).map("/".join), st.binary(max_size=64), max_size=6
)


def _write_tree(root: Path, files: dict[str, bytes]) -> bool:
    """Write ``files`` under ``root``; False if two paths cannot coexist (a file as a parent,
    or names equal ignoring case, which the build refuses on purpose)."""
    from ashat.bundle.paths import casefold_collisions

    paths = sorted(files)
    if casefold_collisions(paths) or any(q.startswith(p + "/") for p in paths for q in paths):
        return False
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return True


@settings(max_examples=40, deadline=None)
@given(files=_tree, sequence=st.integers(1, 2**53), description=st.text(min_size=1, max_size=40))
def test_a_built_tree_signs_and_verifies_to_the_same_manifest(
    files: dict[str, bytes], sequence: int, description: str
) -> None:
    from hypothesis import assume

    from ashat.bundle import build_from_dir

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        assume(_write_tree(root, files))
        built = build_from_dir(
            root,
            update_id="u-1",
            sequence=sequence,
            description=description,
            app={"run": "python3 app.py"},
            created_at="2030-01-01T12:00:00+00:00",
        )
        signed = sign_manifest(built.manifest, ALPHA)
        data = signed.to_bytes()
        assert data == canonical_json(json.loads(data))  # canonical: sorted, compact, UTF-8
        back = verify_manifest(data, trust(ALPHA))
        assert back == signed and back.to_bytes() == data and back.digest() == signed.digest()
        got = {e.path: (e.sha256, e.size) for e in back.files}
        assert got == {p: (hashlib.sha256(c).hexdigest(), len(c)) for p, c in files.items()}
        for e in back.files:  # each blob the build names holds exactly that content
            assert hashlib.sha256(Path(built.blobs[e.sha256]).read_bytes()).hexdigest() == e.sha256


# --- property: any single byte changed, inserted or removed is refused ------------------

SIGNED_BYTES = SIGNED.to_bytes()


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(SIGNED_BYTES)
    at = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["replace", "insert", "delete", "flip"]))
    if how == "replace":
        data[at] = draw(st.integers(0, 255).filter(lambda b: b != SIGNED_BYTES[at]))
    elif how == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "insert":
        data.insert(at, draw(st.integers(0, 255)))
    else:
        del data[at]
    return bytes(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(byte_mutations())
def test_any_byte_mutation_of_a_signed_manifest_is_refused(mutated: bytes) -> None:
    """Refused, or — only for bytes JSON ignores, as a space between tokens — read back as
    exactly the manifest that was signed: no accepted manifest differs from it."""
    try:
        m = verify_manifest(mutated, {}, ROLES, trusted_by_role=BY_ROLE)
    except BundleError:
        return
    assert m.to_bytes() == SIGNED_BYTES


@pytest.mark.parametrize("role", ROLES)
def test_another_spelling_of_the_same_signature_is_refused(role: str) -> None:
    """base64 leaves the last character's low bits unused: a lenient decoder reads four
    spellings as one signature. Only the canonical one is accepted."""
    d = json.loads(SIGNED_BYTES)
    sig = next(s for s in d["signatures"] if s["role"] == role)
    raw = base64.b64decode(sig["sig"])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    i = len(sig["sig"]) - 3  # 64 bytes: 86 characters then "=="; the 86th carries 2 bits
    twins = [
        sig["sig"][:i] + c + sig["sig"][i + 1 :]
        for c in alphabet
        if c != sig["sig"][i] and base64.b64decode(sig["sig"][:i] + c + sig["sig"][i + 1 :]) == raw
    ]
    assert twins  # the stdlib really is lenient here
    sig["sig"] = twins[0]
    with pytest.raises(BadSignature):
        verify_manifest(canonical_json(d), {}, ROLES, trusted_by_role=BY_ROLE)
