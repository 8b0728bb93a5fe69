"""Ed25519 signing keys: generating, loading and naming them, behind two small wrappers.

Callers hold a :class:`SigningKey` (ALPHA's or OMEGA's private key, read from ``NAME.key``)
or a :class:`PublicKey` (what a server trusts, read from ``NAME.pub``) and never touch a
``cryptography`` type or exception. A key is named by its *key id*: the first 16 hex
digits of the SHA-256 of its raw 32 public bytes.

Files: ``NAME.key`` is an unencrypted PKCS#8 PEM, mode 0600, written atomically;
``NAME.pub`` is one line, ``ashat-ed25519 <base64 of the raw 32 bytes> <name>``.
:func:`load_public_key` also accepts a PEM ``PUBLIC KEY``. Every failure is a
:class:`KeyFileError` naming the file, never its content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ashat.bundle.errors import KeyFileError
from ashat.project import write_private

PUB_PREFIX = "ashat-ed25519"
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_FILE_BYTES = 16 * 1024  # bytes; a key file is a few hundred
RAW_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def keyid(public_key: PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw public key bytes."""
    return hashlib.sha256(public_key.raw).hexdigest()[:16]


class PublicKey:
    """An Ed25519 public key, compared and hashed by its raw bytes."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        if len(raw) != RAW_KEY_BYTES:
            raise KeyFileError(f"an Ed25519 public key is {RAW_KEY_BYTES} bytes, got {len(raw)}")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise KeyFileError("not a valid Ed25519 public key") from e

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse ``ashat-ed25519 <base64> [name]`` (one line; surrounding whitespace ignored)."""
        parts = text.strip().split(" ")
        if not 2 <= len(parts) <= 3 or "\n" in text.strip():
            raise KeyFileError(f"expected one line '{PUB_PREFIX} <base64> <name>'")
        if parts[0] != PUB_PREFIX:
            raise KeyFileError(
                f"unsupported public key type {parts[0][:40]!r} (expected {PUB_PREFIX!r})"
            )
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError) as e:
            raise KeyFileError("public key is not valid base64") from e
        return cls.from_raw(raw)

    def to_text(self, name: str) -> str:
        """The one-line ``.pub`` form (with a trailing newline)."""
        _check_name(name)
        return f"{PUB_PREFIX} {base64.b64encode(self._raw).decode('ascii')} {name}\n"

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def keyid(self) -> str:
        return keyid(self)

    def verify(self, sig: bytes, data: bytes) -> bool:
        """Whether ``sig`` is this key's signature over ``data``. Never raises on bad input."""
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
            return False
        try:
            self._key.verify(sig, data)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey(keyid={self.keyid!r})"


class SigningKey:
    """An Ed25519 private key. Its ``repr`` shows the key id only."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key in memory (tests, or before :func:`generate_keypair` writes one)."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM: secret material, write it only with mode 0600."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid!r})"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME_RE.fullmatch(name):
        raise KeyFileError(
            f"invalid key name {name!r}: 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


# The first line of a PEM private key of any kind (PKCS#8, RSA, EC, OpenSSH, PGP's block):
# what the Security Scan reports as a secret, and a push refuses to ship.
PRIVATE_KEY_PEM = r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"


def generate_keypair(name: str, directory: Path) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0600, atomically) and ``NAME.pub`` in ``directory``.

    Raises :class:`KeyFileError` if the name is invalid, ``NAME.key`` already exists
    (a key is never overwritten), or the files cannot be written.
    """
    _check_name(name)
    key_path = directory / f"{name}.key"
    pub_path = directory / f"{name}.pub"
    if key_path.exists() or key_path.is_symlink():
        raise KeyFileError(
            f"key file {key_path} already exists; refusing to overwrite it", path=str(key_path)
        )
    key = SigningKey.generate()
    try:
        write_private(key_path, key.to_pem(), mode=0o600)
        write_private(pub_path, key.public.to_text(name).encode("ascii"), mode=0o644)
    except OSError as e:
        raise KeyFileError(
            f"cannot write key files in {directory}: {e.strerror}", path=str(directory)
        ) from e
    return key_path, pub_path


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError as e:
        raise KeyFileError(f"{what} file {path} does not exist", path=str(path)) from e
    except OSError as e:
        raise KeyFileError(f"cannot read {what} file {path}: {e.strerror}", path=str(path)) from e
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(
            f"{what} file {path} is larger than {MAX_KEY_FILE_BYTES} bytes", path=str(path)
        )
    return data


def load_private_key(path: Path) -> SigningKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 key. Raises :class:`KeyFileError`."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:  # encrypted, and we passed no password
        raise KeyFileError(
            f"private key file {path} is encrypted; ashat needs an unencrypted key", path=str(path)
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path} is not a PEM private key", path=str(path)) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path} holds a {type(key).__name__.removesuffix('PrivateKey')} key, not Ed25519",
            path=str(path),
        )
    return SigningKey(key)


def load_public_key(path: Path) -> PublicKey:
    """Load a ``.pub`` line (or a PEM public key). Raises :class:`KeyFileError`."""
    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a private key; pass the .pub file", path=str(path))
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise KeyFileError(f"{path} is not a PEM public key", path=str(path)) from e
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(
                f"{path} holds a {type(key).__name__.removesuffix('PublicKey')} key, not Ed25519",
                path=str(path),
            )
        return PublicKey(key)
    try:
        return PublicKey.from_text(data.decode("ascii"))
    except UnicodeDecodeError as e:
        raise KeyFileError(f"{path} is not an ashat public key (not ASCII)", path=str(path)) from e
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e.message}", path=str(path)) from e
