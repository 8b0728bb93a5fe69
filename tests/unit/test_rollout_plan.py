"""The rollout controller's pure decisions (ashat.fleet.rollout): wave sizes, fleet order,
the failure budget, and what a tick does to a running rollout."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashat.fleet.rollout import (
    Kind,
    Progress,
    Step,
    Target,
    TargetStatus,
    WaveDecision,
    budget_broken,
    fleet_order,
    plan,
    step,
    summarize,
    waits,
    wave_sizes,
)
from ashat.waves import check_waves

PEND, INS, FAIL, WAIT = (
    TargetStatus.PENDING,
    TargetStatus.INSTALLED,
    TargetStatus.FAILED,
    TargetStatus.WAITING,
)


@pytest.mark.parametrize(
    ("waves", "n", "sizes"),
    [
        ([10, 50, 100], 10, [1, 5, 10]),
        ([10, 50, 100], 1, [1, 1, 1]),
        ([10, 50, 100], 0, [0, 0, 0]),
        ([10, 50, 100], 7, [1, 3, 7]),
        ([33, 66, 100], 3, [1, 1, 3]),
        ([34, 100], 3, [1, 3]),  # 34 % of 3 is one machine, not two
        ([100], 200, [200]),
        ([1, 100], 200, [2, 200]),
    ],
)
def test_wave_sizes_never_exceed_their_percentage(
    waves: list[int], n: int, sizes: list[int]
) -> None:
    assert wave_sizes(waves, n) == sizes


@given(
    st.lists(st.integers(1, 99), max_size=6, unique=True).map(lambda w: [*sorted(w), 100]),
    st.integers(0, 500),
)
def test_wave_sizes_are_the_floor_at_least_one_and_end_with_everyone(
    waves: list[int], n: int
) -> None:
    sizes = wave_sizes(waves, n)
    assert sizes[-1] == n
    assert sizes == sorted(sizes)
    for p, size in zip(waves, sizes, strict=True):
        assert size == (max(math.floor(p * n / 100), 1) if n else 0)


def test_fleet_order_is_by_sha256_of_rollout_and_mainframe() -> None:
    ids = [f"mf-{i}" for i in range(20)]
    order = fleet_order("ro-1", ids)
    expected = sorted(ids, key=lambda m: hashlib.sha256(f"ro-1{m}".encode()).hexdigest())
    assert order == expected
    assert fleet_order("ro-1", reversed(ids)) == order  # input order does not matter
    assert fleet_order("ro-2", ids) != order  # another rollout, another order
    assert sorted(order) == sorted(ids)


@given(st.sets(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=60), st.text(max_size=8))
def test_plan_puts_each_mainframe_in_the_first_wave_that_covers_it(
    ids: set[str], rollout_id: str
) -> None:
    waves = [10, 50, 100]
    waves_of = plan(rollout_id, ids, waves)
    assert set(waves_of) == ids
    sizes = wave_sizes(waves, len(ids))
    for k, size in enumerate(sizes):
        assert sum(1 for w in waves_of.values() if w <= k) == size
    order = fleet_order(rollout_id, ids)
    assert [waves_of[m] for m in order] == sorted(waves_of[m] for m in order)


@pytest.mark.parametrize(
    ("failed", "targeted", "ratio", "broken"),
    [
        (0, 0, 0.0, False),  # nobody targeted yet
        (1, 5, 0.2, False),  # exactly at the budget is still within it
        (2, 5, 0.2, True),
        (2, 10, 0.2, False),
        (3, 10, 0.2, True),
        (1, 1, 0.0, True),
        (1, 3, 1 / 3, False),
        (10, 10, 1.0, False),  # a ratio of 1 never breaks
    ],
)
def test_budget(failed: int, targeted: int, ratio: float, broken: bool) -> None:
    assert budget_broken(failed, targeted, ratio) is broken


@pytest.mark.parametrize("waves", [[], [50], [50, 10, 100], [10, 10, 100], [0, 100], [True]])
def test_check_waves_refuses(waves: list[int]) -> None:
    with pytest.raises(ValueError, match="increasing percentages ending at 100"):
        check_waves(waves)


def progress(
    targets: list[tuple[str, int, TargetStatus]],
    *,
    kind: Kind = Kind.INSTALL,
    waves: tuple[int, ...] = (10, 50, 100),
    current: int = 0,
    started: float = 1000.0,
    timeout: float = 60.0,
    ratio: float = 0.2,
) -> Progress:
    return Progress(
        kind, waves, current, started, timeout, ratio, tuple(Target(*t) for t in targets)
    )


def fleet(statuses: dict[int, list[TargetStatus]]) -> list[tuple[str, int, TargetStatus]]:
    """Targets named m<wave>-<i> per wave."""
    return [(f"m{w}-{i}", w, s) for w, ss in statuses.items() for i, s in enumerate(ss)]


def test_a_wave_with_reports_missing_waits() -> None:
    p = progress(fleet({0: [INS, PEND], 1: [WAIT, WAIT]}))
    assert step(p, 1010.0) == Step(WaveDecision.CONTINUE)


def test_a_done_wave_advances_to_the_next() -> None:
    s = step(progress(fleet({0: [INS], 1: [WAIT, WAIT, WAIT, WAIT], 2: [WAIT] * 5})), 1001.0)
    assert s.outcome is WaveDecision.ADVANCE and s.next_wave == 1 and s.timed_out == ()


def test_empty_waves_are_skipped() -> None:
    # N=1: waves [10, 50, 100] all cover the same one mainframe.
    s = step(progress([("a", 0, INS)]), 1001.0)
    assert s.outcome is WaveDecision.COMPLETE
    s = step(progress([("a", 0, INS), ("b", 2, WAIT)]), 1001.0)
    assert s.outcome is WaveDecision.ADVANCE and s.next_wave == 2


def test_the_last_wave_done_completes() -> None:
    p = progress(
        fleet({0: [INS], 1: [INS, INS, INS, INS], 2: [INS, FAIL, INS, INS, INS]}), current=2
    )
    assert step(p, 1001.0).outcome is WaveDecision.COMPLETE  # 1 of 10 failed: within 0.2


def test_an_empty_fleet_completes_at_once() -> None:
    assert step(progress([]), 1000.0).outcome is WaveDecision.COMPLETE


def test_silence_past_the_wave_timeout_is_failure() -> None:
    p = progress(fleet({0: [INS, INS, INS, INS, PEND], 1: [WAIT] * 5}), timeout=60.0)
    early = step(p, 1059.9)
    assert early.outcome is WaveDecision.CONTINUE and early.timed_out == ()
    late = step(p, 1060.0)
    assert late.timed_out == ("m0-4",)
    assert late.outcome is WaveDecision.ADVANCE  # 1 of 5 failed: ratio 0.2 is within 0.2


def test_timeouts_can_break_the_budget() -> None:
    p = progress(fleet({0: [INS, INS, PEND, PEND, PEND], 1: [WAIT] * 5}), timeout=60.0)
    s = step(p, 2000.0)
    assert s.timed_out == ("m0-2", "m0-3", "m0-4")
    assert s.outcome is WaveDecision.FAIL
    assert s.reason is not None and "3 of 5" in s.reason and "0.2" in s.reason


def test_the_budget_breaks_before_the_wave_is_done() -> None:
    # 2 failed of 5 targeted so far (pending count in the denominator): 0.4 > 0.2, halt now.
    p = progress(fleet({0: [FAIL, FAIL, PEND, PEND, PEND], 1: [WAIT] * 5}))
    s = step(p, 1001.0)
    assert s.outcome is WaveDecision.FAIL and s.timed_out == ()


def test_the_budget_counts_every_targeted_wave() -> None:
    p = progress(fleet({0: [INS], 1: [INS, INS, FAIL, PEND], 2: [WAIT] * 5}), current=1)
    assert step(p, 1001.0).outcome is WaveDecision.CONTINUE  # 1 of 5: 0.2
    p = progress(fleet({0: [FAIL], 1: [INS, INS, FAIL, PEND], 2: [WAIT] * 5}), current=1)
    assert step(p, 1001.0).outcome is WaveDecision.FAIL  # 2 of 5


def test_a_rollback_is_never_halted_early() -> None:
    p = progress(fleet({0: [FAIL, FAIL, PEND]}), kind=Kind.ROLLBACK, waves=(100,), ratio=0.0)
    assert step(p, 1001.0).outcome is WaveDecision.CONTINUE


def test_a_rollback_fails_at_the_end_if_anyone_did_not_roll_back() -> None:
    p = progress(fleet({0: [INS, INS, PEND]}), kind=Kind.ROLLBACK, waves=(100,), timeout=10.0)
    s = step(p, 1010.0)
    assert s.outcome is WaveDecision.FAIL and s.timed_out == ("m0-2",)
    assert s.reason == "1 of 3 mainframes did not roll back"
    done = progress(fleet({0: [INS, INS, INS]}), kind=Kind.ROLLBACK, waves=(100,))
    assert step(done, 1001.0).outcome is WaveDecision.COMPLETE


def test_summarize_counts_per_wave_and_in_total() -> None:
    targets = [Target(*t) for t in fleet({0: [INS], 1: [INS, FAIL, PEND, PEND], 2: [WAIT] * 5})]
    body = summarize((10, 50, 100), 1, True, targets, {"m1-1": "health check failed"})
    assert body["waves"] == [
        {"index": 0, "percent": 10, "size": 1, "targeted": 1, "installed": 1, "failed": 0,
         "pending": 0, "state": "done"},
        {"index": 1, "percent": 50, "size": 4, "targeted": 4, "installed": 1, "failed": 1,
         "pending": 2, "state": "running"},
        {"index": 2, "percent": 100, "size": 5, "targeted": 0, "installed": 0, "failed": 0,
         "pending": 0, "state": "waiting"},
    ]  # fmt: skip
    assert body["totals"] == {"targeted": 5, "installed": 2, "failed": 1, "pending": 2}
    assert body["failures"] == [{"mainframe_id": "m1-1", "reason": "health check failed"}]
    halted = summarize((10, 50, 100), 1, False, targets)
    assert [w["state"] for w in halted["waves"]] == ["done", "done", "waiting"]


@given(
    st.lists(st.tuples(st.integers(0, 2), st.sampled_from([PEND, INS, FAIL, WAIT])), max_size=30),
    st.sampled_from([Kind.INSTALL, Kind.ROLLBACK]),
    st.integers(0, 2),
    st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    st.booleans(),
)
def test_waits_is_step_continuing_judged_from_counts(
    targets: list[tuple[int, TargetStatus]],
    kind: Kind,
    current: int,
    ratio: float,
    late: bool,
) -> None:
    """The controller's shortcut never disagrees with :func:`step`."""
    p = progress(
        [(f"m{i}", w, s) for i, (w, s) in enumerate(targets)],
        kind=kind,
        current=current,
        ratio=ratio,
    )
    now = p.wave_started_at + (p.wave_timeout_s if late else 1.0)
    counts: dict[TargetStatus, int] = {}
    for t in p.targets:
        if t.wave <= current:
            counts[t.status] = counts.get(t.status, 0) + 1
    assert waits(kind, counts, ratio, late) == (
        step(p, now) == Step(WaveDecision.CONTINUE) and not late
    )


def test_empty_waves_after_the_last_are_done_once_the_rollout_ended() -> None:
    # one mainframe, waves [34, 67, 100]: all of it is wave 0; step() completes the rollout
    # without starting waves 1 and 2, which must not read "waiting" afterwards
    targets = [Target(*t) for t in fleet({0: [INS]})]
    running = summarize((34, 67, 100), 0, True, targets)
    assert [w["state"] for w in running["waves"]] == ["running", "waiting", "waiting"]
    ended = summarize((34, 67, 100), 0, False, targets)
    assert [w["state"] for w in ended["waves"]] == ["done", "done", "done"]
