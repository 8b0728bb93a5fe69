"""Random sequences of verbs by several actors over a real store (SQLite in a temp dir).

:class:`WorkflowMachine` drives the state table itself: the model tracks what each
deployment's state must be; the invariants say what must hold after any sequence: the
store agrees with the model, a terminal state never changes, the audit chain verifies, and
each tier lease belongs to a deployment in a state that holds it.

:class:`ReleaseMachine` drives the verbs' services (push, verify, approve and release,
reconcile, rollback, cancel) against fake PUBLIC and OMEGA ports that fail now and then:
terminal states never change, every change is a recorded move the table allows, the audit
chain verifies, and nothing reaches OMEGA that was not verified and approved by enough
people other than its pusher — byte for byte what PUBLIC was sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ashat.bundle.keys import SigningKey
from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest, parse_manifest
from ashat.bundle.sign import sign_manifest, verify_manifest
from ashat.errors import AshatError, InvalidInput, Refused, RemoteError
from ashat.store.db import Database
from ashat.store.store import Store
from ashat.workflow.approve import (
    FLEET_ROLLBACK_FROM,
    ApprovalPolicy,
    DistributionPolicy,
    approve,
    finish_fleet_rollback,
    reconcile,
    release,
    start_fleet_rollback,
)
from ashat.workflow.errors import (
    AlreadyExists,
    DeploymentNotFound,
    LeaseHeld,
    TransitionRefused,
)
from ashat.workflow.models import RolloutStatus
from ashat.workflow.ports import iso
from ashat.workflow.push import Bundle, push, rollback_public
from ashat.workflow.service import Workflow, lease_changes
from ashat.workflow.states import (
    ENDED,
    LEASED_STATES,
    SETTLED,
    TERMINAL,
    State,
    allowed_next,
    can_transition,
)
from ashat.workflow.verify import verify

ACTORS = ("alice", "bob", "carol")
IDS = ("u0", "u1", "u2", "u3", "u4", "r-1.0")
LEASE_S = 600.0


class StepClock:
    """Time moves only when the machine says so, so leases expire on purpose."""

    def __init__(self) -> None:
        self.t = datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t


actors = st.sampled_from(ACTORS)
ids = st.sampled_from(IDS)
any_ids = ids | st.sampled_from(("", "Bad", "../x", "a" * 65))
states = st.sampled_from(list(State))


class WorkflowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ashat-stateful-")
        self.store = Store(Database(f"sqlite:///{self.dir}/ashat.db"))
        self.clock = StepClock()
        self.wf = {a: Workflow(self.store, a, clock=self.clock, lease_s=LEASE_S) for a in ACTORS}
        self.model: dict[str, State] = {}
        self.ended: dict[str, State] = {}
        self.takeovers = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _after(self, update_id: str, state: State) -> None:
        before = self.model.get(update_id)
        assert before not in TERMINAL, f"{update_id} left terminal {before}"
        self.model[update_id] = state
        if state in TERMINAL:
            self.ended[update_id] = state

    # -- rules ------------------------------------------------------------------------------

    @initialize()
    def first(self) -> None:
        self.wf["alice"].create("u0", "the first release")
        self._after("u0", State.PUSHING)

    @rule(actor=actors, update_id=any_ids)
    def create(self, actor: str, update_id: str) -> None:
        live = self.store.lease("public")
        try:
            dep = self.wf[actor].create(update_id, f"release {update_id}")
        except AlreadyExists:
            assert update_id in self.model
        except LeaseHeld:
            assert update_id not in self.model
            assert live is not None and live.expires_at > iso(self.clock.now())
        except InvalidInput:
            assert update_id not in IDS
        else:
            assert update_id not in self.model
            assert dep.state is State.PUSHING and dep.created_by == actor
            assert self.store.lease("public").deployment_id == update_id  # type: ignore[union-attr]
            if live is not None and live.deployment_id != update_id:
                self.takeovers += 1
            self._after(update_id, State.PUSHING)

    @rule(actor=actors, update_id=ids, to=states)
    def move(self, actor: str, update_id: str, to: State) -> None:
        self._move(actor, update_id, to)

    @precondition(lambda self: any(s not in TERMINAL for s in self.model.values()))
    @rule(actor=actors, data=st.data())
    def move_along(self, actor: str, data: st.DataObject) -> None:
        """A move the table allows (random targets alone rarely get deep into the table)."""
        live = sorted(i for i, s in self.model.items() if s not in TERMINAL)
        update_id = data.draw(st.sampled_from(live), label="update_id")
        to = data.draw(st.sampled_from(sorted(allowed_next(self.model[update_id]))), label="to")
        self._move(actor, update_id, to)

    def _move(self, actor: str, update_id: str, target: State) -> None:
        before = self.model.get(update_id)
        take = lease_changes(before, target)[0] if before else None
        held = self.store.lease(take) if take else None
        try:
            dep = self.wf[actor].move(update_id, target)
        except DeploymentNotFound:
            assert before is None
        except TransitionRefused as e:
            assert before is not None and not can_transition(before, target)
            assert before.value in e.message
        except LeaseHeld:
            assert before is not None and can_transition(before, target)
            assert take is not None and held is not None and held.deployment_id != update_id
            assert held.expires_at > iso(self.clock.now())
        except (Refused, InvalidInput) as e:
            raise AssertionError(f"unexpected {e!r} with one actor at a time") from e
        else:
            assert before is not None and can_transition(before, target)
            assert dep.state is target
            if take:
                assert self.store.lease(take).deployment_id == update_id  # type: ignore[union-attr]
                if held is not None and held.deployment_id != update_id:
                    self.takeovers += 1
            self._after(update_id, target)

    @rule(actor=actors, update_id=any_ids)
    def cancel(self, actor: str, update_id: str) -> None:
        before = self.model.get(update_id)
        try:
            dep = self.wf[actor].cancel(update_id, reason=f"by {actor}")
        except (Refused, InvalidInput):
            assert before is None or not can_transition(before, State.CANCELLED)
        else:
            assert before is not None and can_transition(before, State.CANCELLED)
            assert dep.state is State.CANCELLED and dep.reason == f"by {actor}"
            self._after(update_id, State.CANCELLED)

    @rule(seconds=st.sampled_from([1.0, 60.0, LEASE_S + 1]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.t += timedelta(seconds=seconds)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def store_agrees_with_model(self) -> None:
        stored = {d.id: d.state for d in self.store.list(limit=100)}
        assert stored == self.model

    @invariant()
    def terminal_states_never_change(self) -> None:
        for update_id, state in self.ended.items():
            assert self.store.require(update_id).state is state

    @invariant()
    def audit_chain_verifies(self) -> None:
        report = self.store.verify_audit()
        assert report.ok, report.reason
        takeovers = [e for e in self.store.events() if e.kind == "lease.takeover"]
        assert len(takeovers) == self.takeovers

    @invariant()
    def overview_splits_in_flight_from_ended(self) -> None:
        ov = self.wf["bob"].overview(recent=100)
        assert {d.id for d in ov.active} == {i for i, s in self.model.items() if s not in SETTLED}
        assert {d.id for d in ov.recent} == {i for i, s in self.model.items() if s in SETTLED}

    @invariant()
    def leases_belong_to_leased_states(self) -> None:
        leases = self.store.leases()
        tiers = [le.tier for le in leases]
        assert len(tiers) == len(set(tiers))
        for le in leases:
            assert le.tier in LEASED_STATES
            assert self.model[le.deployment_id] in LEASED_STATES[le.tier], le


WorkflowMachine.TestCase.settings = settings(
    max_examples=100,  # about 3 s in all: sequences are short and SQLite is fast
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorkflowMachine = WorkflowMachine.TestCase


# == the whole workflow: push, verify, approve (release to OMEGA), reconcile, rollback, cancel ==
#
# The verbs run through the real services (ashat.workflow.push/verify/approve) over the
# real store; PUBLIC and OMEGA are fakes of the ports those services are given
# (AgentPort, OmegaPort) — in-memory servers that keep what they were sent and can be told
# to fail. OMEGA's fake checks, when a release reaches it, that the control side had
# verified it and recorded enough approvals: what must never be bypassed.

RELEASE_KEY = SigningKey.generate()
POLICY = ApprovalPolicy(required=2)  # two approvers, never the one who pushed
DISTRIBUTION = DistributionPolicy(waves=(100,), auto_rollback=True)


class Broken(RemoteError):
    """What a fake server raises when the machine told it to fail."""

    kind = "fake_down"


class FakePublic:
    """An :class:`~ashat.workflow.push.AgentPort`: blobs, staged manifests, ``current``."""

    def __init__(self) -> None:
        self.blobs: set[str] = set()
        self.staged: dict[str, bytes] = {}
        self.current: str | None = None
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise Broken("PUBLIC is down")

    def health(self) -> dict[str, Any]:
        self._up()
        return {"status": "ok", "current": self.current}

    def missing(self, digests: Sequence[str]) -> list[str]:
        self._up()
        return [d for d in digests if d not in self.blobs]

    def upload(self, blobs: Sequence[Any]) -> int:
        self._up()
        self.blobs.update(b for b in blobs)
        return len(blobs)

    def stage(self, manifest_bytes: bytes) -> dict[str, Any]:
        self._up()
        m = verify_manifest(manifest_bytes, {RELEASE_KEY.keyid: RELEASE_KEY.public})
        assert m.blob_digests() <= self.blobs, "staged before its blobs arrived"
        self.staged.setdefault(m.update_id, manifest_bytes)
        return {"update_id": m.update_id, "files": len(m.files)}

    def activate(self, update_id: str) -> dict[str, Any]:
        self._up()
        assert update_id in self.staged
        self.current = update_id
        return {"current": update_id, "app": None}

    def rollback(self, from_id: str | None = None, to_id: str | None = None) -> dict[str, Any]:
        self._up()
        self.current = to_id
        return {"current": to_id}


class FakeOmega:
    """An :class:`~ashat.workflow.approve.OmegaPort` that checks what reaches it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.staged: dict[str, bytes] = {}
        self.approved: set[str] = set()
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise Broken("OMEGA is down")

    def _must_be_cleared(self, update_id: str) -> None:
        """The control side may send a release only once verified and approved enough."""
        dep = self.store.require(update_id)
        assert dep.state is State.RELEASING, dep
        moves = [e.details for e in self.store.events(update_id) if e.kind.startswith("deploy")]
        assert [m["to"] for m in moves[-3:]] == ["verified", "approved", "releasing"], moves
        people = {a["user"] for a in self.store.approvals(update_id)}
        assert len(people) >= POLICY.required and dep.created_by not in people, people

    def health(self) -> dict[str, Any]:
        self._up()
        return {"status": "ok", "current": self.current}

    def missing(self, digests: Sequence[str]) -> list[str]:
        self._up()
        return list(digests)

    def stage(self, manifest_bytes: bytes) -> dict[str, Any]:
        self._up()
        m = verify_manifest(manifest_bytes, {RELEASE_KEY.keyid: RELEASE_KEY.public})
        self._must_be_cleared(m.update_id)
        self.staged[m.update_id] = manifest_bytes
        return {"update_id": m.update_id}

    def activate(self, update_id: str) -> dict[str, Any]:
        self._up()
        assert update_id in self.approved
        self.current = update_id
        return {"current": update_id}

    def rollback(self, from_id: str | None = None, to_id: str | None = None) -> dict[str, Any]:
        self._up()
        self.current = to_id
        return {"current": to_id}

    def countersign(self, update_id: str, record: dict[str, Any]) -> dict[str, Any]:
        self._up()
        self._must_be_cleared(update_id)
        assert update_id in self.staged and record["update_id"] == update_id
        self.approved.add(update_id)
        return {"update_id": update_id, "approval_keyid": "omega"}

    def start_rollout(self, update_id: str, distribution: dict[str, Any]) -> RolloutStatus:
        self._up()
        assert update_id in self.approved and self.current == update_id
        rid = f"ro-{len(self.rollouts) + 1}"
        self.rollouts[rid] = {"rollout_id": rid, "update_id": update_id, "state": "running"}
        return {"rollout_id": rid, "update_id": update_id, "state": "running"}

    def rollout_status(self, rollout_id: str) -> RolloutStatus:
        self._up()
        return dict(self.rollouts[rollout_id])  # type: ignore[return-value]

    def fleet_rollback(self, from_id: str, to_id: Any, reason: str) -> RolloutStatus:
        self._up()
        rid = f"ro-{len(self.rollouts) + 1}"
        self.rollouts[rid] = {
            "rollout_id": rid, "update_id": to_id, "state": "completed", "kind": "rollback",
        }  # fmt: skip
        return dict(self.rollouts[rid])  # type: ignore[return-value]


def _bundle(update_id: str) -> Bundle:
    content = f"release {update_id}".encode()
    digest = hashlib.sha256(content).hexdigest()
    base = Manifest(
        schema=SCHEMA,
        update_id=update_id,
        sequence=1,
        description=f"release {update_id}",
        created_at="2030-01-01T00:00:00+00:00",
        source={"kind": "dir", "path": "/src"},
        app={},
        files=(FileEntry("index.html", digest, len(content), 0o644),),
    )
    return Bundle(
        manifest=base,
        blob_sizes={digest: len(content)},
        sign=lambda seq: sign_manifest(dataclasses.replace(base, sequence=seq), RELEASE_KEY),
        blob=lambda d: d,
        source={"kind": "dir"},
    )


def _checks(passed: bool) -> list[dict[str, Any]]:
    status = "passed" if passed else "failed"
    return [{"name": "health", "title": "Health Check", "status": status, "summary": status,
             "details": {}, "duration_s": 0.01}]  # fmt: skip


RELEASE_IDS = ("r1", "r2", "r3", "r4")
errors_of_a_verb = (AshatError,)


class ReleaseMachine(RuleBasedStateMachine):
    """Any sequence of the verbs, by any actor, with servers failing at random."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ashat-release-")
        self.store = Store(Database(f"sqlite:///{self.dir}/ashat.db"))
        self.clock = StepClock()
        self.public = FakePublic()
        self.omega = FakeOmega(self.store)
        self.ended: dict[str, State] = {}
        self.sent_to_omega: set[str] = set()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def wf(self, actor: str) -> Workflow:
        return Workflow(self.store, actor, clock=self.clock, lease_s=LEASE_S)

    def state(self, update_id: str) -> State | None:
        dep = self.store.get(update_id)
        return dep.state if dep else None

    def _verb(self, update_id: str, run: Callable[[], Any]) -> None:
        """Run a verb; a refusal or a server failure is fine, a terminal state moving is not."""
        before = self.state(update_id)
        with contextlib.suppress(errors_of_a_verb):
            run()
        after = self.state(update_id)
        if before in TERMINAL:
            assert after is before
        if after in TERMINAL:
            self.ended.setdefault(update_id, after)
        if update_id in self.omega.staged:
            self.sent_to_omega.add(update_id)

    # -- rules ------------------------------------------------------------------------------

    @rule(actor=actors, update_id=st.sampled_from(RELEASE_IDS), down=st.booleans())
    def push(self, actor: str, update_id: str, down: bool) -> None:
        self.public.down = down and update_id == "r4"  # now and then PUBLIC fails mid-push
        self._verb(
            update_id,
            lambda: push(self.wf(actor), self.public, update_id, "a release",
                         _bundle(update_id), target="PUBLIC"),
        )  # fmt: skip
        self.public.down = False

    @rule(actor=actors, update_id=st.sampled_from(RELEASE_IDS), passed=st.booleans())
    def verify(self, actor: str, update_id: str, passed: bool) -> None:
        def run() -> None:
            verify(
                self.wf(actor),
                update_id,
                self.public.current,
                lambda *_: _checks(passed),
                required=["health"],
            )

        self._verb(update_id, run)

    @rule(actor=actors, update_id=st.sampled_from(RELEASE_IDS), down=st.booleans())
    def approve(self, actor: str, update_id: str, down: bool) -> None:
        def run() -> None:
            wf = self.wf(actor)
            result = approve(wf, update_id, POLICY)
            if result.deployment.state is State.APPROVED:
                self.omega.down = down
                staged = self.public.staged[update_id]
                digests = sorted(parse_manifest(staged).blob_digests())
                release(wf, update_id, self.omega, staged, digests, len, DISTRIBUTION)

        self._verb(update_id, run)
        self.omega.down = False

    @rule(update_id=st.sampled_from(RELEASE_IDS), outcome=st.sampled_from(["completed", "failed"]))
    def rollout_ends(self, update_id: str, outcome: str) -> None:
        dep = self.store.get(update_id)
        rid = dep.details.get("rollout_id") if dep else None
        if rid and self.omega.rollouts[rid]["state"] == "running":
            self.omega.rollouts[rid]["state"] = outcome
        self._verb(update_id, lambda: reconcile(self.wf("bob"), update_id, self.omega))

    @rule(actor=actors, update_id=st.sampled_from(RELEASE_IDS))
    def rollback(self, actor: str, update_id: str) -> None:
        def run() -> None:
            wf = self.wf(actor)
            dep = self.store.require(update_id)
            if dep.state in FLEET_ROLLBACK_FROM and dep.details.get("rollout_id"):
                rollout = start_fleet_rollback(wf, update_id, self.omega, None)
                finish_fleet_rollback(wf, update_id, self.omega, rollout["rollout_id"], None)
            else:
                rollback_public(wf, self.public, update_id, None)

        self._verb(update_id, run)

    @rule(actor=actors, update_id=st.sampled_from(RELEASE_IDS))
    def cancel(self, actor: str, update_id: str) -> None:
        self._verb(update_id, lambda: self.wf(actor).cancel(update_id))

    @rule(seconds=st.sampled_from([1.0, LEASE_S + 1]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.t += timedelta(seconds=seconds)

    def _live(self) -> list[Any]:
        return self.store.list(limit=100, exclude_states=sorted(ENDED))

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def move_along(self, data: st.DataObject) -> None:
        """The verb that takes a deployment one step further, by someone allowed to (random
        verbs alone seldom get two approvals from the right people in a row)."""
        dep = data.draw(st.sampled_from(self._live()), label="deployment")
        approved = {a["user"] for a in self.store.approvals(dep.id)}
        others = [a for a in ACTORS if a != dep.created_by and a not in approved]
        if dep.state in (State.PUSHED, State.VERIFICATION_FAILED):
            self.verify(data.draw(actors), dep.id, passed=True)
        elif dep.state is State.VERIFIED and others:
            self.approve(data.draw(st.sampled_from(others)), dep.id, down=False)
        elif dep.state is State.DISTRIBUTING:
            self.rollout_ends(dep.id, data.draw(st.sampled_from(["completed", "failed"])))

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def move_further(self, data: st.DataObject) -> None:
        self.move_along(data)  # the same rule twice: progress is drawn as often as a detour

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def terminal_states_never_change(self) -> None:
        for update_id, state in self.ended.items():
            assert self.store.require(update_id).state is state

    @invariant()
    def every_change_is_a_recorded_move_the_table_allows(self) -> None:
        for dep in self.store.list(limit=100):
            moves = [e.details for e in self.store.events(dep.id) if e.kind.startswith("deploy")]
            state = State.PUSHING
            for m in moves[1:]:
                assert m["from"] == state.value and can_transition(state, State(m["to"])), moves
                state = State(m["to"])
            assert state is dep.state

    @invariant()
    def audit_chain_verifies(self) -> None:
        report = self.store.verify_audit()
        assert report.ok, report.reason

    @invariant()
    def omega_got_exactly_what_public_verified(self) -> None:
        for update_id, data in self.omega.staged.items():
            assert data == self.public.staged[update_id]  # byte for byte, never rebuilt
        assert self.omega.approved <= set(self.omega.staged)
        for r in self.omega.rollouts.values():
            assert r["update_id"] is None or r["update_id"] in self.omega.approved


ReleaseMachine.TestCase.settings = settings(
    max_examples=40,  # about 6 s: each step is a handful of SQLite transactions
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReleaseMachine = ReleaseMachine.TestCase
