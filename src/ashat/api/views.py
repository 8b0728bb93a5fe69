"""What the dashboard shows, decided from data: which actions a state offers, the steps of a
deployment out of its audit events, how times, ages and durations read, and how often a
page asks for news. Pure functions (no store, no HTTP), the templates' filters among them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ashat.api.routes import ENDPOINTS
from ashat.clock import parse
from ashat.ops.users import UserRole
from ashat.workflow.models import Event
from ashat.workflow.states import ENDED, State, allowed_next

# States in which something is moving: a page showing one asks for news every second.
ACTIVE: frozenset[State] = frozenset(
    {
        State.PUSHING,
        State.VERIFYING,
        State.APPROVED,
        State.RELEASING,
        State.DISTRIBUTING,
        State.DISTRIBUTION_FAILED,  # an automatic rollback may be running
    }
)
POLL_ACTIVE_MS = 1000
POLL_IDLE_MS = 5000  # waiting for someone (verify, approve) elsewhere: the CLI, the API

# The tone of a state's badge (a CSS class); the badge always says the state in words too.
TONES: dict[State, str] = {
    State.PUSHING: "busy",
    State.PUSHED: "info",
    State.VERIFYING: "busy",
    State.VERIFIED: "ready",
    State.VERIFICATION_FAILED: "bad",
    State.APPROVED: "busy",
    State.RELEASING: "busy",
    State.DISTRIBUTING: "busy",
    State.COMPLETED: "good",
    State.DISTRIBUTION_FAILED: "bad",
    State.FAILED: "bad",
    State.CANCELLED: "muted",
    State.ROLLED_BACK: "muted",
}


def role_for(operation_id: str) -> UserRole:
    """The role the API's operation needs: the dashboard's action needs the same."""
    for ep in ENDPOINTS:
        if ep.operation_id == operation_id and ep.role is not None:
            return ep.role
    raise KeyError(operation_id)


@dataclass(frozen=True)
class Action:
    name: str  # in the URL, and the API operation whose role it needs
    verb: str  # on its button
    field: str  # the free text it takes: the API body's key
    schema: str  # the API body's schema, which checks the form too
    label: str  # of that field

    @property
    def role(self) -> UserRole:
        return role_for(self.name)


ACTIONS: dict[str, Action] = {
    "approve": Action("approve", "Approve", "comment", "ApproveRequest", "Comment (optional)"),
    "rollback": Action("rollback", "Roll back", "reason", "ReasonRequest", "Reason"),
    "cancel": Action("cancel", "Cancel deployment", "reason", "ReasonRequest", "Reason"),
}

# ?done= after an action: fixed texts, so a link cannot put words on the page
NOTICES = {
    "approved": "Your approval was recorded: the release went to OMEGA and the rollout started.",
    "approval-recorded": "Your approval was recorded; more approvals are needed to release.",
    "approval-repeated": "You had approved it already: an approval counts once, and this "
    "one (with its comment) was not recorded.",
    "resumed": "The release was resumed.",
    "rolled-back": "Rolled back.",
    "cancelled": "Cancelled.",
}


def tone(state: str) -> str:
    """The CSS class of a state's badge."""
    try:
        return TONES[State(state)]
    except ValueError:
        return "muted"


def available_actions(state: State) -> list[str]:
    """The dashboard's actions the state machine would take now, in button order.

    Approving an ``approved`` or ``releasing`` deployment resumes its release (as
    ``deploy approve`` does), so it is offered there too.
    """
    nxt = allowed_next(state)
    out = []
    if State.APPROVED in nxt or state in (State.APPROVED, State.RELEASING):
        out.append("approve")
    if State.ROLLED_BACK in nxt:
        out.append("rollback")
    if State.CANCELLED in nxt:
        out.append("cancel")
    return out


def poll_ms(state: State) -> int | None:
    """How often a page showing a deployment in ``state`` asks for news; None: never."""
    if state in ENDED:
        return None
    return POLL_ACTIVE_MS if state in ACTIVE else POLL_IDLE_MS


@dataclass(frozen=True)
class Step:
    """One state change of a deployment, from its audit event."""

    seq: int
    at: str
    actor: str
    before: str | None  # None: the deployment was created
    after: str
    reason: str | None
    observed_by: str | None = None  # whose request saw a change someone else caused


def steps(events: list[Event]) -> list[Step]:
    """The state changes among ``events`` (oldest first), as the timeline of a deployment."""
    out = []
    for e in events:
        after = e.details.get("to")
        if isinstance(after, str):
            before = e.details.get("from")
            reason = e.details.get("reason")
            seen = e.details.get("observed_by")
            out.append(
                Step(
                    e.seq,
                    e.at,
                    e.actor,
                    before if isinstance(before, str) else None,
                    after,
                    reason if isinstance(reason, str) else None,
                    seen if isinstance(seen, str) else None,
                )
            )
        elif e.kind == "deployment.pushing":
            out.append(Step(e.seq, e.at, e.actor, None, State.PUSHING.value, None))
    return out


def details_line(details: dict[str, Any]) -> str:
    """An event's scalar details as ``key=value`` pairs (nested values left out)."""
    return " ".join(
        f"{k}={v}" for k, v in details.items() if not isinstance(v, dict | list) and v is not None
    )


def tier_rank(tier: str) -> int:
    """PUBLIC before OMEGA (the order a release takes), anything else after."""
    order = ("public", "omega")
    return order.index(tier) if tier in order else len(order)


def tally(rows: list[dict[str, Any]], key: str) -> list[tuple[str, int]]:
    """How many rows have each value of ``key`` (None: ``none``), most common first."""
    counts = Counter(str(r.get(key) or "none") for r in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse(value)
    except ValueError:
        return None


def short_time(value: Any) -> str:
    """``2030-01-01 12:00:03`` (UTC) of an ISO 8601 time; anything else as it is."""
    t = parse_time(value)
    if t is None:
        return str(value or "")
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(value: Any, now: dt.datetime) -> str:
    """How long ago ``value`` was, roughly: ``12 s ago``, ``3 min ago``, ``2 h``, ``5 d ago``."""
    t = parse_time(value)
    if t is None:
        return ""
    s = max(0, int((now - t).total_seconds()))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def duration(seconds: Any) -> str:
    """``0.12 s``, ``14 s``, ``2 min 5 s``."""
    if not isinstance(seconds, int | float):
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds) // 60} min {int(seconds) % 60} s"


def percent(part: Any, whole: Any) -> int:
    """``part`` of ``whole`` in whole percent (0 when there is no whole)."""
    if not isinstance(part, int) or not isinstance(whole, int) or whole <= 0:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this server (where to go after signing in), else ``/``."""
    if (
        not value
        or len(value) > 500
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or not value.isascii()
        or not value.isprintable()
    ):
        return "/"
    return value
