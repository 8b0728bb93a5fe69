"""OpenSSH keys as approver keys: reading their public lines, and checking SSHSIG signatures.

A person who already signs git commits with an OpenSSH key can sign an ashat statement with
it too: ``ssh-keygen -Y sign -n NAMESPACE -f KEY FILE`` writes an armored SSHSIG
(``-----BEGIN SSH SIGNATURE-----`` …) over the file, and :func:`verify_sshsig` checks it
with nothing but the public key, exactly as OpenSSH's ``PROTOCOL.sshsig`` defines it: the
envelope (magic ``SSHSIG``, version 1, the signer's public key, the namespace, an empty
reserved field, the hash algorithm ``sha512`` or ``sha256``, the signature), and the
signature over ``"SSHSIG" || string(namespace) || string(reserved) || string(hash_alg) ||
string(H(message))``.

Key types: ``ssh-ed25519``, ``ecdsa-sha2-nistp256``, and the FIDO security-key variants
``sk-ssh-ed25519@openssh.com`` and ``sk-ecdsa-sha2-nistp256@openssh.com`` of
``PROTOCOL.u2f``, whose authenticator signs ``SHA-256(application) || flags || counter ||
SHA-256(signed data)`` and whose user-presence flag must be set. Any other type (RSA, DSA,
other curves, certificates) is refused by name.

Parsing is strict, so that one signature has one spelling: every length must stay inside
its buffer, no field may carry trailing bytes, integers must be minimal, base64 must be
canonical. Every failure is a :class:`SshSigError` naming what was wrong; nothing from
``cryptography`` escapes. Pure: no subprocess, no file, no network, no clock (making these
signatures is :mod:`ashat.trust.signers`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ashat.errors import InvalidInput

ED25519 = "ssh-ed25519"
ECDSA_P256 = "ecdsa-sha2-nistp256"
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA_P256 = "sk-ecdsa-sha2-nistp256@openssh.com"
KEY_TYPES = (ED25519, ECDSA_P256, SK_ED25519, SK_ECDSA_P256)
HASH_ALGS = ("sha512", "sha256")

MAX_SIG_CHARS = 8 * 1024  # an armored signature longer than this is refused unread
MAX_KEY_CHARS = 8 * 1024  # likewise a public key line
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
VERSION = 1
USER_PRESENT = 0x01  # PROTOCOL.u2f: the authenticator saw a touch

_CURVE_P256 = b"nistp256"
_P256_POINT_LEN = 65  # 0x04 || X || Y: OpenSSH writes points uncompressed
_ED25519_KEY_LEN = 32
_ED25519_SIG_LEN = 64
_MPINT_MAX = 33  # a P-256 scalar, with the leading zero a high bit needs
_SHOW = 40  # never echo more than this much of the input


class SshSigError(InvalidInput):
    """An OpenSSH public key or SSHSIG signature that cannot be used, or that does not
    verify."""

    kind = "sshsig"


def _show(value: bytes | str) -> str:
    """``value`` for an error message: its repr, cut to a few dozen characters."""
    text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


class _Reader:
    """Reads SSH wire-format fields (RFC 4251 §5) from a buffer, refusing any overrun."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, name: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise SshSigError(f"{self.what}: {name} runs past the end of its buffer")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, name: str) -> int:
        return self.take(1, name)[0]

    def uint32(self, name: str) -> int:
        return int.from_bytes(self.take(4, name), "big")

    def string(self, name: str) -> bytes:
        return self.take(self.uint32(f"the length of {name}"), name)

    def mpint(self, name: str) -> int:
        raw = self.string(name)
        if raw and raw[0] & 0x80:
            raise SshSigError(f"{self.what}: {name} is negative")
        if raw[:1] == b"\0" and (len(raw) == 1 or not raw[1] & 0x80):
            raise SshSigError(f"{self.what}: {name} has a needless leading zero")
        if len(raw) > _MPINT_MAX:
            raise SshSigError(f"{self.what}: {name} is too large")
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            extra = len(self.data) - self.pos
            raise SshSigError(f"{self.what}: {extra} unexpected trailing byte(s)")


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _key_type(raw: bytes, what: str) -> str:
    """The key type named by ``raw``; SshSigError naming it unless it is supported."""
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        name = ""
    if name not in KEY_TYPES:
        raise SshSigError(
            f"{what}: unsupported key type {_show(name or raw)} (supported: {', '.join(KEY_TYPES)})"
        )
    return name


@dataclass(frozen=True)
class _Parsed:
    """A public key blob taken apart: its type, key bytes and (sk keys) application."""

    key_type: str
    key: bytes  # the raw Ed25519 key, or the uncompressed P-256 point
    application: bytes | None


def _parse_blob(blob: bytes, what: str) -> _Parsed:
    """Take apart an SSH wire-format public key (RFC 8709, RFC 5656, PROTOCOL.u2f)."""
    r = _Reader(blob, what)
    key_type = _key_type(r.string("the key type"), what)
    if key_type in (ED25519, SK_ED25519):
        key = r.string("the Ed25519 key")
        if len(key) != _ED25519_KEY_LEN:
            raise SshSigError(f"{what}: an Ed25519 key must be {_ED25519_KEY_LEN} bytes")
    else:
        curve = r.string("the curve name")
        if curve != _CURVE_P256:
            raise SshSigError(f"{what}: curve {_show(curve)} does not match {key_type}")
        key = r.string("the curve point")
        if len(key) != _P256_POINT_LEN or key[0] != 4:
            raise SshSigError(f"{what}: the P-256 point must be {_P256_POINT_LEN} bytes, 0x04 …")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise SshSigError(f"{what}: the P-256 point is not on the curve") from e
    application = None
    if key_type in (SK_ED25519, SK_ECDSA_P256):
        application = r.string("the security key's application")
        if b"\0" in application:
            raise SshSigError(f"{what}: the security key's application contains a NUL byte")
        try:
            application.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SshSigError(f"{what}: the security key's application is not UTF-8") from e
    r.end()
    return _Parsed(key_type, key, application)


@dataclass(frozen=True)
class SshPublicKey:
    """An OpenSSH public key: its type, SSH wire-format blob and comment.

    Two keys are equal when their blobs are (the comment is only a label). ``application``
    is the security key's application string (usually ``ssh:``) for ``sk-`` keys, ``None``
    for the others. Constructing one checks the blob; raises SshSigError.
    """

    key_type: str = field(compare=False)
    blob: bytes
    comment: str = field(default="", compare=False)
    application: str | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.blob, bytes):
            raise SshSigError("an OpenSSH public key's blob must be bytes")
        parsed = _parse_blob(self.blob, "the OpenSSH public key")
        if self.key_type != parsed.key_type:
            raise SshSigError(
                f"the OpenSSH public key says {_show(self.key_type)} but its blob is a "
                f"{parsed.key_type} key"
            )
        if not isinstance(self.comment, str) or not self.comment.isprintable():
            raise SshSigError("an OpenSSH public key's comment must be printable text")
        app = None if parsed.application is None else parsed.application.decode("utf-8")
        object.__setattr__(self, "application", app)

    def material(self) -> bytes:
        """The key's bytes, named by curve (an sk- key is the same key as its plain twin)."""
        parsed = _parse_blob(self.blob, "the key")
        curve = b"ed25519:" if parsed.key_type in (ED25519, SK_ED25519) else b"p256:"
        return curve + parsed.key

    @property
    def keyid(self) -> str:
        """The first 16 hex digits of the SHA-256 of the blob."""
        return hashlib.sha256(self.blob).hexdigest()[:16]

    def to_text(self) -> str:
        """The authorized_keys form ``type base64 [comment]``, on one line."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {self.comment}" if self.comment else line

    @classmethod
    def from_text(cls, line: str) -> SshPublicKey:
        """Parse an authorized_keys or ``.pub`` line ``type base64 [comment]`` (no options).

        Raises SshSigError if it is not one such line, if its type is not supported, or if
        the type in the line is not the type inside the blob.
        """
        if not isinstance(line, str):
            raise SshSigError("an OpenSSH public key must be given as text")
        if len(line) > MAX_KEY_CHARS:
            raise SshSigError(f"an OpenSSH public key line is at most {MAX_KEY_CHARS} characters")
        text = line.strip(" \t\r\n")
        parts = text.split(None, 2)
        if len(parts) < 2 or "\n" in text or "\r" in text:
            raise SshSigError("expected one line 'TYPE BASE64 [COMMENT]' of an OpenSSH public key")
        key_type = _key_type(parts[0].encode("utf-8", "replace"), "the OpenSSH public key")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError) as e:
            raise SshSigError("the OpenSSH public key's base64 is not valid") from e
        comment = parts[2].strip(" \t") if len(parts) == 3 else ""
        if _parse_blob(blob, "the OpenSSH public key").key_type != key_type:
            raise SshSigError(f"the OpenSSH public key line says {key_type} but its blob is not")
        return cls(key_type, blob, comment)


@dataclass(frozen=True)
class _Signature:
    """An SSHSIG envelope taken apart (PROTOCOL.sshsig), its signature blob too."""

    blob: bytes
    key: _Parsed
    namespace: bytes
    reserved: bytes
    hash_alg: str
    sig: bytes  # Ed25519: 64 bytes; ECDSA: DER, for cryptography
    flags: int  # sk keys only; 0 otherwise
    counter: int  # sk keys only; 0 otherwise


def _dearmor(armored: str) -> bytes:
    """The bytes inside ``-----BEGIN SSH SIGNATURE-----`` … ``-----END SSH SIGNATURE-----``."""
    if not isinstance(armored, str):
        raise SshSigError("an SSH signature must be given as text")
    if len(armored) > MAX_SIG_CHARS:
        raise SshSigError(f"an SSH signature is at most {MAX_SIG_CHARS} characters")
    lines = [line.strip(" \t\r") for line in armored.strip(" \t\r\n").split("\n")]
    if not lines or lines[0] != BEGIN:
        raise SshSigError(f"an SSH signature must begin with the line {BEGIN}")
    if len(lines) < 3 or lines[-1] != END:
        raise SshSigError(f"an SSH signature must end with the line {END} (is it cut short?)")
    body = "".join(lines[1:-1])
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SshSigError("the SSH signature's armor is not valid base64") from e
    if base64.b64encode(raw).decode("ascii") != body:
        raise SshSigError("the SSH signature's base64 is not in its canonical spelling")
    return raw


def _parse_sig_blob(blob: bytes, key: _Parsed) -> tuple[bytes, int, int]:
    """The signature, flags and counter from a signature blob made by ``key``."""
    what = "the SSH signature's signature"
    r = _Reader(blob, what)
    sig_type = _key_type(r.string("the signature type"), what)
    if sig_type != key.key_type:
        raise SshSigError(f"{what} is of type {sig_type} but the key is {key.key_type}")
    if key.key_type in (ED25519, SK_ED25519):
        sig = r.string("the Ed25519 signature")
        if len(sig) != _ED25519_SIG_LEN:
            raise SshSigError(f"{what}: an Ed25519 signature must be {_ED25519_SIG_LEN} bytes")
    else:
        inner = _Reader(r.string("the ECDSA signature"), "the ECDSA signature")
        r_int, s_int = inner.mpint("r"), inner.mpint("s")
        inner.end()
        try:
            sig = encode_dss_signature(r_int, s_int)
        except (ValueError, TypeError) as e:
            raise SshSigError("the ECDSA signature's r and s cannot be encoded") from e
    flags = counter = 0
    if key.application is not None:
        flags, counter = r.byte("the security key's flags"), r.uint32("the counter")
    r.end()
    return sig, flags, counter


def _parse(armored: str) -> _Signature:
    raw = _dearmor(armored)
    what = "the SSH signature"
    r = _Reader(raw, what)
    if r.take(len(MAGIC), "the magic") != MAGIC:
        raise SshSigError(f"{what} does not start with the magic {MAGIC.decode()}")
    version = r.uint32("the version")
    if version != VERSION:
        raise SshSigError(f"{what} has version {version}; only {VERSION} is known")
    blob = r.string("the public key")
    key = _parse_blob(blob, "the SSH signature's public key")
    namespace = r.string("the namespace")
    reserved = r.string("the reserved field")
    if reserved:
        raise SshSigError(f"{what}'s reserved field is not empty")
    hash_raw = r.string("the hash algorithm")
    if hash_raw.decode("ascii", "replace") not in HASH_ALGS:
        raise SshSigError(
            f"{what} uses hash algorithm {_show(hash_raw)}; expected {' or '.join(HASH_ALGS)}"
        )
    sig_blob = r.string("the signature")
    r.end()
    sig, flags, counter = _parse_sig_blob(sig_blob, key)
    return _Signature(blob, key, namespace, reserved, hash_raw.decode("ascii"), sig, flags, counter)


def sshsig_key(armored: str) -> SshPublicKey:
    """The public key an armored SSHSIG says it was made with: parsed, NOT trusted (it names
    who claims to have signed, nothing more; use :func:`verify_sshsig`).

    Raises SshSigError if the signature cannot be parsed or its key type is not supported.
    """
    parsed = _parse(armored)
    return SshPublicKey(parsed.key.key_type, parsed.blob)


def signed_data(namespace: str, hash_alg: str, message: bytes) -> bytes:
    """What an SSHSIG signature covers for ``message`` in ``namespace`` (PROTOCOL.sshsig)."""
    if hash_alg not in HASH_ALGS:
        raise SshSigError(f"hash algorithm {_show(hash_alg)}; expected {' or '.join(HASH_ALGS)}")
    digest = hashlib.new(hash_alg, message).digest()
    return (
        MAGIC
        + _string(namespace.encode("utf-8"))
        + _string(b"")
        + _string(hash_alg.encode("ascii"))
        + _string(digest)
    )


def verify_sshsig(public: SshPublicKey, armored: str, message: bytes, namespace: str) -> None:
    """Check that ``armored`` is ``public``'s SSHSIG signature of ``message`` in ``namespace``.

    Returns None when it is. Raises SshSigError when it is not: the armor or envelope cannot
    be parsed, the signature was made by another key, for another namespace, with a hash
    other than sha512 or sha256, by a security key without the user-presence flag, or does
    not verify over ``message``.
    """
    if not isinstance(public, SshPublicKey):
        raise SshSigError("the key to verify with must be an SshPublicKey")
    if not isinstance(message, bytes):
        raise SshSigError("the signed message must be bytes")
    if not isinstance(namespace, str) or not namespace:
        raise SshSigError("the namespace must be a non-empty string")
    sig = _parse(armored)
    if sig.blob != public.blob:
        signer = hashlib.sha256(sig.blob).hexdigest()[:16]
        raise SshSigError(
            f"the SSH signature was made by key {signer} ({sig.key.key_type}), "
            f"not by key {public.keyid}"
        )
    if sig.namespace != namespace.encode("utf-8"):
        raise SshSigError(
            f"the SSH signature is for namespace {_show(sig.namespace)}, not {_show(namespace)}"
        )
    data = signed_data(namespace, sig.hash_alg, message)
    key = sig.key
    if key.application is not None:
        if not sig.flags & USER_PRESENT:
            raise SshSigError("the security key signed without the user-presence flag (no touch)")
        data = (
            hashlib.sha256(key.application).digest()
            + bytes([sig.flags])
            + sig.counter.to_bytes(4, "big")
            + hashlib.sha256(data).digest()
        )
    try:
        if key.key_type in (ED25519, SK_ED25519):
            ed25519.Ed25519PublicKey.from_public_bytes(key.key).verify(sig.sig, data)
        else:
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.key)
            point.verify(sig.sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SshSigError(
            f"the SSH signature by key {public.keyid} does not verify over this message"
        ) from e
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SshSigError(f"the SSH signature by key {public.keyid} is malformed") from e
