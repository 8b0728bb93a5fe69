"""The deployment states and their transition table (DESIGN §2), as data and pure functions."""

from __future__ import annotations

from enum import StrEnum

from ashat.workflow.errors import TransitionRefused


class State(StrEnum):
    PUSHING = "pushing"
    PUSHED = "pushed"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    APPROVED = "approved"
    RELEASING = "releasing"
    DISTRIBUTING = "distributing"
    COMPLETED = "completed"
    DISTRIBUTION_FAILED = "distribution_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


S = State

TRANSITIONS: dict[State, frozenset[State]] = {
    S.PUSHING: frozenset({S.PUSHED, S.FAILED}),
    S.PUSHED: frozenset({S.VERIFYING, S.CANCELLED, S.ROLLED_BACK}),
    S.VERIFYING: frozenset({S.VERIFIED, S.VERIFICATION_FAILED}),
    S.VERIFIED: frozenset({S.VERIFYING, S.APPROVED, S.CANCELLED, S.ROLLED_BACK}),
    S.VERIFICATION_FAILED: frozenset({S.VERIFYING, S.CANCELLED, S.ROLLED_BACK}),
    S.APPROVED: frozenset({S.RELEASING}),
    S.RELEASING: frozenset({S.DISTRIBUTING, S.FAILED}),
    S.DISTRIBUTING: frozenset({S.COMPLETED, S.DISTRIBUTION_FAILED}),
    S.COMPLETED: frozenset({S.ROLLED_BACK}),
    S.DISTRIBUTION_FAILED: frozenset({S.ROLLED_BACK}),
    S.FAILED: frozenset({S.ROLLED_BACK, S.CANCELLED}),
    S.CANCELLED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}

TERMINAL: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

# Finished deployments: ``completed`` may still be rolled back, but nothing is in flight.
# ``deploy status`` lists these as recently ended, not as in flight.
ENDED: frozenset[State] = TERMINAL | {S.COMPLETED}
# Not in flight: ended, or failed (a push or a release that failed left every server on its
# previous release; nothing moves until someone cancels or rolls it back).
SETTLED: frozenset[State] = ENDED | {S.FAILED}

# The tier a deployment holds (by lease) while it is in these states.
LEASED_STATES: dict[str, frozenset[State]] = {
    "public": frozenset({S.PUSHING, S.VERIFYING}),
    "omega": frozenset({S.RELEASING, S.DISTRIBUTING}),
}

# What an operator types to reach a state: used to word refusals.
VERB_FOR: dict[State, str] = {
    S.VERIFYING: "verify",
    S.APPROVED: "approve",
    S.CANCELLED: "cancel",
    S.ROLLED_BACK: "rollback",
}


def allowed_next(state: State) -> frozenset[State]:
    return TRANSITIONS[state]


def is_terminal(state: State) -> bool:
    return state in TERMINAL


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def describe_allowed(state: State) -> str:
    nxt = sorted(TRANSITIONS[state])
    if not nxt:
        return "nothing: it is terminal"
    return ", ".join(nxt)


def check_transition(update_id: str, current: State, target: State) -> None:
    """Raise :class:`TransitionRefused` unless ``current -> target`` is in the table."""
    if not can_transition(current, target):
        raise TransitionRefused(update_id, current, target, describe_allowed(current))
