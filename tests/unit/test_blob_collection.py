"""Collecting unused blobs without a scan of the whole store at each activation (issue 20).

An activation that prunes a release deletes the blobs and mode files only that release
used; the whole store (where a blob uploaded for a release never staged lies) is scanned
at most once per ``--blob-grace``. A real agent, in this process, on a real directory."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ashat.agent.config import AgentConfig, AgentRole
from ashat.agent.core import Agent
from ashat.bundle import build_from_dir, sign_manifest
from ashat.bundle.keys import SigningKey
from support import put_blob

KEY = SigningKey.generate()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    config = AgentConfig(
        role=AgentRole.PUBLIC,
        data=tmp_path / "data",
        host="127.0.0.1",
        port=0,
        token="t",
        trusted={KEY.keyid: KEY.public},
        keep=2,
        blob_grace_s=0,
        app_user=os.environ.get("ASHAT_APP_USER") or ("nobody" if os.geteuid() == 0 else None),
    )
    a = Agent(config)
    a.open()
    yield a
    a.shutdown()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "tree").mkdir()
    return tmp_path / "tree"


def deploy(agent: Agent, tree: Path, n: int) -> dict[str, str]:
    """Stage and activate the tree as ``r{n}``; its files' digests by path."""
    built = build_from_dir(
        tree, update_id=f"r{n}", sequence=n, description="t", app={},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    for path in built.blobs.values():
        put_blob(agent, path.read_bytes())
    signed = sign_manifest(built.manifest, KEY)
    agent.stage(signed.to_bytes())
    agent.activate(signed.update_id)
    return {e.path: e.sha256 for e in signed.files}


def stored(agent: Agent, sha: str, mode: int = 0o644) -> bool:
    return os.path.exists(agent.blobs.file(sha, mode))


def test_a_pruned_release_frees_its_own_files_without_a_scan_of_the_store(
    agent: Agent, tree: Path
) -> None:
    (tree / "shared.txt").write_text("in every release\n")
    (tree / "own.bin").write_bytes(b"r1 only\n")
    (tree / "tool.sh").write_text("#!/bin/sh\necho r1\n")
    (tree / "tool.sh").chmod(0o755)
    r1 = deploy(agent, tree, 1)
    assert stored(agent, r1["tool.sh"], 0o755)  # a mode file of its own

    agent._full_collect_at = float("inf")  # no scan of the whole store is due from here
    orphan = put_blob(agent, b"uploaded for a push that never staged\n")
    (tree / "tool.sh").unlink()
    (tree / "own.bin").write_bytes(b"r2 only\n")
    r2 = deploy(agent, tree, 2)
    (tree / "own.bin").write_bytes(b"r3 only\n")
    deploy(agent, tree, 3)  # keep 2: r1 is pruned

    assert not stored(agent, r1["own.bin"])
    assert not stored(agent, r1["tool.sh"]) and not stored(agent, r1["tool.sh"], 0o755)
    assert stored(agent, r1["shared.txt"]) and stored(agent, r2["own.bin"])
    assert stored(agent, orphan)  # in no release: only a scan of the store finds it

    agent._full_collect_at = 0.0  # a scan is due (once per --blob-grace)
    (tree / "own.bin").write_bytes(b"r4 only\n")
    deploy(agent, tree, 4)
    assert not stored(agent, orphan)
    assert not stored(agent, r2["own.bin"]) and stored(agent, r1["shared.txt"])
    assert agent._full_collect_at > 0.0


def test_each_activation_scans_the_store_when_the_grace_is_zero(agent: Agent, tree: Path) -> None:
    (tree / "a.txt").write_text("a\n")
    (tree / "suid").write_text("#!/bin/sh\n")
    (tree / "suid").chmod(0o4755)  # stored without its setuid bit, as mode-0755
    deploy(agent, tree, 1)
    orphan = put_blob(agent, b"never staged\n")
    (tree / "a.txt").write_text("b\n")
    r2 = deploy(agent, tree, 2)
    assert not stored(agent, orphan)
    assert stored(agent, r2["suid"], 0o755)  # in use: kept


def test_a_release_pruned_with_an_unreadable_manifest_is_pruned_and_a_scan_follows(
    agent: Agent, tree: Path
) -> None:
    """Its blobs cannot be known: it goes as before, and the next activation scans the
    store. Activations neither fail nor stop pruning (a review found both)."""
    (tree / "a.txt").write_text("1\n")
    r1 = deploy(agent, tree, 1)
    (tree / "a.txt").write_text("2\n")
    deploy(agent, tree, 2)
    agent.layout.manifest_file("r1").write_text("{garbage")  # damaged on disk
    agent.releases._manifests.pop("r1")  # as after a restart
    agent._used_by.pop("r1", None)
    agent._full_collect_at = float("inf")
    for n in (3, 4):
        (tree / "a.txt").write_text(f"{n}\n")
        deploy(agent, tree, n)
    assert "r1" not in agent.releases.ids() and agent.links()[0] == "r4"
    assert not stored(agent, r1["a.txt"])  # found by the scan the unreadable one asked for
    assert set(agent._used_by) <= set(agent.releases.ids())


def test_a_new_store_waits_a_grace_for_its_first_scan_and_an_old_one_does_not(
    tmp_path: Path, tree: Path
) -> None:
    """Nothing in a store made at this start can be older than the grace, so its first
    activation does not scan it (a mainframe's first install, issue 20); a store that was
    there before is scanned at the first activation, for what an earlier run left."""
    config = AgentConfig(
        role=AgentRole.PUBLIC, data=tmp_path / "d", host="127.0.0.1", port=0, token="t",
        trusted={KEY.keyid: KEY.public}, keep=2, blob_grace_s=3600,
        app_user=os.environ.get("ASHAT_APP_USER") or ("nobody" if os.geteuid() == 0 else None),
    )  # fmt: skip
    scans: dict[str, int] = {"new": 0, "old": 0}
    for n, which in enumerate(("new", "old"), start=1):
        agent = Agent(config)  # the second time, the same directory opened again
        agent.open()
        scan = agent.blobs.collect

        def counted(*args: object, which: str = which, scan: object = scan) -> object:
            scans[which] += 1
            return scan(*args)  # type: ignore[operator]

        agent.blobs.collect = counted  # type: ignore[method-assign]
        (tree / "a.txt").write_text(f"{n}\n")
        try:
            deploy(agent, tree, n)
        finally:
            agent.shutdown()
            assert agent._lock_fd is not None
            os.close(agent._lock_fd)
    assert scans == {"new": 0, "old": 1}
