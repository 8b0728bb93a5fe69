"""The signed statements of a release's chain (in-toto's link metadata, for our two steps).

Each is an envelope ``{"signed": {...}, "signatures": [{"keyid": ..., "sig": ...}]}``; the
signature covers the canonical JSON of ``signed`` in the statement's namespace
(:mod:`ashat.trust.keys`), and the statement's *digest* is the SHA-256 of those bytes.

- A **verification statement** (PUBLIC's verifier key): this release (update id, sequence,
  manifest digest) ran these checks with these results (name, status, SHA-256 of the
  summary, time), the checks required and the ``[verify]`` settings in force.
- An **approval statement** (an approver's own key): this person approves this release (update
  id, sequence, manifest digest) as verified by that statement (its digest), at this time,
  with this comment.

Pure: building, signing with a given signer, and reading back. Checking a chain of them
against a root is :mod:`ashat.trust.chain`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ashat.canonical import canonical_json, sha256_hex

VERIFICATION_TYPE = "ashat-verification"
APPROVAL_TYPE = "ashat-approval"
VERIFICATION_NAMESPACE = "ashat-verification"
APPROVAL_NAMESPACE = "ashat-approval"
MAX_COMMENT = 1000

# (namespace, message) -> (key id, signature)
Signer = Callable[[str, bytes], tuple[str, str]]


def digest(statement: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a statement's canonical ``signed`` part."""
    return sha256_hex(canonical_json(statement["signed"]))


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (TOML dates and the like become strings)."""
    return json.loads(json.dumps(value, default=str))


def verification_signed(
    *,
    update_id: str,
    sequence: int,
    manifest_digest: str,
    results: Sequence[Mapping[str, Any]],
    required: Sequence[str],
    settings: Mapping[str, Any],
    verifier: str,
    at: str,
) -> dict[str, Any]:
    """What PUBLIC signs at the end of a verification run (the latest result of each check)."""
    checks = [
        {
            "name": str(r["name"]),
            "status": str(r["status"]),
            "summary_sha256": sha256_hex(str(r.get("summary", "")).encode("utf-8")),
            "at": str(r.get("at") or at),
        }
        for r in sorted(results, key=lambda r: str(r["name"]))
    ]
    return {
        "type": VERIFICATION_TYPE,
        "update_id": update_id,
        "sequence": sequence,
        "manifest_digest": manifest_digest,
        "checks": checks,
        "required": sorted(required),
        "settings": _plain(dict(settings)),
        "verifier": verifier,
        "at": at,
    }


def approval_signed(
    *,
    update_id: str,
    sequence: int,
    manifest_digest: str,
    verification_digest: str,
    approver: str,
    at: str,
    comment: str | None,
) -> dict[str, Any]:
    """What an approver signs: this release, as verified by that statement."""
    if comment is not None and len(comment) > MAX_COMMENT:
        raise ValueError(f"a comment is at most {MAX_COMMENT} characters")
    return {
        "type": APPROVAL_TYPE,
        "update_id": update_id,
        "sequence": sequence,
        "manifest_digest": manifest_digest,
        "verification_digest": verification_digest,
        "approver": approver,
        "at": at,
        "comment": comment,
    }


def sign(signed: Mapping[str, Any], namespace: str, signer: Signer) -> dict[str, Any]:
    """The envelope of ``signed`` with ``signer``'s signature."""
    keyid, sig = signer(namespace, canonical_json(signed))
    return {"signed": dict(signed), "signatures": [{"keyid": keyid, "sig": sig}]}


def message(statement: Mapping[str, Any]) -> bytes:
    """The bytes a statement's signatures cover."""
    return canonical_json(statement["signed"])
