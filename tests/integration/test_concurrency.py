"""Several processes racing on one store, SQLite and PostgreSQL: one compare-and-set wins,
the others get a clear refusal (exit 3), no lease is held twice, no sequence is given twice,
and the audit chain stays whole."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ashat.store.db import Database
from ashat.store.store import Store
from ashat.workflow.errors import LeaseHeld
from ashat.workflow.ports import Clock
from ashat.workflow.service import Workflow
from ashat.workflow.states import State

N = 8
CTX = multiprocessing.get_context("spawn")


def _racer(
    url: str, op: str, update_id: str, actor: str, lease_s: float, barrier: Any, results: Any
) -> None:
    """One contender (runs in a spawned process): open the store, wait for all, act once."""
    from ashat.errors import AshatError

    store = None
    try:
        store = Store(Database(url))
        wf = Workflow(store, actor, lease_s=lease_s)
        barrier.wait(120)
        try:
            if op == "cancel":
                wf.cancel(update_id)
            elif op == "verify":
                wf.move(update_id, State.VERIFYING)
            elif op == "create":
                wf.create(update_id, f"raced by {actor}")
            elif op == "approve":
                from ashat.workflow.approve import ApprovalPolicy, approve

                approve(wf, update_id, ApprovalPolicy(required=1))
            elif op == "notes":
                for i in range(25):
                    wf.note(update_id, "racer.note", {"i": i})
            elif op == "rollback":
                wf.move(update_id, State.ROLLED_BACK, reason=f"by {actor}")
            else:
                raise AssertionError(op)
        except AshatError as e:
            results.put((actor, type(e).__name__, e.exit_code, e.message))
        else:
            results.put((actor, "ok", 0, ""))
    except BaseException as e:  # reported, so the test fails with the reason
        barrier.abort()  # the others stop waiting for this one
        results.put((actor, "crash", -1, repr(e)))
    finally:
        if store is not None:
            store.close()


def race(url: str, op: str, ids: list[str], lease_s: float = 900.0) -> list[tuple[Any, ...]]:
    barrier = CTX.Barrier(len(ids))
    results = CTX.Queue()
    procs = [
        CTX.Process(target=_racer, args=(url, op, uid, f"actor{i}", lease_s, barrier, results))
        for i, uid in enumerate(ids)
    ]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    results.close()
    results.join_thread()
    assert all(p.exitcode == 0 for p in procs)
    assert not [r for r in out if r[1] == "crash"], out
    return out


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@pytest.fixture
def store(url: str) -> Any:
    s = Store(Database(url))
    yield s
    s.close()


def pushed(store: Store, update_id: str = "u1") -> None:
    wf = Workflow(store, "alice")
    wf.create(update_id, "to race on")
    wf.move(update_id, State.PUSHED)


def test_racing_moves_one_wins(url: str, store: Store) -> None:
    pushed(store)
    out = race(url, "verify", ["u1"] * N)
    kinds = Counter(r[1] for r in out)
    assert kinds["ok"] == 1, out
    assert set(kinds) <= {"ok", "TransitionRefused", "Conflict"}, out
    assert all(r[2] == 3 for r in out if r[1] != "ok")
    winner = next(r[0] for r in out if r[1] == "ok")

    assert store.require("u1").state is State.VERIFYING
    lease = store.lease("public")
    assert lease is not None and lease.deployment_id == "u1" and lease.owner.startswith(winner)
    moves = [e for e in store.events("u1") if e.kind == "deployment.verifying"]
    assert len(moves) == 1 and moves[0].actor == winner
    assert store.verify_audit().ok


def test_racing_cancels_one_wins(url: str, store: Store) -> None:
    pushed(store)
    out = race(url, "cancel", ["u1"] * N)
    assert Counter(r[1] for r in out)["ok"] == 1, out
    assert all(r[2] == 3 for r in out if r[1] != "ok")
    assert store.require("u1").state is State.CANCELLED
    assert len([e for e in store.events("u1") if e.kind == "deployment.cancelled"]) == 1
    assert store.verify_audit().ok


def verified(store: Store, update_id: str = "u1") -> None:
    pushed(store, update_id)
    wf = Workflow(store, "alice")
    wf.move(update_id, State.VERIFYING)
    wf.move(update_id, State.VERIFIED)


def test_racing_approvals_release_once(url: str, store: Store) -> None:
    """Eight approvers at once, one approval needed: one approval moves it; the others are
    refused by the state machine (exit 3), and none is recorded twice."""
    verified(store)
    out = race(url, "approve", ["u1"] * N)
    kinds = Counter(r[1] for r in out)
    assert kinds["ok"] >= 1, out
    assert all(r[2] == 3 for r in out if r[1] != "ok"), out
    assert store.require("u1").state is State.APPROVED
    approved = [e for e in store.events("u1") if e.kind == "deployment.approved"]
    assert len(approved) == 1
    assert len(store.approvals("u1")) == kinds["ok"]
    assert store.verify_audit().ok


def test_racing_rollbacks_one_wins(url: str, store: Store) -> None:
    pushed(store)
    out = race(url, "rollback", ["u1"] * N)
    assert Counter(r[1] for r in out)["ok"] == 1, out
    assert all(r[2] == 3 for r in out if r[1] != "ok")
    (event,) = [e for e in store.events("u1") if e.kind == "deployment.rolled_back"]
    assert store.require("u1").reason == f"by {event.actor}"
    assert store.verify_audit().ok


def test_racing_appends_keep_the_audit_chain_whole(url: str, store: Store) -> None:
    """200 events appended by eight processes at once: one chain, no gap, no fork."""
    pushed(store)
    out = race(url, "notes", ["u1"] * N)
    assert {r[1] for r in out} == {"ok"}, out
    events = store.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len([e for e in events if e.kind == "racer.note"]) == 25 * N
    assert store.verify_audit().ok


def _open_once(url: str, barrier: Any, results: Any) -> None:
    barrier.wait(60)
    try:
        Database(url).close()
        results.put("ok")
    except Exception as e:
        results.put(repr(e))


def test_racing_first_opens_of_a_sqlite_store_all_succeed(tmp_path: Path) -> None:
    # CI saw "database is locked" at once from the switch to WAL while another process
    # switched or migrated a new store: SQLite skips its busy handler there.
    fork = multiprocessing.get_context("fork")  # cheap enough to race many times
    for round_ in range(30):
        url = f"sqlite:///{tmp_path / f'r{round_}.db'}"
        barrier, results = fork.Barrier(N), fork.Queue()
        procs = [fork.Process(target=_open_once, args=(url, barrier, results)) for _ in range(N)]
        for p in procs:
            p.start()
        out = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert out == ["ok"] * N, f"round {round_}: {out}"


def test_racing_creates_one_takes_the_lease(url: str) -> None:
    # A store never opened before: the migrations race too.
    out = race(url, "create", [f"d{i}" for i in range(N)])
    kinds = Counter(r[1] for r in out)
    assert kinds == {"ok": 1, "LeaseHeld": N - 1}, out
    winner = next(r for r in out if r[1] == "ok")
    with _Open(url) as store:
        deps = store.list()
        assert len(deps) == 1 and deps[0].created_by == winner[0]
        lease = store.lease("public")
        assert lease is not None and lease.deployment_id == deps[0].id
        assert all(deps[0].id in r[3] for r in out if r[1] == "LeaseHeld")
        assert len(store.events()) == 1
        assert store.verify_audit().ok
        assert store.db.schema_version() >= 1


def test_expired_lease_is_taken_over_once(url: str, store: Store) -> None:
    Workflow(store, "alice", lease_s=0.3).create("stale", "its pusher died")
    time.sleep(0.5)
    out = race(url, "create", [f"d{i}" for i in range(N)])
    kinds = Counter(r[1] for r in out)
    assert kinds == {"ok": 1, "LeaseHeld": N - 1}, out
    new = next(d for d in store.list() if d.id != "stale")
    assert store.lease("public").deployment_id == new.id  # type: ignore[union-attr]
    takeovers = [e for e in store.events() if e.kind == "lease.takeover"]
    assert len(takeovers) == 1
    assert takeovers[0].deployment_id == new.id
    assert takeovers[0].details["from"] == "stale" and takeovers[0].details["tier"] == "public"
    assert store.verify_audit().ok


def test_lease_takeover_with_a_clock(store: Store, clock: Clock) -> None:
    alice = Workflow(store, "alice", clock=clock, lease_s=60)
    bob = Workflow(store, "bob", clock=clock, lease_s=60)
    alice.create("u1", "first")
    with pytest.raises(LeaseHeld, match="PUBLIC is held by deployment 'u1'"):
        bob.create("u2", "second")
    clock.advance(30)  # type: ignore[attr-defined]
    assert alice.renew("public", "u1")  # renewed: now until t+90
    clock.advance(59)  # type: ignore[attr-defined]
    with pytest.raises(LeaseHeld):
        bob.create("u2", "second")
    clock.advance(2)  # type: ignore[attr-defined]
    bob.create("u2", "second")
    lease = store.lease("public")
    assert lease is not None and lease.deployment_id == "u2" and lease.owner.startswith("bob@")
    (takeover,) = [e for e in store.events() if e.kind == "lease.takeover"]
    assert takeover.actor.startswith("bob@")
    assert takeover.details["from"] == "u1"
    # The old holder ending its step gives back nothing it no longer holds.
    alice.move("u1", State.PUSHED)
    assert store.lease("public").deployment_id == "u2"  # type: ignore[union-attr]
    assert not alice.renew("public", "u1")
    # Moving into a leased state while another holds the tier is refused, and changes nothing.
    with pytest.raises(LeaseHeld):
        alice.move("u1", State.VERIFYING)
    assert store.require("u1").state is State.PUSHED
    assert store.verify_audit().ok


# -- through the real CLI -------------------------------------------------------------------

# Each racer imports the CLI, says it is ready, waits for the go file, then runs the real
# ``deploy`` entry point: the processes start together instead of one interpreter start apart.
RACER = """
import os, sys, time
from ashat.cli.deploy import main
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
sys.argv = ["deploy", *sys.argv[3:]]
main()
"""


def test_racing_cli_cancels(project: Path, tmp_path: Path, db_url: str) -> None:
    with _Open(db_url) as store:
        pushed(store)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "ASHAT_USER": "racer", "NO_COLOR": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(sync / f"ready{i}"),
                str(sync / "go"),
                "cancel",
                "u1",
                "--json",
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready*"))) < N and time.monotonic() < deadline:
            time.sleep(0.01)
        (sync / "go").touch()
        outs = [(p.wait(timeout=120), *p.communicate(timeout=10)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = Counter(rc for rc, _, _ in outs)
    assert codes == {0: 1, 3: N - 1}, outs
    for rc, stdout, stderr in outs:
        assert "Traceback" not in stderr
        data = json.loads(stdout)
        if rc == 0:
            assert data["deployment"]["state"] == "cancelled"
        else:
            assert data["kind"] in ("transition_refused", "conflict")
            assert "u1" in data["error"]
    with _Open(db_url) as store:
        assert store.require("u1").state is State.CANCELLED
        assert len([e for e in store.events("u1") if e.kind == "deployment.cancelled"]) == 1
    res = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "audit", "verify"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "intact: 3 events verified" in res.stdout


class _Open:
    """A store opened for the length of a ``with`` block."""

    def __init__(self, url: str) -> None:
        self.store = Store(Database(url))

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
