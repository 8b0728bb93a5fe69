"""Release bundles (DESIGN §4): a signed manifest plus content-addressed blobs.

The flow, and the module for each step:

1. :mod:`.build` walks a source — a directory (minus ``.git``, ``.ashat`` and
   :mod:`.ignore` patterns, with a stat-keyed :mod:`.hashcache`) or exactly one git
   commit (extracted by :mod:`.gitsource`) — into an unsigned
   :class:`~.manifest.Manifest` and a digest → file map.
2. :mod:`.sign` signs it with a :class:`~.keys.SigningKey` (ALPHA's ``release``
   signature; OMEGA's approval signature carries a payload), and on the receiving side
   verifies bytes against the public keys a server trusts.
3. :mod:`.manifest` parses untrusted bytes strictly; :mod:`.paths` decides which paths
   and symlinks are safe to materialize.

Everything but :mod:`.build`, :mod:`.gitsource`, :mod:`.hashcache` and the file functions
of :mod:`.keys` is pure: bytes and keys in, a value or a :class:`~.errors.BundleError` out.
All errors are :class:`ashat.errors.InvalidInput` (exit code 2); the tree is drawn in
:mod:`.errors`.
"""

from __future__ import annotations

from ashat.bundle.build import Built, build_from_dir, build_from_git
from ashat.bundle.errors import (
    BadSignature,
    BundleError,
    DigestMismatch,
    DuplicatePath,
    KeyFileError,
    ManifestInvalid,
    ManifestTooLarge,
    MissingSignature,
    SignatureError,
    UnknownKey,
    UnsafePath,
)
from ashat.bundle.keys import (
    PublicKey,
    SigningKey,
    generate_keypair,
    keyid,
    load_private_key,
    load_public_key,
)
from ashat.bundle.manifest import (
    MAX_MANIFEST_BYTES,
    SCHEMA,
    FileEntry,
    Manifest,
    Signature,
    parse_manifest,
)
from ashat.bundle.sign import check_signatures, sign_manifest, signed_message, verify_manifest

__all__ = [
    "MAX_MANIFEST_BYTES",
    "SCHEMA",
    "BadSignature",
    "Built",
    "BundleError",
    "DigestMismatch",
    "DuplicatePath",
    "FileEntry",
    "KeyFileError",
    "Manifest",
    "ManifestInvalid",
    "ManifestTooLarge",
    "MissingSignature",
    "PublicKey",
    "Signature",
    "SignatureError",
    "SigningKey",
    "UnknownKey",
    "UnsafePath",
    "build_from_dir",
    "build_from_git",
    "check_signatures",
    "generate_keypair",
    "keyid",
    "load_private_key",
    "load_public_key",
    "parse_manifest",
    "sign_manifest",
    "signed_message",
    "verify_manifest",
]
