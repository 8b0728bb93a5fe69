"""An agent's layout with a blob store shared by OMEGA replicas (``--blob-dir``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ashat.agent.layout import SHARED_TMP_MAX_AGE_S, Layout


def test_shared_blobs_and_their_tmp_live_in_the_blob_dir(tmp_path: Path) -> None:
    own, shared = Layout(tmp_path / "data"), Layout(tmp_path / "data", tmp_path / "blobs")
    assert (own.blobs, own.blob_tmp) == (tmp_path / "data" / "blobs", tmp_path / "data" / "tmp")
    assert (shared.blobs, shared.blob_tmp) == (tmp_path / "blobs", tmp_path / "blobs" / "tmp")
    shared.ensure()
    assert (tmp_path / "blobs" / "sha256").is_dir() and (tmp_path / "blobs" / "tmp").is_dir()
    assert not (tmp_path / "data" / "blobs").exists()


def test_start_up_removes_only_old_leftovers_from_a_shared_tmp(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data", tmp_path / "blobs")
    layout.ensure()
    old, fresh = layout.blob_tmp / "blob-old", layout.blob_tmp / "blob-another-replicas"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being uploaded through the other replica")
    long_ago = time.time() - SHARED_TMP_MAX_AGE_S - 60
    os.utime(old, (long_ago, long_ago))
    (layout.tmp / "mine").write_bytes(b"this agent's own tmp: always emptied")
    removed = layout.clean_tmp()
    assert sorted(removed) == ["blob-old", "mine"]
    assert fresh.exists() and not old.exists()


def test_the_blob_shards_are_made_with_the_store_not_during_an_install(tmp_path: Path) -> None:
    """Issue 20: the first blob of each ``sha256/ab/`` made it (a mkdir on the install's
    critical path, 256 of them for a fresh mainframe). ``ensure`` makes them, once; a store
    from before, missing some, gets them at its next start."""
    layout = Layout(tmp_path / "data")
    layout.ensure()
    shards = layout.blobs / "sha256"
    assert sorted(os.listdir(shards)) == [f"{i:02x}" for i in range(256)]
    (shards / "7f").rmdir()
    (shards / "00" / ("00" * 32)).write_bytes(b"a blob")
    layout.ensure()
    assert len(os.listdir(shards)) == 256 and (shards / "00" / ("00" * 32)).exists()
