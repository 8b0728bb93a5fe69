"""A signed manifest sent as its difference from one the receiver holds (issue 20).

A 1 % change to a 2,000-file release moves 1 % of the blobs, but the poll answer that
starts it carried the whole signed manifest (30 KB at 200 files). A mainframe already holds
the manifest of the release it runs, byte for byte as OMEGA sent it, so OMEGA can send only
what differs::

    {"base": "<sha256 of the base manifest text>",
     "digest": "<sha256 of the new manifest text>",
     "fields": {<top-level keys whose value changed, signatures included>},
     "removed": ["<path>", ...],
     "files": [<file entries added or changed>]}

The receiver rebuilds the new manifest's exact text (canonical JSON: sorted keys, files in
path order) and checks it against ``digest`` before anything else reads it; then it is
checked as the whole manifest would be (release and approval signatures, the directive's
manifest digest), so a delta can save bytes but never change what is accepted. Anything
that does not rebuild to ``digest`` (another base, an altered delta) is :class:`DeltaError`,
and the receiver asks for the whole manifest.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ashat.canonical import canonical_json

FIELDS_EXCLUDED = ("files",)


class DeltaError(ValueError):
    """A delta that does not rebuild the manifest it names."""


def _sha(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def make_delta(base: bytes, new: bytes) -> dict[str, Any]:
    """The delta that turns manifest text ``base`` into manifest text ``new``."""
    old_doc, new_doc = json.loads(base), json.loads(new)
    fields = {
        k: v
        for k, v in new_doc.items()
        if k not in FIELDS_EXCLUDED and (k not in old_doc or old_doc[k] != v)
    }
    gone = sorted(set(old_doc) - set(new_doc) - set(FIELDS_EXCLUDED))
    if gone:  # a key the new manifest lacks: deltas only add or change keys
        raise DeltaError(f"the new manifest drops {gone}: send it whole")
    old_files = {e["path"]: e for e in old_doc.get("files", [])}
    new_files = {e["path"]: e for e in new_doc.get("files", [])}
    return {
        "base": _sha(base),
        "digest": _sha(new),
        "fields": fields,
        "removed": sorted(set(old_files) - set(new_files)),
        "files": [e for p, e in sorted(new_files.items()) if old_files.get(p) != e],
    }


def apply_delta(base: bytes, delta: Any) -> bytes:
    """The manifest text ``delta`` rebuilds from ``base``. Raises :class:`DeltaError`."""
    if not isinstance(delta, dict):
        raise DeltaError("the manifest delta is not an object")
    if delta.get("base") != _sha(base):
        raise DeltaError("the manifest delta is against another manifest than the one held")
    fields, removed, files = delta.get("fields"), delta.get("removed"), delta.get("files")
    if not isinstance(fields, dict) or not isinstance(removed, list) or not isinstance(files, list):
        raise DeltaError("the manifest delta's fields, removed or files are malformed")
    try:
        doc = json.loads(base)
        by_path = {e["path"]: e for e in doc.get("files", [])}
        for path in removed:
            by_path.pop(path, None)
        for entry in files:
            by_path[entry["path"]] = entry
        doc.update({k: v for k, v in fields.items() if k not in FIELDS_EXCLUDED})
        doc["files"] = [by_path[p] for p in sorted(by_path)]
        text = canonical_json(doc)
    except (ValueError, KeyError, TypeError) as e:
        raise DeltaError(f"the manifest delta does not apply: {e}") from e
    if _sha(text) != delta.get("digest"):
        raise DeltaError("the manifest the delta rebuilds is not the one it names")
    return text
