"""What the dashboard decides from data (:mod:`ashat.api.views`): the actions a state offers
and the roles they need (the API's), the steps out of the audit events, how often a page
asks for news, and the formatting of times, ages, durations and bars."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashat.api import views
from ashat.api.routes import ENDPOINTS
from ashat.ops.users import UserRole
from ashat.workflow.models import Event
from ashat.workflow.states import ENDED, State, can_transition


def event(seq: int, kind: str, **details: object) -> Event:
    return Event(seq, "u1", kind, "bob", f"2030-01-01T00:00:{seq:02d}Z", dict(details), "", "")


def test_actions_need_the_role_of_their_api_operation() -> None:
    by_id = {ep.operation_id: ep.role for ep in ENDPOINTS}
    assert {name: a.role for name, a in views.ACTIONS.items()} == {
        "approve": by_id["approve"],
        "rollback": by_id["rollback"],
        "cancel": by_id["cancel"],
    }
    assert views.ACTIONS["approve"].role is UserRole.APPROVER
    assert views.ACTIONS["cancel"].role is UserRole.DEPLOYER
    with pytest.raises(KeyError):
        views.role_for("noSuchOperation")


@pytest.mark.parametrize("state", list(State))
def test_the_actions_offered_are_what_the_state_machine_allows(state: State) -> None:
    offered = views.available_actions(state)
    assert ("rollback" in offered) == can_transition(state, State.ROLLED_BACK)
    assert ("cancel" in offered) == can_transition(state, State.CANCELLED)
    resumable = state in (State.APPROVED, State.RELEASING)
    assert ("approve" in offered) == (can_transition(state, State.APPROVED) or resumable)


def test_polling_is_fast_while_moving_slow_while_waiting_and_stops_at_the_end() -> None:
    for state in State:
        ms = views.poll_ms(state)
        if state in ENDED:
            assert ms is None
        elif state in views.ACTIVE:
            assert ms == views.POLL_ACTIVE_MS
        else:
            assert ms == views.POLL_IDLE_MS
    assert views.poll_ms(State.DISTRIBUTING) == 1000


def test_steps_are_the_state_changes() -> None:
    events = [
        event(1, "deployment.pushing", description="x"),
        event(2, "push.signed", manifest="abc"),
        event(3, "deployment.pushed", **{"from": "pushing", "to": "pushed"}),
        event(4, "check.health", status="passed"),
        event(5, "deployment.cancelled", **{"from": "pushed", "to": "cancelled", "reason": "r"}),
    ]
    steps = views.steps(events)
    assert [(s.before, s.after, s.reason) for s in steps] == [
        (None, "pushing", None),
        ("pushing", "pushed", None),
        ("pushed", "cancelled", "r"),
    ]
    assert [s.seq for s in steps] == [1, 3, 5]


def test_formatting() -> None:
    assert views.short_time("2030-01-01T12:00:03.123Z") == "2030-01-01 12:00:03"
    assert views.short_time("2030-01-01T13:00:03+01:00") == "2030-01-01 12:00:03"
    assert views.short_time("not a time") == "not a time"
    assert views.short_time(None) == ""
    now = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    assert views.age("2030-01-01T23:59:50Z", now) == "10 s ago"
    assert views.age("2030-01-01T23:55:00Z", now) == "5 min ago"
    assert views.age("2030-01-01T21:00:00Z", now) == "3 h ago"
    assert views.age("2029-12-30T00:00:00Z", now) == "3 d ago"
    assert views.age("2030-01-03T00:00:00Z", now) == "0 s ago"  # a clock ahead
    assert views.age("?", now) == ""
    assert views.duration(0.1234) == "0.12 s"
    assert views.duration(14.4) == "14 s"
    assert views.duration(125) == "2 min 5 s"
    assert views.duration(None) == ""
    assert views.details_line({"a": 1, "b": None, "c": [1], "d": {"x": 1}, "e": "t"}) == "a=1 e=t"
    assert views.tone("completed") == "good" and views.tone("nonsense") == "muted"
    assert sorted(["omega", "public", "x"], key=views.tier_rank) == ["public", "omega", "x"]
    rows = [{"r": "a"}, {"r": "b"}, {"r": "a"}, {"r": None}]
    assert views.tally(rows, "r") == [("a", 2), ("b", 1), ("none", 1)]


@given(st.integers(-5, 200), st.integers(-5, 200))
def test_percent_is_always_0_to_100(part: int, whole: int) -> None:
    assert 0 <= views.percent(part, whole) <= 100


def test_where_to_go_after_signing_in_stays_on_this_server() -> None:
    assert views.local_path("/deployments/x?state=verified") == "/deployments/x?state=verified"
    for bad in (None, "", "//evil.example", "https://evil.example/", "/\\evil", "x", "/\n", "/é"):
        assert views.local_path(bad) == "/", bad


def test_the_waves_partial_shows_held_mainframes_and_the_bake() -> None:
    """Issue 19: the dashboard shows who waits for a window or lock, and each wave's bake."""
    import jinja2

    from ashat.api.dashboard import HERE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["when"] = views.short_time
    env.globals.update(percent=views.percent, tone=views.tone)
    status = {
        "rollout_id": "ro-1", "state": "running", "fleet_size": 3, "waves": [],
        "totals": {"installed": 1, "failed": 0, "pending": 2, "targeted": 3},
        "held": {"mf-b": "lock", "mf-a": "window"},
        "bake": {"bake_s": 30.0, "wave": 0, "analysis": [{"name": "err_rate"}],
                 "passed_at": None, "last": {"failed": "err_rate = 0.2, above its max 0.05"}},
    }  # fmt: skip
    html = env.get_template("_waves.html").render(r=status)
    assert "<code>mf-a</code> (outside its maintenance window)" in html
    assert "<code>mf-b</code> (its app holds update.lock)" in html
    assert "Bake after wave 1 (30.0 s; err_rate)" in html
    assert "err_rate = 0.2, above its max 0.05" in html
