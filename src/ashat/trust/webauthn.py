"""Passkeys (WebAuthn) as approver keys: registering one, and checking an assertion offline.

A passkey in a root of trust is the line ``webauthn ALG ORIGIN SPKI`` (``ALG`` ``ES256`` or
``EdDSA``, ``ORIGIN`` the dashboard's exact origin, such as ``https://ctl.example``, whose
host is the relying party, ``SPKI`` the base64url DER public key); its key id is the first
16 hex digits of the SHA-256 of the SPKI bytes.

Signing with it is a WebAuthn *assertion* whose challenge is :func:`challenge_for` the
statement (the SHA-256 of the namespaced message an ashat key would sign), so the browser
signs exactly the statement's digest. The signature stored with the statement is the JSON
``{"authenticator_data", "client_data_json", "signature"}`` (base64url), and
:func:`verify_assertion` checks it with nothing but the public key: the client data's type
and challenge, the exact origin (not a subdomain, not another scheme or port, never
cross-origin), the relying party's hash, the user-presence and user-verification flags
(a touch alone is not an approval), and the signature over
``authenticator_data || SHA-256(client_data_json)`` (W3C WebAuthn §7.2).

:func:`public_from_registration` reads a registration (attestation ``none``, as the
dashboard asks) into that line. Pure, but for the CBOR parser (``cbor2``) it imports then.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ashat.errors import InvalidInput

PREFIX = "webauthn"
ALGS = {-7: "ES256", -8: "EdDSA"}  # COSE algorithm -> our name
MAX_SIG_CHARS = 8 * 1024
_UP = 0x01  # user present
_UV = 0x04  # user verified (PIN, biometrics)
_AT = 0x40  # attested credential data included


class WebAuthnError(InvalidInput):
    """A registration or a passkey line that cannot be used."""

    kind = "webauthn"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def unb64url(text: str) -> bytes:
    """Decode unpadded base64url, its one canonical spelling only. Raises ValueError."""
    if not isinstance(text, str) or len(text) > 64 * 1024 or not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(data) != text:
        raise ValueError("not the canonical base64url of its bytes")
    return data


def check_origin(origin: str) -> str:
    """``origin`` if it is ``scheme://host[:port]`` (http only for localhost). Raises
    WebAuthnError."""
    u = urlsplit(origin)
    host = u.hostname or ""
    if (
        u.scheme not in ("https", "http")
        or not host
        or u.path
        or u.query
        or u.fragment
        or u.username
        or (u.scheme == "http" and host != "localhost")
        or origin != f"{u.scheme}://{u.netloc}"
    ):
        raise WebAuthnError(
            f"{origin[:80]!r} is not an origin a passkey can belong to (https://HOST[:PORT], "
            "or http://localhost:PORT)"
        )
    return origin


def challenge_for(namespace: str, message: bytes) -> bytes:
    """The WebAuthn challenge that signs ``message`` in ``namespace`` (what an ashat key
    would sign there, hashed)."""
    from ashat.trust.keys import ed25519_message

    return hashlib.sha256(ed25519_message(namespace, message)).digest()


@dataclass(frozen=True)
class Passkey:
    alg: str
    origin: str
    spki: bytes

    @property
    def rp_id(self) -> str:
        return urlsplit(self.origin).hostname or ""

    @property
    def keyid(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()[:16]

    def to_text(self) -> str:
        return f"{PREFIX} {self.alg} {self.origin} {b64url(self.spki)}"

    @classmethod
    def from_text(cls, line: str) -> Passkey:
        """Parse ``webauthn ALG ORIGIN SPKI``. Raises WebAuthnError."""
        parts = line.strip().split()
        if len(parts) != 4 or parts[0] != PREFIX or parts[1] not in ALGS.values():
            raise WebAuthnError("expected one line 'webauthn ES256|EdDSA ORIGIN SPKI'")
        check_origin(parts[2])
        try:
            spki = unb64url(parts[3])
            key = serialization.load_der_public_key(spki)
        except (ValueError, binascii.Error, UnsupportedAlgorithm) as e:
            raise WebAuthnError("the passkey's public key is not a DER public key") from e
        wanted = ec.EllipticCurvePublicKey if parts[1] == "ES256" else ed25519.Ed25519PublicKey
        if not isinstance(key, wanted):
            raise WebAuthnError(f"the passkey's public key is not an {parts[1]} key")
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
            raise WebAuthnError("an ES256 passkey must be on P-256")
        return cls(parts[1], parts[2], spki)

    def material(self) -> bytes:
        key = serialization.load_der_public_key(self.spki)
        if isinstance(key, ed25519.Ed25519PublicKey):
            return b"ed25519:" + key.public_bytes_raw()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b"p256:" + point

    def verify(self, message: bytes, signature: bytes) -> bool:
        key = serialization.load_der_public_key(self.spki)
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            else:
                return False
        except InvalidSignature:
            return False
        return True


def assertion_signature(authenticator_data: str, client_data_json: str, signature: str) -> str:
    """The signature string stored with a statement for one assertion (base64url parts)."""
    return json.dumps(
        {
            "authenticator_data": authenticator_data,
            "client_data_json": client_data_json,
            "signature": signature,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def verify_assertion(passkey: Passkey, namespace: str, message: bytes, sig: Any) -> bool:
    """True only if ``sig`` is an assertion by ``passkey`` over ``message`` there."""
    if not isinstance(sig, str) or len(sig) > MAX_SIG_CHARS:
        return False
    try:
        parts = json.loads(sig)
        auth = unb64url(parts["authenticator_data"])
        client_json = unb64url(parts["client_data_json"])
        signature = unb64url(parts["signature"])
        client = json.loads(client_json)
        challenge = unb64url(client["challenge"])
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return False
    if (
        not isinstance(client, dict)
        or client.get("type") != "webauthn.get"
        or challenge != challenge_for(namespace, message)
        or client.get("origin") != passkey.origin
        or client.get("crossOrigin", False) is not False
        or len(auth) < 37
        or auth[:32] != hashlib.sha256(passkey.rp_id.encode("utf-8")).digest()
        or auth[32] & (_UP | _UV) != _UP | _UV
    ):
        return False
    return passkey.verify(auth + hashlib.sha256(client_json).digest(), signature)


def _cose_to_spki(cose: dict[int, Any]) -> tuple[str, bytes]:
    alg_id = cose.get(3)
    alg = ALGS.get(alg_id) if isinstance(alg_id, int) else None
    if alg == "ES256" and cose.get(1) == 2 and cose.get(-1) == 1:
        x, y = cose.get(-2), cose.get(-3)
        if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == len(y) == 32):
            raise WebAuthnError("the passkey's EC2 key is malformed")
        try:
            key: Any = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError as e:  # a point not on the curve
            raise WebAuthnError("the passkey's EC2 key is not a point of P-256") from e
    elif alg == "EdDSA" and cose.get(1) == 1 and cose.get(-1) == 6:
        x = cose.get(-2)
        if not isinstance(x, bytes) or len(x) != 32:
            raise WebAuthnError("the passkey's OKP key is malformed")
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(x)
        except ValueError as e:
            raise WebAuthnError("the passkey's OKP key is not an Ed25519 key") from e
    else:
        raise WebAuthnError("the passkey uses an algorithm other than ES256 or EdDSA")
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return alg, spki


def public_from_registration(
    attestation_object: str, client_data_json: str, *, challenge: bytes, rp_id: str, origin: str
) -> tuple[Passkey, str]:
    """The passkey a registration created and its credential id (base64url), after checking
    the client data (type, challenge, origin) and the authenticator data (relying party,
    user present, a credential). Raises WebAuthnError naming what is wrong."""
    import cbor2

    try:
        client = json.loads(unb64url(client_data_json))
        att = cbor2.loads(unb64url(attestation_object))
        auth = att["authData"]
    except (
        ValueError, KeyError, TypeError, binascii.Error, cbor2.CBORDecodeError, RecursionError
    ) as e:  # fmt: skip
        raise WebAuthnError("the registration is not a WebAuthn attestation") from e
    if not isinstance(client, dict) or client.get("type") != "webauthn.create":
        raise WebAuthnError("the registration's client data is not of type webauthn.create")
    if client.get("challenge") != b64url(challenge):
        raise WebAuthnError("the registration answers another challenge (reload the page)")
    if client.get("origin") != origin:
        raise WebAuthnError(f"the registration comes from {str(client.get('origin'))[:80]}")
    if not isinstance(auth, bytes) or len(auth) < 55:
        raise WebAuthnError("the registration's authenticator data is too short")
    if auth[:32] != hashlib.sha256(rp_id.encode("utf-8")).digest():
        raise WebAuthnError(f"the passkey was made for another site than {rp_id}")
    if auth[32] & (_UP | _UV | _AT) != _UP | _UV | _AT:
        raise WebAuthnError(
            "the authenticator did not verify the user (PIN or biometrics) and make a credential"
        )
    length = int.from_bytes(auth[53:55], "big")
    cred_id = auth[55 : 55 + length]
    try:  # one CBOR item: extensions may follow it
        cose = cbor2.CBORDecoder(io.BytesIO(auth[55 + length :])).decode()
    except (ValueError, EOFError, cbor2.CBORDecodeError, RecursionError) as e:
        raise WebAuthnError("the passkey's public key is not COSE") from e
    if not isinstance(cose, dict) or len(cred_id) != length:
        raise WebAuthnError("the registration's credential is malformed")
    alg, spki = _cose_to_spki(cose)
    return Passkey(alg, check_origin(origin), spki), b64url(cred_id)
