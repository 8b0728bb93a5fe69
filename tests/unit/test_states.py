"""The transition table of DESIGN §2, pair by pair, and the tier leases each move takes."""

from __future__ import annotations

import itertools

import pytest

from ashat.errors import Refused
from ashat.workflow.errors import TransitionRefused
from ashat.workflow.service import lease_changes
from ashat.workflow.states import (
    ENDED,
    LEASED_STATES,
    TERMINAL,
    TRANSITIONS,
    State,
    allowed_next,
    can_transition,
    check_transition,
    describe_allowed,
    is_terminal,
)

S = State

# DESIGN §2, written out independently of the code's table.
EXPECTED: dict[State, set[State]] = {
    S.PUSHING: {S.PUSHED, S.FAILED},
    S.PUSHED: {S.VERIFYING, S.CANCELLED, S.ROLLED_BACK},
    S.VERIFYING: {S.VERIFIED, S.VERIFICATION_FAILED},
    S.VERIFIED: {S.VERIFYING, S.APPROVED, S.CANCELLED, S.ROLLED_BACK},
    S.VERIFICATION_FAILED: {S.VERIFYING, S.CANCELLED, S.ROLLED_BACK},
    S.APPROVED: {S.RELEASING},
    S.RELEASING: {S.DISTRIBUTING, S.FAILED},
    S.DISTRIBUTING: {S.COMPLETED, S.DISTRIBUTION_FAILED},
    S.COMPLETED: {S.ROLLED_BACK},
    S.DISTRIBUTION_FAILED: {S.ROLLED_BACK},
    S.FAILED: {S.ROLLED_BACK, S.CANCELLED},
    S.CANCELLED: set(),
    S.ROLLED_BACK: set(),
}

ALL_PAIRS = list(itertools.product(State, State))
ALLOWED = [(a, b) for a, b in ALL_PAIRS if b in EXPECTED[a]]
REFUSED = [(a, b) for a, b in ALL_PAIRS if b not in EXPECTED[a]]


def test_table_matches_design() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {s: set(n) for s, n in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=lambda s: s.value)
def test_allowed_pairs_pass(current: State, target: State) -> None:
    assert can_transition(current, target)
    assert check_transition("u1", current, target) is None


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=lambda s: s.value)
def test_refused_pairs_name_state_and_allowed(current: State, target: State) -> None:
    assert not can_transition(current, target)
    with pytest.raises(TransitionRefused) as info:
        check_transition("u1", current, target)
    err = info.value
    assert isinstance(err, Refused)
    assert err.exit_code == 3
    assert (err.current, err.target) == (current, target)
    assert err.details == {"update_id": "u1", "state": current.value, "requested": target.value}
    msg = err.message
    assert f"u1 is {current.value};" in msg
    assert f"cannot go to {target.value}" in msg
    allowed_part = msg.split("it may go to: ", 1)[1]
    if EXPECTED[current]:
        for nxt in EXPECTED[current]:
            assert nxt.value in allowed_part
        assert allowed_part.rstrip(")") == ", ".join(sorted(s.value for s in EXPECTED[current]))
    else:
        assert "terminal" in allowed_part


def test_self_transitions_are_refused() -> None:
    for s in State:
        assert not can_transition(s, s)


def test_terminal_states_have_no_exits() -> None:
    assert {S.CANCELLED, S.ROLLED_BACK} == TERMINAL
    for s in State:
        assert is_terminal(s) == (not EXPECTED[s])
    for s in TERMINAL:
        assert allowed_next(s) == frozenset()
        assert describe_allowed(s) == "nothing: it is terminal"
        for target in State:
            with pytest.raises(TransitionRefused, match="terminal"):
                check_transition("u1", s, target)


def test_ended_states() -> None:
    # What `deploy status` lists as recently ended rather than in flight.
    assert {S.CANCELLED, S.ROLLED_BACK, S.COMPLETED} == ENDED


def test_every_state_is_reachable_from_pushing() -> None:
    seen, todo = {S.PUSHING}, [S.PUSHING]
    while todo:
        for nxt in allowed_next(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


def test_describe_allowed_is_sorted() -> None:
    assert describe_allowed(S.VERIFIED) == "approved, cancelled, rolled_back, verifying"


# -- leases ---------------------------------------------------------------------------------

LEASE_MOVES: dict[tuple[State, State], tuple[str | None, str | None]] = {
    (S.PUSHING, S.PUSHED): (None, "public"),
    (S.PUSHING, S.FAILED): (None, "public"),
    (S.PUSHED, S.VERIFYING): ("public", None),
    (S.VERIFYING, S.VERIFIED): (None, "public"),
    (S.VERIFYING, S.VERIFICATION_FAILED): (None, "public"),
    (S.VERIFIED, S.VERIFYING): ("public", None),
    (S.VERIFICATION_FAILED, S.VERIFYING): ("public", None),
    (S.APPROVED, S.RELEASING): ("omega", None),
    (S.RELEASING, S.DISTRIBUTING): (None, None),  # stays within OMEGA's lease
    (S.RELEASING, S.FAILED): (None, "omega"),
    (S.DISTRIBUTING, S.COMPLETED): (None, "omega"),
    (S.DISTRIBUTING, S.DISTRIBUTION_FAILED): (None, "omega"),
}


def test_leased_states() -> None:
    assert {
        "public": frozenset({S.PUSHING, S.VERIFYING}),
        "omega": frozenset({S.RELEASING, S.DISTRIBUTING}),
    } == LEASED_STATES


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=lambda s: s.value)
def test_lease_changes_of_allowed_moves(current: State, target: State) -> None:
    assert lease_changes(current, target) == LEASE_MOVES.get((current, target), (None, None))


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_lease_changes_follow_leased_states(current: State, target: State) -> None:
    take, release = lease_changes(current, target)
    for tier, states in LEASED_STATES.items():
        assert (take == tier) == (target in states and current not in states)
        assert (release == tier) == (current in states and target not in states)
