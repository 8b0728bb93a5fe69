"""Disk is bounded (issue 15): each role deletes the blobs no kept release uses, and says
how much it freed. With ``--keep 2`` eight releases of one new 3 MiB blob each used to leave
every blob on disk, until a small disk filled; here a real PUBLIC takes 50 releases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

NEW_BYTES = 256 * 1024  # each release's own blob
RELEASES = 50


def blob_bytes(data: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(data / "blobs"):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@pytest.mark.slow
def test_fifty_releases_with_keep_2_leave_under_three_releases_of_blobs(
    agent_factory: Any, tmp_path: Path
) -> None:
    agent = agent_factory(keep=2, args=("--blob-grace", "0"))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "shared.txt").write_text("the same in every release\n")
    release_bytes = NEW_BYTES + len("the same in every release\n")
    for i in range(1, RELEASES + 1):
        (tree / "new.bin").write_bytes(os.urandom(NEW_BYTES))
        agent.deploy(tree, f"r{i:03d}", sequence=i)
    assert agent.link("current") == "releases/r050"
    used = blob_bytes(agent.data)
    assert used < 3 * release_bytes, f"{used} bytes of blobs for {release_bytes}-byte releases"
    assert "freed 1 unused blob file(s)" in agent.output()
    # what is kept still runs: roll back to the previous release
    with agent.client() as client:
        assert client.rollback("r050", None)["current"] == "r049"


def test_a_blob_uploaded_for_a_push_not_staged_yet_is_kept(
    agent_factory: Any, tmp_path: Path
) -> None:
    """The grace period: a push uploads its blobs before it stages its release."""
    agent = agent_factory(keep=2)  # the default --blob-grace
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("first\n")
    signed, built = agent.build(tree, "pending-1", sequence=9)
    with agent.client() as client:
        uploaded = agent.upload(client, signed, built)
    for i in range(1, 5):
        (tree / "a.txt").write_text(f"release {i}\n")
        agent.deploy(tree, f"r{i}", sequence=i)
    with agent.client() as client:
        assert client.missing(uploaded) == []  # still there for its stage
        assert client.stage(signed.to_bytes())["update_id"] == "pending-1"
