"""Random sequences of verbs by several actors over a real store (SQLite in a temp dir).

The model tracks what each deployment's state must be; the invariants say what must hold
after any sequence: the store agrees with the model, a terminal state never changes, the
audit chain verifies, and each tier lease belongs to a deployment in a state that holds it.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ashat.errors import InvalidInput, Refused
from ashat.store.db import Database
from ashat.store.store import Store
from ashat.workflow.errors import (
    AlreadyExists,
    DeploymentNotFound,
    LeaseHeld,
    TransitionRefused,
)
from ashat.workflow.ports import iso
from ashat.workflow.service import Workflow, lease_changes
from ashat.workflow.states import (
    ENDED,
    LEASED_STATES,
    TERMINAL,
    State,
    allowed_next,
    can_transition,
)

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
        assert {d.id for d in ov.active} == {i for i, s in self.model.items() if s not in ENDED}
        assert {d.id for d in ov.recent} == {i for i, s in self.model.items() if s in ENDED}

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
