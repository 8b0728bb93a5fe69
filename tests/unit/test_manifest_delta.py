"""A signed manifest as its difference from one the mainframe holds (issue 20,
``bundle/delta.py``): it rebuilds the exact bytes, is small for a small change, and anything
that does not rebuild what it names is refused."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ashat.bundle.delta import DeltaError, apply_delta, make_delta
from ashat.canonical import canonical_json


def manifest(files: dict[str, str], update_id: str = "r1", signatures: Any = None) -> bytes:
    entries = [
        {"path": p, "sha256": hashlib.sha256(c.encode()).hexdigest(), "size": len(c),
         "mode": 420, "kind": "file"}
        for p, c in sorted(files.items())
    ]  # fmt: skip
    doc = {
        "schema": 1, "update_id": update_id, "sequence": 1, "description": "d",
        "created_at": "2030-01-01T00:00:00Z", "source": {}, "app": {}, "files": entries,
        "signatures": signatures or [{"keyid": "k", "sig": update_id}],
    }  # fmt: skip
    return canonical_json(doc)


def test_a_one_file_change_of_two_hundred_is_small_and_rebuilds_exactly() -> None:
    files = {f"src/m{i:03d}.py": f"print({i})" for i in range(200)}
    base = manifest(files)
    files["src/m007.py"] = "print('changed')"
    files["src/new.py"] = "new"
    del files["src/m100.py"]
    new = manifest(files, "r2")
    delta = make_delta(base, new)
    assert apply_delta(base, delta) == new
    assert delta["removed"] == ["src/m100.py"]
    assert [e["path"] for e in delta["files"]] == ["src/m007.py", "src/new.py"]
    assert len(canonical_json(delta)) < len(new) / 10


def test_a_delta_against_another_base_or_altered_is_refused() -> None:
    base = manifest({"a": "1", "b": "2"})
    new = manifest({"a": "1", "b": "3"}, "r2")
    delta = make_delta(base, new)
    with pytest.raises(DeltaError, match="another manifest"):
        apply_delta(manifest({"a": "9"}), delta)
    forged = {**delta, "files": [{**delta["files"][0], "sha256": "0" * 64}]}
    with pytest.raises(DeltaError, match="not the one it names"):
        apply_delta(base, forged)
    for bad in (None, [], {**delta, "files": "x"}, {**delta, "files": [{"nopath": 1}]}):
        with pytest.raises(DeltaError):
            apply_delta(base, bad)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.text("abc/", min_size=1, max_size=6), st.text(max_size=4), max_size=12),
    st.dictionaries(st.text("abc/", min_size=1, max_size=6), st.text(max_size=4), max_size=12),
)
def test_any_change_rebuilds_byte_for_byte(a: dict[str, str], b: dict[str, str]) -> None:
    base, new = manifest(a), manifest(b, "r2", [{"keyid": "k", "sig": json.dumps(b)}])
    assert apply_delta(base, make_delta(base, new)) == new
