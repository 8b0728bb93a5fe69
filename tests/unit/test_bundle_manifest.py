"""The manifest (ashat.bundle.manifest): canonical round trip, and every way a manifest can
be wrong refused with the right error before anything trusts it."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ashat.bundle import manifest as manifest_module
from ashat.bundle.errors import (
    BundleError,
    DuplicatePath,
    ManifestInvalid,
    ManifestTooLarge,
    UnsafePath,
)
from ashat.bundle.manifest import (
    MAX_MANIFEST_BYTES,
    SCHEMA,
    FileEntry,
    Manifest,
    Signature,
    parse_manifest,
)
from ashat.canonical import canonical_json

SHA_X = hashlib.sha256(b"x").hexdigest()


def entry(path: str, content: bytes = b"x", mode: int = 0o644) -> FileEntry:
    return FileEntry(path, hashlib.sha256(content).hexdigest(), len(content), mode)


def make(files: tuple[FileEntry, ...] | None = None, **kw: Any) -> Manifest:
    fields: dict[str, Any] = {
        "schema": SCHEMA,
        "update_id": "u-1",
        "sequence": 1,
        "description": "first release",
        "created_at": "2030-01-01T00:00:00+00:00",
        "source": {"kind": "dir", "path": "/src"},
        "app": {"name": "web", "port": 8080},
        "files": files
        if files is not None
        else (
            entry("app.py", b"print(1)\n"),
            entry("bin/run", b"#!/bin/sh\n", 0o755),
            FileEntry.symlink("current", "app.py"),
        ),
    }
    fields.update(kw)
    return Manifest(**fields)


def raw(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


# --- the good path ---------------------------------------------------------------------


def test_round_trip_and_canonical_bytes() -> None:
    m = make()
    data = m.to_bytes()
    assert data == canonical_json(m.to_dict())
    assert parse_manifest(data) == m
    assert parse_manifest(data).to_bytes() == data
    assert m.signing_bytes() == canonical_json(m.signing_dict())
    assert "signatures" not in m.signing_dict()
    assert m.digest() == hashlib.sha256(m.signing_bytes()).hexdigest()


def test_files_sorted_and_order_does_not_change_the_digest() -> None:
    a, b = entry("b"), entry("a")
    m1, m2 = make(files=(a, b)), make(files=(b, a))
    assert [e.path for e in m1.files] == ["a", "b"]
    assert m1 == m2 and m1.digest() == m2.digest()


def test_symlink_entry_digest_is_of_its_target() -> None:
    e = FileEntry.symlink("link", "dir/target")
    assert e.sha256 == hashlib.sha256(b"dir/target").hexdigest()
    assert e.size == len("dir/target")
    assert e.to_dict()["target"] == "dir/target"
    assert "target" not in entry("f").to_dict()


def test_totals_and_blob_digests() -> None:
    m = make(files=(entry("a", b"12"), entry("b", b"12"), entry("c", b"345")))
    assert m.total_size == 7
    assert m.blob_digests() == {
        hashlib.sha256(b"12").hexdigest(),
        hashlib.sha256(b"345").hexdigest(),
    }
    m2 = make()
    assert m2.total_size == len(b"print(1)\n") + len(b"#!/bin/sh\n")  # the symlink not counted
    assert len(m2.blob_digests()) == 2


def test_with_signature_replaces_same_role_and_key() -> None:
    m = make()
    s1 = Signature("release", "0" * 16, "AAAA")
    s2 = Signature("release", "0" * 16, "BBBB")
    s3 = Signature("approval", "0" * 16, "CCCC", {"by": "omega"})
    m2 = m.with_signature(s1).with_signature(s3).with_signature(s2)
    assert m2.signatures == (s3, s2)
    assert m2.digest() == m.digest()  # signatures are not part of what is signed
    assert parse_manifest(m2.to_bytes()) == m2
    assert m2.without_signatures() == m


def test_values_are_copied_so_a_manifest_cannot_be_changed_from_outside() -> None:
    app = {"name": "web", "list": (1, 2)}
    m = make(app=app)
    app["name"] = "evil"
    m.to_dict()["app"]["name"] = "evil"
    assert m.app == {"name": "web", "list": [1, 2]}


def test_signatures_key_may_be_absent() -> None:
    d = make().to_dict()
    del d["signatures"]
    assert parse_manifest(raw(d)) == make()


def test_empty_manifest_is_fine() -> None:
    m = make(files=())
    assert parse_manifest(m.to_bytes()) == m
    assert m.total_size == 0


def test_git_source() -> None:
    m = make(source={"kind": "git", "commit": "a" * 40, "ref": "main"})
    assert parse_manifest(m.to_bytes()) == m


_component = st.text(alphabet="abcXYZ019._-é", min_size=1, max_size=6).filter(
    lambda c: c not in (".", "..")
)
_path = st.lists(_component, min_size=1, max_size=3).map("/".join)
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.floats(allow_nan=False)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    paths=st.lists(_path, max_size=8, unique=True),
    contents=st.lists(st.binary(max_size=20), min_size=8, max_size=8),
    modes=st.lists(st.integers(0, 0o7777), min_size=8, max_size=8),
    app=st.dictionaries(st.text(max_size=8), _json, max_size=4),
    description=st.text(max_size=50),
    sequence=st.integers(1, 2**63 - 1),
)
def test_round_trip_property(
    paths: list[str],
    contents: list[bytes],
    modes: list[int],
    app: dict[str, Any],
    description: str,
    sequence: int,
) -> None:
    files = tuple(entry(p, c, md) for p, c, md in zip(paths, contents, modes, strict=False))
    try:
        m = make(files=files, app=app, description=description, sequence=sequence)
    except BundleError:
        assume(False)  # generated a case collision or a file-as-parent: refused, not our subject
        raise
    assert parse_manifest(m.to_bytes()) == m
    # The bytes are put together from parts (the file list's made once per tuple): they
    # must be the canonical JSON of the whole, signed, replaced or not.
    signed = replace(m, sequence=1).with_signature(Signature("alpha", "0" * 16, "c2ln"))
    for each in (m, signed):
        assert each.to_bytes() == canonical_json(each.to_dict())
        assert each.signing_bytes() == canonical_json(each.signing_dict())


# --- refusals --------------------------------------------------------------------------

Mutator = Callable[[dict[str, Any]], None]


def _set(path: tuple[Any, ...], value: Any) -> Mutator:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutator:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _add_file(e: dict[str, Any]) -> Mutator:
    return lambda d: d["files"].append(e)


def _file(path: str, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"path": path, "sha256": SHA_X, "size": 1, "mode": 0o644, "kind": "file"}
    d.update(over)
    return d


def _link(path: str, target: str) -> dict[str, Any]:
    # Built by hand: FileEntry.symlink would (rightly) refuse the unsafe ones.
    t = target.encode()
    sha = hashlib.sha256(t).hexdigest()
    return {
        "path": path,
        "sha256": sha,
        "size": len(t),
        "mode": 0o777,
        "kind": "symlink",
        "target": target,
    }


F0 = ("files", 0)  # app.py

REFUSALS: list[tuple[str, Mutator, type[BundleError]]] = [
    # paths
    ("absolute path", _set((*F0, "path"), "/etc/passwd"), UnsafePath),
    ("dot-dot path", _set((*F0, "path"), "../../etc/passwd"), UnsafePath),
    ("inner dot-dot", _set((*F0, "path"), "a/../../b"), UnsafePath),
    ("backslash", _set((*F0, "path"), "..\\x"), UnsafePath),
    ("NUL in path", _set((*F0, "path"), "a\0b"), UnsafePath),
    ("empty path", _set((*F0, "path"), ""), UnsafePath),
    ("path not a string", _set((*F0, "path"), 5), UnsafePath),
    ("symlink escape", _add_file(_link("esc", "../outside")), UnsafePath),
    ("absolute symlink", _add_file(_link("esc", "/etc/passwd")), UnsafePath),
    (
        "symlink escape through another symlink",
        lambda d: d["files"].extend([_link("d", "."), _link("x", "d/../etc")]),
        UnsafePath,
    ),
    (
        "file under a symlink",
        lambda d: d["files"].extend([_link("d", "bin"), _file("d/evil")]),
        UnsafePath,
    ),
    ("duplicate path", _add_file(_file("app.py")), DuplicatePath),
    ("case collision", _add_file(_file("APP.py")), DuplicatePath),
    ("case collision via directory", _add_file(_file("BIN/other")), DuplicatePath),
    ("file is also a parent", _add_file(_file("app.py/inner")), ManifestInvalid),
    # digests, sizes, modes, kinds
    ("short digest", _set((*F0, "sha256"), "ab" * 10), ManifestInvalid),
    ("uppercase digest", _set((*F0, "sha256"), SHA_X.upper()), ManifestInvalid),
    ("non-hex digest", _set((*F0, "sha256"), "g" * 64), ManifestInvalid),
    ("digest not a string", _set((*F0, "sha256"), 7), ManifestInvalid),
    ("negative size", _set((*F0, "size"), -1), ManifestInvalid),
    ("size as string", _set((*F0, "size"), "9"), ManifestInvalid),
    ("size as float", _set((*F0, "size"), 9.0), ManifestInvalid),
    ("size as bool", _set((*F0, "size"), True), ManifestInvalid),
    ("size too big", _set((*F0, "size"), 2**63), ManifestInvalid),
    ("mode too big", _set((*F0, "mode"), 0o10000), ManifestInvalid),
    ("negative mode", _set((*F0, "mode"), -1), ManifestInvalid),
    ("mode as string", _set((*F0, "mode"), "644"), ManifestInvalid),
    ("mode as bool", _set((*F0, "mode"), False), ManifestInvalid),
    ("unknown kind", _set((*F0, "kind"), "dir"), ManifestInvalid),
    ("file with a target", _set((*F0, "target"), "x"), ManifestInvalid),
    ("file with a null target", _set((*F0, "target"), None), ManifestInvalid),
    ("symlink without target", _delete(("files", 2, "target")), ManifestInvalid),
    ("symlink target type", _set(("files", 2, "target"), 3), ManifestInvalid),
    ("symlink digest not of target", _set(("files", 2, "sha256"), SHA_X), ManifestInvalid),
    ("symlink size not of target", _set(("files", 2, "size"), 99), ManifestInvalid),
    ("unknown entry field", _set((*F0, "owner"), "root"), ManifestInvalid),
    ("missing entry field", _delete((*F0, "mode")), ManifestInvalid),
    ("entry not an object", _set(F0, "app.py"), ManifestInvalid),
    ("files not a list", _set(("files",), {}), ManifestInvalid),
    # top level
    ("unknown field", _set(("extra",), 1), ManifestInvalid),
    ("missing field", _delete(("update_id",)), ManifestInvalid),
    ("schema 2", _set(("schema",), 2), ManifestInvalid),
    ("schema as bool", _set(("schema",), True), ManifestInvalid),
    ("schema as float", _set(("schema",), 1.0), ManifestInvalid),
    ("schema as string", _set(("schema",), "1"), ManifestInvalid),
    ("bad update id", _set(("update_id",), "Bad Id"), ManifestInvalid),
    ("update id not a string", _set(("update_id",), 12), ManifestInvalid),
    ("sequence zero", _set(("sequence",), 0), ManifestInvalid),
    ("sequence as bool", _set(("sequence",), True), ManifestInvalid),
    ("sequence as string", _set(("sequence",), "1"), ManifestInvalid),
    ("sequence as float", _set(("sequence",), 1.5), ManifestInvalid),
    ("description not a string", _set(("description",), ["x"]), ManifestInvalid),
    ("created_at not a time", _set(("created_at",), "yesterday"), ManifestInvalid),
    ("created_at naive", _set(("created_at",), "2030-01-01T00:00:00"), ManifestInvalid),
    ("created_at not a string", _set(("created_at",), 1893456000), ManifestInvalid),
    ("app not an object", _set(("app",), ["web"]), ManifestInvalid),
    ("source kind unknown", _set(("source", "kind"), "svn"), ManifestInvalid),
    ("source kind unhashable", _set(("source", "kind"), ["dir"]), ManifestInvalid),
    ("source unknown field", _set(("source", "x"), 1), ManifestInvalid),
    ("source path type", _set(("source", "path"), 1), ManifestInvalid),
    ("source not an object", _set(("source",), "dir"), ManifestInvalid),
    # signatures
    ("signatures not a list", _set(("signatures",), {}), ManifestInvalid),
    ("signature not an object", _set(("signatures",), ["sig"]), ManifestInvalid),
    (
        "signature bad keyid",
        _set(("signatures",), [{"role": "release", "keyid": "XYZ", "sig": "AA=="}]),
        ManifestInvalid,
    ),
    (
        "signature bad role",
        _set(("signatures",), [{"role": "Release!", "keyid": "0" * 16, "sig": "AA=="}]),
        ManifestInvalid,
    ),
    (
        "signature sig type",
        _set(("signatures",), [{"role": "release", "keyid": "0" * 16, "sig": 5}]),
        ManifestInvalid,
    ),
    (
        "signature payload type",
        _set(("signatures",), [{"role": "a", "keyid": "0" * 16, "sig": "AA==", "payload": [1]}]),
        ManifestInvalid,
    ),
    (
        "signature unknown field",
        _set(("signatures",), [{"role": "a", "keyid": "0" * 16, "sig": "", "when": 1}]),
        ManifestInvalid,
    ),
    (
        "duplicate signature",
        _set(("signatures",), [{"role": "a", "keyid": "0" * 16, "sig": "AA=="}] * 2),
        ManifestInvalid,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "error"), [(m, e) for _, m, e in REFUSALS], ids=[n for n, _, _ in REFUSALS]
)
def test_invalid_manifest_is_refused(mutate: Mutator, error: type[BundleError]) -> None:
    d = make().to_dict()
    assert parse_manifest(raw(d)) == make()  # the base is valid
    mutate(d)
    with pytest.raises(error) as ei:
        parse_manifest(raw(d))
    assert ei.value.exit_code == 2
    assert ei.value.message


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "not an object"),
        (b"null", "not an object"),
        (b"", "empty"),
        (b'{"schema": NaN}', "NaN"),
        (b'{"schema": 1e400}', "infinite"),
        (b"[" * 100_000 + b"]" * 100_000, "deep nesting"),
        (b"\xef\xbb\xbf{}", "BOM"),
        (json.dumps({"s": 1}).encode("utf-16"), "UTF-16"),
    ],
)
def test_unparseable_bytes_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(data)


def test_duplicate_json_key_is_refused() -> None:
    good = make().to_bytes()
    # A second "sequence" that a lenient parser would let win.
    evil = good[:-1] + b',"sequence":2}'
    with pytest.raises(ManifestInvalid, match="duplicate JSON key 'sequence'"):
        parse_manifest(evil)


def test_a_duplicate_key_in_an_entry_is_refused_and_other_spacing_is_read() -> None:
    """Canonical bytes are read by the C parser alone (issue 20); anything else, key by key."""
    m = make()
    good = m.to_bytes()
    i = good.index(b'"mode":')
    evil = good[:i] + b'"mode":420,' + good[i:]  # a file entry with "mode" twice
    with pytest.raises(ManifestInvalid, match="duplicate JSON key 'mode'"):
        parse_manifest(evil)
    spaced = json.dumps(json.loads(good), indent=2).encode()
    assert spaced != good and parse_manifest(spaced) == m


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(ManifestTooLarge) as ei:
        parse_manifest(b"x" * 101, max_bytes=100)  # not JSON either: size wins
    assert (ei.value.size, ei.value.limit) == (101, 100)
    data = make().to_bytes()
    assert parse_manifest(data, max_bytes=len(data)) == make()
    with pytest.raises(ManifestTooLarge):
        parse_manifest(data, max_bytes=len(data) - 1)
    assert MAX_MANIFEST_BYTES == 16 * 1024 * 1024


def test_errors_name_the_culprit() -> None:
    d = make().to_dict()
    d["files"][1]["size"] = True
    with pytest.raises(ManifestInvalid, match=r"'bin/run'.*size") as ei:
        parse_manifest(raw(d))
    assert ei.value.field == "size"
    d = make().to_dict()
    d["files"].append(_file("APP.PY"))
    with pytest.raises(DuplicatePath) as dup:
        parse_manifest(raw(d))
    assert {dup.value.path, dup.value.other} == {"APP.PY", "app.py"}
    d = make().to_dict()
    d["files"].append(_link("esc", "../x"))
    with pytest.raises(UnsafePath) as up:
        parse_manifest(raw(d))
    assert up.value.path == "esc" and up.value.target == "../x"


def test_construction_validates_too() -> None:
    with pytest.raises(ManifestInvalid):
        make(sequence=True)
    with pytest.raises(ManifestInvalid):
        make(app={"when": object()})
    with pytest.raises(ManifestInvalid):
        make(description="lone \ud800 surrogate")
    with pytest.raises(ManifestInvalid):
        make(files=(entry("a"), "b"))  # type: ignore[arg-type]
    with pytest.raises(UnsafePath):
        FileEntry.symlink("l", "../out")
    with pytest.raises(ManifestInvalid):
        Signature("release", "0" * 16, "AA", payload={"x": float("nan")})


def test_unchanged_input_dict_after_parse() -> None:
    d = make().to_dict()
    before = copy.deepcopy(d)
    parse_manifest(raw(d))
    assert d == before


def test_the_same_bytes_parse_once_and_the_limit_and_refusals_hold_each_time() -> None:
    """A mainframe parses a manifest to check a directive, then again to stage it: the
    second parse is remembered (a Manifest is immutable); the size limit is checked on
    every call and a refusal is raised every time, never remembered."""
    data = make().to_bytes()
    assert parse_manifest(data) is parse_manifest(bytearray(data))
    with pytest.raises(ManifestTooLarge):
        parse_manifest(data, max_bytes=len(data) - 1)
    bad = data.replace(b'"schema":1', b'"schema":2')
    assert bad != data
    for _ in range(2):
        with pytest.raises(ManifestInvalid, match="schema"):
            parse_manifest(bad)


def test_a_replaced_manifest_keeps_its_checked_files_and_new_files_are_checked() -> None:
    """``dataclasses.replace`` (a push signs a new sequence, then signatures) takes the
    checked tuple as it is (issue 20: 2,000 paths are not checked three times); any other
    files are sorted and checked as ever."""
    from dataclasses import replace

    m = make()
    again = replace(m, sequence=2)
    assert again.files is m.files
    assert replace(m, files=tuple(reversed(m.files))).files == m.files  # sorted anew
    assert replace(m, files=list(m.files)).files == m.files
    with pytest.raises(DuplicatePath):
        replace(m, files=(*m.files, entry("app.py")))
    with pytest.raises(UnsafePath, match="lies under symlink"):
        replace(m, files=(*m.files, entry("current/x")))
    with pytest.raises(ManifestInvalid, match="FileEntry"):
        replace(m, files=(*m.files, "app2.py"))


def test_entries_shared_with_the_manifest_read_last_parse_as_a_fresh_read_would() -> None:
    """A release shares most entries with the one before: parsing reuses those entries
    (issue 20), but only where the JSON is exactly an entry read last. A value of another
    JSON type that compares equal (true for 1, 420.0 for 420) is refused as ever."""
    first = make()
    parse_manifest(first.to_bytes())
    second = make(files=(*first.files[:2], entry("new.txt", b"new\n")), update_id="u-2", sequence=2)
    got = parse_manifest(second.to_bytes())
    assert got == second and got.to_bytes() == second.to_bytes()
    assert got.files[0] is not second.files[0] and got.files[0] == first.files[0]
    d = first.to_dict()
    for fld, value in (("size", True), ("mode", 420.0), ("size", 9.0)):
        parse_manifest(first.to_bytes())  # its entries are the ones read last
        bad = copy.deepcopy(d)
        bad["files"][0][fld] = value
        with pytest.raises(ManifestInvalid, match=f"{fld} must be an integer"):
            parse_manifest(canonical_json(bad))
    unsorted = copy.deepcopy(d)
    unsorted["files"].reverse()
    parse_manifest(first.to_bytes())
    assert parse_manifest(canonical_json(unsorted)) == first  # sorted: same signed bytes
    assert parse_manifest(canonical_json(unsorted)).signing_bytes() == first.signing_bytes()


def test_an_entry_read_last_is_canonical_only_as_its_very_bytes() -> None:
    """A stage reuses the canonical JSON of the entries read last to see that new bytes are
    canonical (issue 20): the bytes themselves must still be those, so a duplicate key or
    other spacing in such an entry is read the careful way, as in an entry never seen."""
    m = make()
    good = m.to_bytes()
    i = good.index(b'"mode":')
    for evil, refused in (
        (good[:i] + b'"mode":420,' + good[i:], "duplicate JSON key 'mode'"),
        (good[:i] + b'"mode":493,' + good[i:], "duplicate JSON key 'mode'"),
    ):
        assert parse_manifest(good) == m  # its entries, and their JSON, are the ones read last
        with pytest.raises(ManifestInvalid, match=refused):
            parse_manifest(evil)
    parse_manifest(good)
    spaced = good[:i] + b" " + good[i:]
    assert parse_manifest(spaced) == m and parse_manifest(spaced).to_bytes() == good
    other = make(update_id="u-2", sequence=2)  # every entry shared with the one read last
    assert parse_manifest(other.to_bytes()).to_bytes() == other.to_bytes()


@given(
    path=st.text(),
    sha=st.text(),
    size=st.integers(min_value=-(2**70), max_value=2**70),
    mode=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_a_file_entrys_json_written_directly_is_what_json_dumps_writes(
    path: str, sha: str, size: int, mode: int
) -> None:
    """A first stage writes each new entry's canonical JSON itself (json.dumps for each of
    2,000 entries was ~10 ms of it, issue 20): byte for byte what canonical_json makes, for
    any text (quotes, backslashes, control characters, lone surrogates) and any integer."""
    d = {"kind": "file", "mode": mode, "path": path, "sha256": sha, "size": size}
    try:
        want: bytes | type[Exception] = canonical_json(d)
    except ValueError as e:
        want = type(e)
    if isinstance(want, bytes):
        assert manifest_module._file_json(d) == want
    else:
        with pytest.raises(want):
            manifest_module._file_json(d)


def test_a_manifest_of_new_entries_is_read_without_json_dumps_for_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading a canonical manifest of 2,000 entries never read before made each entry's
    JSON with json.dumps again, to see that the bytes are canonical; it reads as before."""
    m = make(
        files=tuple(entry(f"d{i % 40}/f{i}.txt", f"{i}".encode()) for i in range(2000)),
        update_id="u-new",
        description="entries never read",
    )
    calls = []
    real = manifest_module.canonical_json
    monkeypatch.setattr(manifest_module, "canonical_json", lambda v: calls.append(1) or real(v))
    got = parse_manifest(m.to_bytes())
    assert got == m and got.to_bytes() == m.to_bytes()
    assert len(calls) < 100  # its other members (and its 40 directories), not its entries


def test_the_tree_checks_are_skipped_only_for_the_paths_and_targets_checked_last() -> None:
    """A release whose paths and symlink targets are those just checked passes the same
    tree checks (issue 20: ~3 ms of 2,000 paths); any other list is checked in full."""
    m = make()
    assert replace(m, files=tuple(reversed(m.files))).files == m.files
    # the same paths, a target that changed: checked, and its loop found
    loop = (*m.files[:2], FileEntry.symlink("current", "current"))
    with pytest.raises(UnsafePath, match="leaves the tree"):
        make(files=loop)
    make()
    with pytest.raises(DuplicatePath, match="case"):
        make(files=(*m.files, entry("APP.py")))
    make()
    with pytest.raises(ManifestInvalid, match="is a file but also the parent"):
        make(files=(*m.files, entry("app.py/x")))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"sha256": "X" * 64}, "sha256 must be 64 lowercase hex digits"),
        ({"size": -1}, "size must be an integer"),
        ({"size": True}, "size must be an integer"),
        ({"mode": 0o10000}, "mode must be an integer"),
        ({"kind": "dir"}, "kind must be 'file' or 'symlink'"),
        ({"target": "app.py"}, "a regular file has no target"),
    ],
)
def test_a_file_entry_that_is_not_all_well_says_why(fields: dict[str, Any], error: str) -> None:
    good = {"path": "a.txt", "sha256": SHA_X, "size": 1, "mode": 0o644}
    with pytest.raises(ManifestInvalid, match=error):
        FileEntry(**(good | fields))
