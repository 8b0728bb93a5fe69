"""Canonical JSON: the one byte form that is hashed and signed (manifests, audit events).

Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Two equal values always
give the same bytes, so a hash or signature over them is stable across processes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` canonically. Raises ``ValueError`` for NaN or non-JSON types."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
