"""Maintenance windows and update locks (issue 19, ``fleet/windows.py``), and a rollout
that waits for held mainframes instead of failing them (``fleet/rollout.py``)."""

from __future__ import annotations

import datetime as dt

import pytest

from ashat.fleet.rollout import Kind, Progress, Target, TargetStatus, WaveDecision, step
from ashat.fleet.windows import WindowError, in_window, lock_holds, parse_window, zone

SAT = dt.datetime(2026, 12, 5)  # a Saturday


def at(day_offset: int, hh: int, mm: int = 0) -> dt.datetime:
    return SAT + dt.timedelta(days=day_offset, hours=hh, minutes=mm)


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("daily 02:00-04:00", [at(0, 2), at(3, 3, 59)], [at(0, 4), at(0, 1, 59)]),
        ("Sat 01:00-05:00", [at(0, 1)], [at(1, 2), at(0, 5)]),
        ("Mon-Fri 22:00-06:00", [at(2, 23), at(3, 5), at(6, 5)], [at(1, 5), at(0, 23)]),
        ("sat,sun 00:00-24:00", [at(0, 0), at(1, 23, 59)], [at(2, 0)]),
        ("Fri-Mon 12:00-13:00", [at(-1, 12), at(2, 12, 30)], [at(3, 12)]),
    ],
)
def test_a_window_contains_its_times(
    text: str, inside: list[dt.datetime], outside: list[dt.datetime]
) -> None:
    w = parse_window(text)
    assert all(w.contains(t) for t in inside), text
    assert not any(w.contains(t) for t in outside), text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Sat 02:00-02:00", "never opens"),
        ("Sat 2:00-04:00", "expected DAYS HH:MM-HH:MM"),
        ("Funday 02:00-04:00", "expected DAYS"),
        ("Sat-Xyz 02:00-04:00", "days are daily or Mon..Sun"),
        ("Sat 25:00-26:00", "not a time of day"),
        ("Sat 02:61-03:00", "not a time of day"),
        ("Sat 24:00-02:00", "not a time of day"),
    ],
)
def test_a_bad_window_is_refused_naming_it(text: str, needle: str) -> None:
    with pytest.raises(WindowError, match=needle):
        parse_window(text)


def test_no_windows_is_always_and_zones_and_locks() -> None:
    assert in_window((), at(0, 3))
    assert in_window((parse_window("daily 02:00-04:00"),), at(0, 3))
    assert zone(None) is None and zone("Europe/Berlin") is not None
    with pytest.raises(WindowError, match="not a time zone name"):
        zone("Mars/Olympus")
    assert lock_holds(100.0, 150.0, 3600) and not lock_holds(100.0, 3800.0, 3600)
    assert not lock_holds(None, 150.0, 3600)
    assert not lock_holds(200.0, 150.0, 3600)  # "first seen" in the future never holds


def test_a_held_mainframe_waits_past_the_timeout_and_the_silent_one_fails() -> None:
    targets = (
        Target("a", 0, TargetStatus.INSTALLED),
        Target("held", 0, TargetStatus.PENDING),
        Target("silent", 0, TargetStatus.PENDING),
    )
    p = Progress(Kind.INSTALL, (100,), 0, 0.0, 10.0, 1.0, targets, frozenset({"held"}))
    s = step(p, now=11.0)
    assert s.timed_out == ("silent",) and s.outcome is WaveDecision.CONTINUE
    only_held = Progress(Kind.INSTALL, (100,), 0, 0.0, 10.0, 1.0, targets[:2], frozenset({"held"}))
    s = step(only_held, now=1000.0)
    assert s.timed_out == () and s.outcome is WaveDecision.CONTINUE
