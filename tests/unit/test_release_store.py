"""The release store's trees and the blob store's memory of what it hashed (issue 20): a
pruned release must not make the next push read every blob it shared again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ashat.agent import blobs as blobs_mod
from ashat.agent.blobs import BlobStore
from ashat.agent.layout import Layout
from ashat.agent.releases import ReleaseStore
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest

CONTENTS = [f"file {i}\n".encode() * (i + 1) for i in range(20)]


def release(update_id: str) -> Manifest:
    files = [
        FileEntry(f"f{i:02d}.txt", hashlib.sha256(c).hexdigest(), len(c), 0o644)
        for i, c in enumerate(CONTENTS)
    ]
    return Manifest(
        schema=SCHEMA, update_id=update_id, sequence=1, description="", app={},
        created_at="2030-01-01T00:00:00+00:00", source={"kind": "dir", "path": "/src"},
        files=tuple(files),
    )  # fmt: skip


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BlobStore, ReleaseStore]:
    monkeypatch.setattr(blobs_mod, "SETTLE_NS", 0)  # remember a hash at once
    layout = Layout(tmp_path / "agent")
    layout.ensure()
    blobs = BlobStore(layout.blobs, layout.tmp, 1 << 30)
    for data in CONTENTS:
        w = blobs.writer(hashlib.sha256(data).hexdigest())
        w.write(data)
        w.finish()
        blobs.commit([w])
    releases = ReleaseStore(layout, blobs)
    for update_id in ("r1", "r2"):
        m = release(update_id)
        releases.install(m, m.to_bytes(), releases.materialize(m, sealed=True))
    return blobs, releases


def hashed_during(monkeypatch: pytest.MonkeyPatch, blobs: BlobStore) -> int:
    """How many blobs ``blobs.missing`` of every digest reads to answer."""
    calls = []
    real = blobs_mod.hash_file

    def counting(path: str) -> object:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(blobs_mod, "hash_file", counting)
    digests = [hashlib.sha256(c).hexdigest() for c in CONTENTS]
    assert blobs.missing(digests) == []
    monkeypatch.setattr(blobs_mod, "hash_file", real)
    return len(calls)


@pytest.mark.parametrize(("sealed", "read"), [(True, 0), (False, len(CONTENTS))])
def test_removing_a_release_of_a_sealed_app_keeps_its_blobs_hashed(
    stores: tuple[BlobStore, ReleaseStore], monkeypatch: pytest.MonkeyPatch, sealed: bool, read: int
) -> None:
    blobs, releases = stores
    hashed_during(monkeypatch, blobs)  # each blob hashed (or known) once
    assert hashed_during(monkeypatch, blobs) == 0
    # unlinking the tree moves each blob's ctime: only where the app cannot write the store
    # is that known to be all that changed
    releases.remove("r1", sealed=sealed)
    assert not releases.exists("r1") and releases.exists("r2")
    assert hashed_during(monkeypatch, blobs) == read


def test_a_blob_altered_before_the_removal_is_still_read_again(
    stores: tuple[BlobStore, ReleaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs, releases = stores
    hashed_during(monkeypatch, blobs)
    victim = blobs.file(hashlib.sha256(CONTENTS[3]).hexdigest())
    Path(victim).chmod(0o644)
    Path(victim).write_bytes(b"X" * len(CONTENTS[3]))  # same size, new mtime
    releases.remove("r1", sealed=True)
    digests = [hashlib.sha256(c).hexdigest() for c in CONTENTS]
    assert blobs.missing(digests) == [digests[3]]  # quarantined, to be sent again
