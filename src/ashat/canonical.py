"""Canonical JSON: the one byte form that is hashed and signed (manifests, audit events).

Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Two equal values always
give the same bytes, so a hash or signature over them is stable across processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` canonically. Raises ``ValueError`` for NaN or non-JSON types."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_object(members: Mapping[str, bytes]) -> bytes:
    """The canonical JSON of an object whose member values are given as their canonical JSON
    already: the very bytes :func:`canonical_json` gives for the object itself, with a part
    that is made once reused (a manifest's 2,000 file entries)."""
    return b"{" + b",".join(canonical_json(k) + b":" + v for k, v in sorted(members.items())) + b"}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
