"""Signed envelopes: a JSON payload and an Ed25519 signature in one printable token.

``<kind>.<base64url(canonical JSON payload)>.<base64url(signature)>``, where the signature
covers ``<kind>.`` plus the payload bytes, so a token of one kind (a license) can never be
replayed as another (a poll answer). The payload names the signing key (``keyid``).
Used for licenses and for OMEGA's directives to mainframes. Pure: bytes and keys in,
payload or :class:`EnvelopeError` out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from ashat.bundle.keys import PublicKey, SigningKey
from ashat.canonical import canonical_json
from ashat.errors import InvalidInput

MAX_TOKEN_CHARS = 64 * 1024


class EnvelopeError(InvalidInput):
    """A token that is malformed, of another kind, or not signed by a trusted key."""

    kind = "envelope"


class Forged(EnvelopeError):
    kind = "forged"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url, accepting only the canonical spelling: the stdlib
    decoder skips stray characters and ignores the last character's unused bits, which
    would let an altered token pass as the one that was signed."""
    if not _B64URL_RE.fullmatch(text):
        raise binascii.Error("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise binascii.Error("not the canonical base64url of its bytes")
    return data


def seal(kind: str, payload: Mapping[str, Any], key: SigningKey) -> str:
    """Sign ``payload`` (which gains ``keyid``) as a token of ``kind``."""
    if not kind.isidentifier() or "." in kind:
        raise ValueError(f"bad envelope kind {kind!r}")
    body = canonical_json({**payload, "keyid": key.keyid})
    sig = key.sign(kind.encode("ascii") + b"." + body)
    return f"{kind}.{_b64(body)}.{_b64(sig)}"


def _open(token: str, kind: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Split and decode ``token``: its payload, the payload bytes and the signature.

    Raises :class:`EnvelopeError` (malformed, wrong kind); checks no signature.
    """
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise EnvelopeError(f"{kind} token is over {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise EnvelopeError(f"not a {kind} token (expected three dot-separated parts)")
    got_kind, body_b64, sig_b64 = parts
    if got_kind != kind:
        raise EnvelopeError(f"not a {kind} token (it is a {got_kind[:40]!r} token)")
    try:
        body, sig = _unb64(body_b64), _unb64(sig_b64)
        payload = json.loads(body)
    except (binascii.Error, ValueError, RecursionError) as e:  # nested deeper than we parse
        raise EnvelopeError(f"{kind} token is not valid base64 JSON") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("keyid"), str):
        raise EnvelopeError(f"{kind} token payload is not an object naming its keyid")
    if canonical_json(payload) != body:
        raise EnvelopeError(f"{kind} token payload is not canonical JSON")
    return payload, body, sig


def unseal(token: str, kind: str, trusted: Mapping[str, PublicKey]) -> dict[str, Any]:
    """The payload of ``token`` if it is a ``kind`` token signed by a key in ``trusted``.

    ``trusted`` maps key ids to public keys. Raises :class:`EnvelopeError` (malformed,
    wrong kind) or :class:`Forged` (unknown key, bad signature).
    """
    payload, body, sig = _open(token, kind)
    public = trusted.get(payload["keyid"])
    if public is None:
        raise Forged(f"{kind} is signed by key {payload['keyid'][:16]!r}, which is not trusted")
    if not public.verify(sig, kind.encode("ascii") + b"." + body):
        raise Forged(f"{kind} signature does not verify: the token was altered or forged")
    return payload


def peek_payload(token: str, kind: str) -> dict[str, Any]:
    """The payload of a well-formed ``kind`` token, its signature NOT checked.

    For a holder that cannot check the signature and only needs to read its own token (a
    mainframe reading its mainframe id from its license, which OMEGA authenticates), or
    for naming what a refused token claimed. Never a basis for trust. Raises
    :class:`EnvelopeError`.
    """
    return _open(token, kind)[0]


def trusted_map(keys: list[PublicKey]) -> dict[str, PublicKey]:
    return {k.keyid: k for k in keys}
