"""The agent's storage path under the races, crashes and hostile input a review found (the
seventh session of 2026-12-06): a real agent in this process, on a real directory, each
test failing on the code before its fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ashat.agent import blobs as blobs_module
from ashat.agent.blobs import BlobStore, BlobWriter
from ashat.agent.config import AgentConfig, AgentRole
from ashat.agent.core import Agent
from ashat.agent.layout import Layout
from ashat.agent.receive import receive_pack
from ashat.bundle import build_from_dir, sign_manifest
from ashat.bundle.keys import SigningKey
from support import put_blob

KEY = SigningKey.generate()


def make_agent(data: Path, **kw: Any) -> Agent:
    args: dict[str, Any] = {
        "role": AgentRole.PUBLIC, "data": data, "host": "127.0.0.1", "port": 0, "token": "t",
        "trusted": {KEY.keyid: KEY.public}, "keep": 3, "blob_grace_s": 0,
        "app_user": os.environ.get("ASHAT_APP_USER")
        or ("nobody" if os.geteuid() == 0 else None),
    }  # fmt: skip
    args.update(kw)
    a = Agent(AgentConfig(**args))
    a.open()
    return a


def restart(a: Agent, **kw: Any) -> Agent:
    a.shutdown()
    os.close(a._lock_fd)
    return make_agent(a.config.data, **kw)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = make_agent(tmp_path / "data")
    yield a
    a.shutdown()


def signed(tree: Path, n: int) -> bytes:
    built = build_from_dir(
        tree, update_id=f"r{n}", sequence=n, description="t", app={},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    return sign_manifest(built.manifest, KEY).to_bytes()


def stage(agent: Agent, tree: Path, n: int) -> str:
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            put_blob(agent, path.read_bytes())
    agent.stage(signed(tree, n))
    return f"r{n}"


class Linker:
    """Another thread making and dropping a hard link to ``path`` (as a stage links a
    release tree to its blobs, and the sweeper deletes a pruned tree): each moves the
    inode's ctime, and nothing else."""

    def __init__(self, path: str, spare: Path) -> None:
        self.path, self.spare = path, spare
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                os.link(self.path, self.spare)
                os.unlink(self.spare)
            except FileNotFoundError:
                return
            time.sleep(0.002)

    def __enter__(self) -> Linker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_a_blob_linked_while_it_is_hashed_is_not_quarantined(agent: Agent) -> None:
    # Its ctime moved during the read, so it "changed while being read": a blob that hashes
    # to its name was moved to quarantine/, and a release using it judged damaged, deleted.
    data = os.urandom(64 << 20)
    sha = put_blob(agent, data)
    agent.blobs._hashed.clear()  # as after a restart: its bytes must be read again
    with Linker(agent.blobs.file(sha), agent.layout.tmp / "other-link"):
        size = agent.blobs.size(sha)  # GET /v1/blobs, /v1/blobs/missing, a pack's look
    assert size == len(data) and agent.blobs.quarantined == 0


def test_an_activation_after_a_restart_survives_the_next_stage_linking_its_blobs(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(64 << 20))
    (tree / "v.txt").write_text("1\n")
    a = make_agent(tmp_path / "d")
    a.activate(stage(a, tree, 1))
    (tree / "v.txt").write_text("2\n")
    stage(a, tree, 2)
    (tree / "v.txt").write_text("3\n")
    r3 = signed(tree, 3)
    put_blob(a, b"3\n")
    b = restart(a, blob_grace_s=3600)  # nothing known hashed
    try:
        nxt = threading.Thread(target=b.stage, args=(r3,))  # links big.bin into its tree
        nxt.start()
        time.sleep(0.02)
        b.activate("r2")  # hashes big.bin meanwhile
        nxt.join()
        assert b.links()[0] == "r2" and set(b.releases.ids()) == {"r1", "r2", "r3"}
    finally:
        b.shutdown()


@pytest.mark.skipif(os.geteuid() != 0, reason="the 'user' jail (an app user) needs root")
def test_in_the_user_jail_the_app_cannot_rewrite_an_older_release(tmp_path: Path) -> None:
    # A file pushed 0666 (a developer's umask 000) kept its group and other write: every
    # release linking it could be rewritten by the app's user, the rollback target too.
    data = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by the app's user
    data.chmod(0o711)
    agent = make_agent(data / "d", sandbox="none", app_user="nobody")
    try:
        assert agent.jail.mode == "user" and agent.jail.isolated
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "config.txt").write_text("signed config\n")
        (tree / "config.txt").chmod(0o666)
        for n in (1, 2):
            (tree / "v.txt").write_text(f"{n}\n")
            agent.activate(stage(agent, tree, n))
        old = agent.layout.link("previous") / "config.txt"
        assert oct(old.stat().st_mode & 0o777) == "0o644"
        launch = agent.jail.launch(
            ["/bin/sh", "-c", f"echo rewritten > {old}"], tree, tree, {"PATH": "/usr/bin:/bin"}
        )
        app = subprocess.run(
            launch.argv, env=launch.env, pass_fds=launch.pass_fds, capture_output=True, text=True
        )
        launch.close()
        assert app.returncode != 0 and "Permission denied" in app.stderr
        assert old.read_text() == "signed config\n"
        agent.rollback(None, None)
        assert agent.links()[0] == "r1"
    finally:
        agent.shutdown()


def test_a_store_of_an_earlier_version_loses_group_and_other_write_at_start(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path / "d")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "config.txt").write_text("signed config\n")
    (tree / "config.txt").chmod(0o666)
    a.activate(stage(a, tree, 1))
    release_file = a.layout.link("current") / "config.txt"
    os.chmod(release_file, 0o666)  # as the earlier version stored it (mode-0666/)
    sha = hashlib.sha256(b"signed config\n").hexdigest()
    older = Path(a.blobs.file(sha, 0o666))
    older.parent.mkdir(parents=True)
    os.link(release_file, older)
    copied = a.layout.release_dir("r1") / "copied.txt"  # a copy it made where a link failed
    shutil.copyfile(release_file, copied)
    os.chmod(copied, 0o664)  # umask 002, Ubuntu's default for users
    (a.layout.root / "modes-masked").unlink()  # a data directory of that version
    b = restart(a)
    try:
        assert oct(release_file.stat().st_mode & 0o777) == "0o644"
        assert oct(copied.stat().st_mode & 0o777) == "0o644"
        copied.unlink()  # not in r1's manifest: here only to be masked
        (tree / "v.txt").write_text("2\n")
        b.activate(stage(b, tree, 2))
        b.rollback(None, None)  # r1's files match the signed manifest (with the mask)
        assert b.links()[0] == "r1"
    finally:
        b.shutdown()


def test_a_kept_release_whose_manifest_cannot_be_read_fails_no_activation(
    agent: Agent, tmp_path: Path
) -> None:
    # _uses caught only AgentError: the BundleError of a damaged manifest (or one a stricter
    # version refuses) escaped after the switch, and activate answered 400.
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in (1, 2):
        (tree / "a.txt").write_text(f"{n}\n")
        agent.activate(stage(agent, tree, n))
    agent.layout.manifest_file("r1").write_text("{garbage")
    agent.releases._manifests.pop("r1")
    agent._used_by.pop("r1", None)
    (tree / "a.txt").write_text("3\n")
    agent.activate(stage(agent, tree, 3))
    assert agent.links()[0] == "r3"
    listed = {r["update_id"]: r for r in agent.list_releases()["releases"]}
    assert "unreadable" in listed["r1"]


def test_a_replica_starting_spares_another_replicas_blob_waiting_for_its_commit(
    tmp_path: Path,
) -> None:
    # OMEGA replicas share --blob-dir; one starting removes old leftovers of its tmp/ by
    # mtime, and a finished blob waiting for the rest of its pack has the store's 1970 mtime.
    shared = tmp_path / "blobs"
    one = Layout(tmp_path / "one", shared)
    one.ensure()
    store = BlobStore(one.blobs, one.blob_tmp, 1 << 20)
    data = b"a blob of a pack still arriving\n"
    w = BlobWriter(store, hashlib.sha256(data).hexdigest())
    w.write(data)
    w.finish()
    other = Layout(tmp_path / "two", shared)
    other.ensure()
    assert other.clean_tmp() == []
    assert store.commit([w]) == 1


def r1_with_its_own_blob(tmp_path: Path, own: bytes) -> tuple[Agent, Path]:
    """An agent (keep 2, --blob-grace 0.3 s) with r1, whose blob ``own`` no other release
    uses, r2 active and r3 staged, r1's blob last linked longer ago than the grace: the
    next activation (of r3) prunes r1. Returns the agent and the tree."""
    agent = make_agent(tmp_path / "d", keep=2, blob_grace_s=0.3)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "own.bin").write_bytes(own)
    agent.activate(stage(agent, tree, 1))
    (tree / "own.bin").unlink()
    for n in (2, 3):
        (tree / "v.txt").write_text(f"{n}\n")
        stage(agent, tree, n)
    agent.activate("r2")
    time.sleep(0.5)
    return agent, tree


def test_the_activation_that_prunes_a_release_frees_the_blobs_only_it_used(
    tmp_path: Path,
) -> None:
    # The pruned tree's deletion ran at once, beside the collection: its unlinks moved the
    # blob's ctime, and the collection spared it as touched within --blob-grace.
    agent, _ = r1_with_its_own_blob(tmp_path, os.urandom(1 << 20))
    try:
        own = agent.releases.manifest("r1").files[0].sha256
        agent.activate("r3")  # prunes r1
        assert "r1" not in agent.releases.ids()
        assert not os.path.exists(agent.blobs.file(own))
    finally:
        agent.shutdown()


def three_staged(tmp_path: Path) -> Agent:
    """An agent with r1, r2 and r3 staged, none active."""
    a = make_agent(tmp_path / "d")
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in (1, 2, 3):
        (tree / "v.txt").write_text(f"{n}\n")
        stage(a, tree, n)
    return a


def test_a_crash_between_the_two_links_keeps_the_rollback_target(tmp_path: Path) -> None:
    a = three_staged(tmp_path)
    a.activate("r1")
    a.activate("r2")
    assert a.links() == ("r2", "r1")
    a.releases.set_link("previous", "r2")  # activating r3 crashed at switch.links
    b = restart(a)
    try:
        assert b.links() == ("r2", "r1")
    finally:
        b.shutdown()


def test_a_crash_between_the_links_after_a_rollback_restores_no_rolled_back_release(
    tmp_path: Path,
) -> None:
    # After a rollback (r2 -> r1) previous is none; a later switch crashed between its two
    # links, and previous was restored to r2, the release just rolled back from.
    a = three_staged(tmp_path)
    a.activate("r1")
    a.activate("r2")
    a.rollback(None, None)
    assert a.links() == ("r1", None)
    a.releases.set_link("previous", "r1")  # activating r3 crashed at switch.links
    b = restart(a)
    try:
        assert b.links() == ("r1", None)
    finally:
        b.shutdown()


def test_a_pack_of_one_blob_a_million_times_costs_no_memory(tmp_path: Path) -> None:
    # Each entry kept a writer (and its hash) to the end: 67 MB of headers took ~580 MiB.
    (tmp_path / "b" / "sha256").mkdir(parents=True)
    (tmp_path / "t").mkdir()
    store = BlobStore(tmp_path / "b", tmp_path / "t", 1 << 30)
    line = f"{hashlib.sha256(b'').hexdigest()} 0\n".encode()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield line * 1000

    tracemalloc.start()
    try:
        result = asyncio.run(receive_pack(body(), store))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.blobs == 200_000 and result.stored == 1
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB"


def test_a_pack_of_blobs_stored_already_stores_nothing_new_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A pack's blobs are not looked up in the store before they are written (the client
    sends those it was told are missing); one stored already is dropped at the commit,
    keeping the stored file, and the answer counts it as not new."""
    (tmp_path / "t").mkdir()
    store = BlobStore(tmp_path / "b", tmp_path / "t", 1 << 30)
    blobs = [f"blob {i}\n".encode() * 100 for i in range(3)]

    async def pack(*items: bytes) -> AsyncIterator[bytes]:
        for data in items:
            yield f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode() + data

    assert asyncio.run(receive_pack(pack(blobs[0]), store)).stored == 1
    first = os.stat(store.file(hashlib.sha256(blobs[0]).hexdigest()))
    result = asyncio.run(receive_pack(pack(*blobs), store))
    assert (result.blobs, result.stored) == (3, 2)
    again = os.stat(store.file(hashlib.sha256(blobs[0]).hexdigest()))
    assert (again.st_ino, again.st_ctime_ns) == (first.st_ino, first.st_ctime_ns)
    assert os.listdir(tmp_path / "t") == []
    assert store.missing([hashlib.sha256(b).hexdigest() for b in blobs]) == []


def test_a_pack_draws_the_systems_randomness_once_not_once_a_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob's temp file was named from 8 random bytes of its own: a ``getrandom`` call
    per blob, ~4 % of a first push's upload (issue 20). Names are now a prefix drawn once
    per process and a counter; a forked child draws its own, so two processes writing one
    shared store do not try the same names."""
    calls = []
    real = blobs_module.secrets.token_hex
    monkeypatch.setattr(blobs_module.secrets, "token_hex", lambda n: calls.append(n) or real(n))
    monkeypatch.setattr(blobs_module, "_names", None, raising=False)
    (tmp_path / "t").mkdir()
    store = BlobStore(tmp_path / "b", tmp_path / "t", 1 << 30)
    items = [f"blob {i}\n".encode() * 10 for i in range(50)]

    async def pack() -> AsyncIterator[bytes]:
        for data in items:
            yield f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode() + data

    assert asyncio.run(receive_pack(pack(), store)).stored == 50
    assert len(calls) == 1
    assert store.missing([hashlib.sha256(d).hexdigest() for d in items]) == []
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first name, to the parent
        os.write(write, blobs_module._temp_name().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        child = f.read().decode()
    assert child.split("-")[0] != blobs_module._temp_name().split("-")[0]


def test_a_pack_of_a_blob_stored_already_spends_no_quota(tmp_path: Path) -> None:
    """Review (seventh session): with packs no longer looked up before writing, a blob
    stored already counted against ashat serve's spool quota, and a retried pack got 413."""
    (tmp_path / "t").mkdir()
    store = BlobStore(tmp_path / "b", tmp_path / "t", 1 << 30)
    data = b"x" * 5000
    sha = hashlib.sha256(data).hexdigest()
    w = store.writer(sha)
    w.write(data)
    w.finish()
    store.commit([w])
    store.budget = (1000, "your upload quota")  # less room left than the blob's size

    async def pack() -> AsyncIterator[bytes]:
        yield f"{sha} {len(data)}\n".encode() + data

    result = asyncio.run(receive_pack(pack(), store))
    assert (result.blobs, result.stored, store.spent) == (1, 0, 0)
    assert os.listdir(tmp_path / "t") == []


def test_a_stage_racing_an_activation_that_prunes_keeps_the_blobs_it_was_told_were_there(
    tmp_path: Path,
) -> None:
    # The client asked /v1/blobs/missing, was told X is stored, and staged r4; meanwhile
    # another activation pruned r1, the only release using X, and X went: a 500.
    agent, tree = r1_with_its_own_blob(tmp_path, b"X: in r1 and r4 only\n")
    try:
        materialize = agent.releases.materialize

        def racing(m: Any, **kw: Any) -> Path:  # another request's activation meanwhile
            agent.activate("r3")  # prunes r1 (keep 2: r2, r3)
            return materialize(m, **kw)

        agent.releases.materialize = racing  # type: ignore[method-assign]
        (tree / "own.bin").write_bytes(b"X: in r1 and r4 only\n")
        (tree / "v.txt").write_text("4\n")
        manifest = signed(tree, 4)
        put_blob(agent, b"4\n")  # what the client sends: the blobs the agent lacks
        agent.stage(manifest)
        assert "r1" not in agent.releases.ids() and "r4" in agent.releases.ids()
    finally:
        agent.shutdown()


def test_a_disk_full_once_the_links_moved_still_finishes_the_switch(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review filled the disk from the app's shared directory just as a release became
    healthy: the links moved, the state's save failed, and the switch stopped there — the
    old app never stopped nor supervised again (it outlived the agent). Now the rest of
    the switch happens, and the answer says the state was not kept (507)."""
    import errno

    from ashat.agent.errors import StorageFailed

    for n in (1, 2):
        tree = tmp_path / f"t{n}"
        tree.mkdir()
        (tree / "f.txt").write_text(f"release {n}\n")
        stage(agent, tree, n)
    agent.activate("r1")
    real_save, stops = agent._save, []
    monkeypatch.setattr(agent.supervisor, "stop", lambda app: stops.append(app) or 0)

    def full() -> None:
        if agent.links()[0] == "r2":  # the links moved: the save of the switch fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save()

    monkeypatch.setattr(agent, "_save", full)
    from types import SimpleNamespace

    old = SimpleNamespace(release="r1", pid=-1)
    agent.app = old  # type: ignore[assignment]  # an app of r1 that must be stopped
    monkeypatch.setattr(agent, "_untrack", lambda app: None)
    with pytest.raises(StorageFailed) as e:
        agent.activate("r2")
    assert e.value.status == 507 and "(it is current)" in e.value.message
    assert agent.links()[0] == "r2" and stops == [old]
