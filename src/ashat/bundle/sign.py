"""Signing manifests and checking their signatures: pure functions of bytes and keys.

What a signature covers (:func:`signed_message`):

- a ``release`` signature without payload (ALPHA's) signs ``m.signing_bytes()``, the
  canonical manifest without its ``signatures`` field (DESIGN §4);
- every other signature — any other role, or any payload, such as OMEGA's approval
  carrying the approval record — signs the canonical JSON of
  ``{"manifest": m.digest(), "role": role, "payload": payload}``. The role is inside the
  signed bytes, so a signature cannot be relabelled from one role to another, even when
  the same key is trusted for both.

Trust: ``trusted`` maps key id → :class:`PublicKey` for keys trusted in every required
role; ``trusted_by_role`` (role → that same kind of map) *replaces* ``trusted`` for the
roles it names, so a server can trust ALPHA only for ``release`` and OMEGA only for
``approval``. Lookups use each key's own key id, so a mislabelled map cannot alias keys.
Nothing here reads files or clocks; loading keys is :mod:`ashat.bundle.keys`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from ashat.bundle.errors import BadSignature, MissingSignature, UnknownKey
from ashat.bundle.keys import PublicKey, SigningKey
from ashat.bundle.manifest import MAX_MANIFEST_BYTES, Manifest, Signature, parse_manifest
from ashat.canonical import canonical_json

RELEASE_ROLE = "release"

TrustedKeys = Mapping[str, PublicKey]  # key id -> public key


def signed_message(m: Manifest, role: str, payload: Mapping[str, Any] | None) -> bytes:
    """The exact bytes a signature of ``role`` (with ``payload``) over ``m`` signs."""
    if role == RELEASE_ROLE and payload is None:
        return m.signing_bytes()
    body = None if payload is None else dict(payload)
    return canonical_json({"manifest": m.digest(), "role": role, "payload": body})


def sign_manifest(
    m: Manifest,
    key: SigningKey,
    role: str = RELEASE_ROLE,
    payload: Mapping[str, Any] | None = None,
) -> Manifest:
    """A copy of ``m`` carrying ``key``'s signature for ``role`` (replacing an older one).

    Raises :class:`ManifestInvalid` if the role or payload is not allowed in a manifest.
    """
    # Build the Signature first so the payload is normalized (as parsing will give it back)
    # before it is signed.
    draft = Signature(role, key.keyid, "", None if payload is None else dict(payload))
    sig = key.sign(signed_message(m, draft.role, draft.payload))
    signed = Signature(role, key.keyid, base64.b64encode(sig).decode("ascii"), draft.payload)
    return m.with_signature(signed)


def _decode(sig: str) -> bytes | None:
    """The signature bytes, or None unless ``sig`` is their one canonical base64 spelling.

    A lenient decoder ignores the unused low bits of the last character, so four
    spellings would decode to one signature: a manifest changed there would still verify.
    """
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == sig else None


def _index(keys: TrustedKeys) -> dict[str, PublicKey]:
    return {pk.keyid: pk for pk in keys.values()}


def check_signatures(
    m: Manifest,
    trusted: TrustedKeys,
    required_roles: Iterable[str] = (RELEASE_ROLE,),
    *,
    trusted_by_role: Mapping[str, TrustedKeys] | None = None,
) -> None:
    """Check that every required role has a verifying signature by a key trusted for it.

    Signatures by untrusted keys, and signatures of roles not required, are ignored.
    For each role, in order: none of that role → :class:`MissingSignature`; only untrusted
    keys → :class:`UnknownKey`; trusted keys but none verifies (bad base64, wrong bytes,
    tampered manifest) → :class:`BadSignature`.
    """
    roles = tuple(required_roles)
    if not roles:
        raise ValueError("required_roles is empty: that would accept an unsigned manifest")
    by_role = trusted_by_role or {}
    default = _index(trusted)
    for role in roles:
        keys = _index(by_role[role]) if role in by_role else default
        of_role = [s for s in m.signatures if s.role == role]
        if not of_role:
            raise MissingSignature(f"manifest has no {role!r} signature", role=role)
        candidates = [s for s in of_role if s.keyid in keys]
        if not candidates:
            ids = tuple(s.keyid for s in of_role)
            hint = (
                " (an agent trusts the release keys of its --trust FILE.pub options, or of "
                "its root's releasers)"
                if role == RELEASE_ROLE
                else ""
            )
            raise UnknownKey(
                f"{role!r} signature(s) by key(s) {', '.join(ids)}, none trusted for "
                f"{role!r}{hint}",
                role=role,
                keyids=ids,
            )
        ok = any(signature_verifies(m, s, keys[s.keyid]) for s in candidates)
        if not ok:
            ids = tuple(s.keyid for s in candidates)
            raise BadSignature(
                f"{role!r} signature by key {', '.join(ids)} does not verify "
                "(manifest altered after signing, or a corrupt signature)",
                role=role,
                keyids=ids,
            )


def signature_verifies(m: Manifest, s: Signature, key: PublicKey) -> bool:
    """Whether ``s`` (one of ``m``'s signatures) is ``key``'s over ``m`` and its payload."""
    raw = _decode(s.sig)
    return raw is not None and key.verify(raw, signed_message(m, s.role, s.payload))


def verify_manifest(
    data: bytes,
    trusted: TrustedKeys,
    required_roles: Iterable[str] = (RELEASE_ROLE,),
    *,
    trusted_by_role: Mapping[str, TrustedKeys] | None = None,
    max_bytes: int = MAX_MANIFEST_BYTES,
) -> Manifest:
    """Parse ``data`` and check its signatures; return the manifest only if all pass.

    Raises any :class:`BundleError` of :func:`parse_manifest`, or a
    :class:`SignatureError` leaf from :func:`check_signatures`.
    """
    m = parse_manifest(data, max_bytes=max_bytes)
    check_signatures(m, trusted, required_roles, trusted_by_role=trusted_by_role)
    return m
