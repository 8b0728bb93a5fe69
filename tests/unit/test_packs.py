"""A release's pack (ashat.fleet.packs): where each blob is in it, which runs a mainframe takes
from it, and how OMEGA builds and keeps the files."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ashat.agent.blobs import BlobStore
from ashat.agent.errors import NoSuchBlob
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest
from ashat.fleet import packs
from ashat.fleet.packs import Piece, build, layout, pack_path, runs


def entry(path: str, content: bytes, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, hashlib.sha256(content).hexdigest(), len(content), mode)


def manifest(files: list[FileEntry], update_id: str = "v1") -> Manifest:
    return Manifest(
        schema=SCHEMA,
        update_id=update_id,
        sequence=1,
        description="",
        created_at="2030-01-01T00:00:00+00:00",
        source={"kind": "dir", "path": "/src"},
        app={},
        files=tuple(sorted(files, key=lambda e: e.path)),
    )


def store_with(tmp_path: Path, contents: list[bytes]) -> BlobStore:
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp", 1 << 30)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    for data in contents:
        w = store.writer(hashlib.sha256(data).hexdigest())
        w.write(data)
        w.finish()
        store.commit([w])
    return store


def test_layout_is_each_distinct_blob_once_in_manifest_order() -> None:
    m = manifest(
        [
            entry("a", b"one"),
            entry("b", b"two!"),
            entry("c", b"one"),  # the same blob again: not twice in the pack
            FileEntry.symlink("d", "a"),  # no blob
            entry("e", b""),
        ]
    )
    assert layout(m) == [
        Piece(hashlib.sha256(b"one").hexdigest(), 3, 0),
        Piece(hashlib.sha256(b"two!").hexdigest(), 4, 3),
        Piece(hashlib.sha256(b"").hexdigest(), 0, 7),
    ]


def test_runs_are_consecutive_wanted_pieces_long_enough() -> None:
    pieces = [Piece(f"{i:064x}", 10, 10 * i) for i in range(20)]
    wanted = {p.sha256 for p in pieces[0:8] + pieces[9:12] + pieces[12:20]}
    got = runs(pieces, wanted, min_run=8)
    assert got == [pieces[0:8], pieces[9:20]]
    assert runs(pieces, wanted, min_run=12) == []


def test_empty_blobs_neither_join_nor_break_a_run() -> None:
    pieces = [Piece(f"{i:064x}", 0 if i == 2 else 10, 10 * i) for i in range(5)]
    got = runs(pieces, {p.sha256 for p in pieces}, min_run=4)
    assert got == [[p for p in pieces if p.size]]


def test_build_concatenates_the_blobs_and_is_kept(tmp_path: Path) -> None:
    contents = [os.urandom(1000 + i) for i in range(5)]
    store = store_with(tmp_path, contents)
    m = manifest([entry(f"f{i}", c) for i, c in enumerate(contents)])
    path = build(store, m)
    assert path == pack_path(store, m.digest())
    assert path.read_bytes() == b"".join(contents)
    assert path.stat().st_mode & 0o777 == 0o644  # nginx's user reads it
    before = path.stat().st_ino
    assert build(store, m) == path and path.stat().st_ino == before  # not built twice
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_build_refuses_a_release_whose_blob_is_gone(tmp_path: Path) -> None:
    store = store_with(tmp_path, [b"here"])
    m = manifest([entry("a", b"here"), entry("b", b"not stored")])
    with pytest.raises(NoSuchBlob, match=hashlib.sha256(b"not stored").hexdigest()):
        build(store, m)
    assert not pack_path(store, m.digest()).exists()


def test_building_a_pack_drops_the_others_but_those_kept(tmp_path: Path) -> None:
    contents = [os.urandom(100) for _ in range(4)]
    store = store_with(tmp_path, contents)
    ms = [manifest([entry("f", data)], update_id=f"v{i}") for i, data in enumerate(contents)]
    built = [build(store, m) for m in ms[:3]]
    assert [p.exists() for p in built] == [False, False, True]  # kept: none but its own
    built = [build(store, m, keep=[ms[1].digest()]) for m in ms[:2]]
    stale = built[0].parent / f".{ms[3].digest()}.x.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * packs.STALE_TEMP_S,) * 2)
    fresh = built[0].parent / f".{ms[3].digest()}.y.tmp"
    fresh.write_bytes(b"another replica's, being written")
    build(store, ms[3], keep=[ms[1].digest()])
    assert sorted(p.name for p in built[0].parent.iterdir()) == sorted(
        [ms[1].digest(), ms[3].digest(), fresh.name]
    )
