"""The keys a root of trust names, and the one way every trust signature is checked.

A key in ``root.json`` is one of:

- ``ed25519``: an ashat key (``ashat keys generate``); ``public`` is the base64 of its raw
  32 bytes. Its signature over a message in a *namespace* is Ed25519 over
  ``b"ashat-sig-v1\\0" + namespace + b"\\0" + message``, base64;
- ``ssh``: an OpenSSH key a person already signs git commits with (``ssh-ed25519``,
  ``ecdsa-sha2-nistp256`` and the FIDO ``sk-`` variants); ``public`` is its
  authorized_keys line. Its signature is the armored SSHSIG that ``ssh-keygen -Y sign -n
  NAMESPACE`` writes over the message (:mod:`ashat.trust.sshsig`);
- ``webauthn``: a passkey registered in the dashboard; ``public`` is ``webauthn ALG RP_ID
  SPKI``. Its signature is a WebAuthn assertion whose challenge is the hash of what an
  ashat key would sign (:mod:`ashat.trust.webauthn`).

The namespace (``ashat-root``, ``ashat-verification``, ``ashat-approval``) is inside the
signed bytes, so a signature made for one kind of statement can never count for another.
Pure: no file, no subprocess; making signatures is :mod:`ashat.trust.signers`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from ashat.bundle.errors import KeyFileError
from ashat.bundle.keys import PublicKey, SigningKey
from ashat.errors import InvalidInput

KEY_TYPES = ("ed25519", "ssh", "webauthn")
NAME_MAX = 64
_ED25519_DOMAIN = b"ashat-sig-v1\0"


class TrustKeyError(InvalidInput):
    """A key entry of a root that cannot be used (bad type, bad encoding, bad name)."""

    kind = "trust_key"


def ed25519_message(namespace: str, message: bytes) -> bytes:
    """What an ashat Ed25519 key signs for ``message`` in ``namespace``."""
    return _ED25519_DOMAIN + namespace.encode("ascii") + b"\0" + message


def sign_ed25519(key: SigningKey, namespace: str, message: bytes) -> str:
    """An ashat key's trust signature (base64) over ``message`` in ``namespace``."""
    return base64.b64encode(key.sign(ed25519_message(namespace, message))).decode("ascii")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or not name.isprintable():
        raise TrustKeyError(f"a key's name must be 1-{NAME_MAX} printable characters")
    return name


@dataclass(frozen=True)
class TrustKey:
    """One key of a root: its id, type, public part and the name of who holds it."""

    keyid: str
    type: str
    public: str
    name: str

    @classmethod
    def ed25519(cls, public: PublicKey, name: str) -> TrustKey:
        raw = base64.b64encode(public.raw).decode("ascii")
        return cls(public.keyid, "ed25519", raw, _check_name(name))

    @classmethod
    def ssh(cls, line: str, name: str) -> TrustKey:
        from ashat.trust.sshsig import SshPublicKey, SshSigError

        try:
            key = SshPublicKey.from_text(line)
        except SshSigError as e:
            raise TrustKeyError(f"not a usable OpenSSH public key: {e.message}") from e
        return cls(key.keyid, "ssh", key.to_text().strip(), _check_name(name))

    @classmethod
    def webauthn(cls, line: str, name: str) -> TrustKey:
        from ashat.trust.webauthn import Passkey, WebAuthnError

        try:
            key = Passkey.from_text(line)
        except WebAuthnError as e:
            raise TrustKeyError(f"not a usable passkey: {e.message}") from e
        return cls(key.keyid, "webauthn", key.to_text(), _check_name(name))

    @classmethod
    def from_json(cls, keyid: str, d: Any) -> TrustKey:
        """Parse a root's key entry and check that ``keyid`` is really this key's id."""
        if not isinstance(d, dict) or set(d) != {"type", "public", "name"}:
            raise TrustKeyError(f"key {keyid[:20]!r} must have exactly type, public and name")
        if d["type"] == "ed25519":
            if not isinstance(d["public"], str):
                raise TrustKeyError(f"key {keyid[:20]!r}: public must be base64")
            try:
                pk = PublicKey.from_raw(base64.b64decode(d["public"], validate=True))
            except (binascii.Error, ValueError, KeyFileError) as e:
                raise TrustKeyError(f"key {keyid[:20]!r} is not a valid Ed25519 key") from e
            key = cls.ed25519(pk, d["name"])
        elif d["type"] in ("ssh", "webauthn"):
            if not isinstance(d["public"], str):
                raise TrustKeyError(f"key {keyid[:20]!r}: public must be a key line")
            make = cls.ssh if d["type"] == "ssh" else cls.webauthn
            key = make(d["public"], d["name"])
        else:
            raise TrustKeyError(
                f"key {keyid[:20]!r} has type {str(d['type'])[:20]!r}; expected one of "
                f"{', '.join(KEY_TYPES)}"
            )
        if key.keyid != keyid:
            raise TrustKeyError(f"key {keyid[:20]!r} is listed under another key's id")
        return key

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "public": self.public, "name": self.name}

    def material(self) -> bytes:
        """The key itself, whatever its encoding (TUF's distinct keys): one Ed25519 or P-256
        key is one key whether root lists it as an ashat, OpenSSH or passkey key."""
        if self.type == "ed25519":
            return b"ed25519:" + base64.b64decode(self.public)
        if self.type == "webauthn":
            from ashat.trust.webauthn import Passkey

            return Passkey.from_text(self.public).material()
        from ashat.trust.sshsig import SshPublicKey

        key = SshPublicKey.from_text(self.public)
        return key.material()

    def verify(self, namespace: str, message: bytes, signature: Any) -> bool:
        """True only if ``signature`` is this key's valid signature of ``message`` there."""
        if not isinstance(signature, str) or len(signature) > 16 * 1024:
            return False
        if self.type == "ed25519":
            try:
                raw = base64.b64decode(signature, validate=True)
            except (binascii.Error, ValueError):
                return False
            if base64.b64encode(raw).decode("ascii") != signature:
                return False  # one spelling only: no malleable padding bits
            pk = PublicKey.from_raw(base64.b64decode(self.public))
            return pk.verify(raw, ed25519_message(namespace, message))
        if self.type == "webauthn":
            from ashat.trust.webauthn import Passkey, verify_assertion

            return verify_assertion(Passkey.from_text(self.public), namespace, message, signature)
        from ashat.trust.sshsig import SshPublicKey, SshSigError, verify_sshsig

        try:
            verify_sshsig(SshPublicKey.from_text(self.public), signature, message, namespace)
        except SshSigError:
            return False
        return True
