"""The errors of the bundle layer: everything a manifest, a key or a source tree can be wrong about.

All of them are :class:`ashat.errors.InvalidInput` (exit code 2): a bundle that fails any
check is untrusted input and is refused whole. Each leaf carries the data that names what
was wrong (a path, a digest, a key id, a role) in ``details`` and as attributes; messages
quote user-controlled strings with ``repr`` so a hostile path cannot paint the terminal,
and never include key material::

    InvalidInput                     (ashat.errors)
    └── BundleError                  a source that cannot be bundled (fifo, unreadable, bad git ref)
        ├── UnsafePath               absolute, '..', control characters, a symlink leaving the tree
        ├── DuplicatePath            the same path twice, or two paths equal ignoring case
        ├── ManifestInvalid          not JSON, wrong type, unknown field, bad digest/size/mode, …
        ├── ManifestTooLarge         over the byte limit (checked before parsing)
        ├── DigestMismatch           a blob whose content does not hash to its digest
        ├── SignatureError
        │   ├── BadSignature         a trusted key's signature does not verify (tampered manifest)
        │   ├── MissingSignature     no signature at all for a required role
        │   └── UnknownKey           signed for the role, but only by keys not trusted for it
        └── KeyFileError             a key file missing, unreadable, malformed or of the wrong type
"""

from __future__ import annotations

from typing import Any

from ashat.errors import InvalidInput


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class BundleError(InvalidInput):
    """Root of the bundle layer's errors."""

    kind = "bundle"


class UnsafePath(BundleError):
    """A path (or symlink target) that could write or read outside the release tree."""

    kind = "unsafe_path"

    def __init__(self, message: str, *, path: str, target: str | None = None) -> None:
        super().__init__(message, **_present(path=path, target=target))
        self.path = path
        self.target = target


class DuplicatePath(BundleError):
    """Two manifest entries that would land on the same file."""

    kind = "duplicate_path"

    def __init__(self, message: str, *, path: str, other: str | None = None) -> None:
        super().__init__(message, **_present(path=path, other=other))
        self.path = path
        self.other = other


class ManifestInvalid(BundleError):
    """A manifest that is not exactly what schema 1 allows; ``field`` names the culprit."""

    kind = "manifest_invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, **_present(field=field))
        self.field = field


class ManifestTooLarge(BundleError):
    kind = "manifest_too_large"

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message, size=size, limit=limit)
        self.size = size
        self.limit = limit


class DigestMismatch(BundleError):
    """Content that does not hash to the digest it was sent or stored under."""

    kind = "digest_mismatch"

    def __init__(
        self, message: str, *, expected: str, actual: str, path: str | None = None
    ) -> None:
        super().__init__(message, **_present(expected=expected, actual=actual, path=path))
        self.expected = expected
        self.actual = actual
        self.path = path


class SignatureError(BundleError):
    """Root of the signature failures; ``role`` is the role that could not be satisfied."""

    kind = "signature"

    def __init__(self, message: str, *, role: str, keyids: tuple[str, ...] = ()) -> None:
        super().__init__(message, **_present(role=role, keyids=list(keyids) or None))
        self.role = role
        self.keyids = keyids


class BadSignature(SignatureError):
    kind = "bad_signature"


class MissingSignature(SignatureError):
    kind = "missing_signature"


class UnknownKey(SignatureError):
    kind = "unknown_key"


class KeyFileError(BundleError):
    kind = "key_file"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message, **_present(path=path))
        self.path = path
