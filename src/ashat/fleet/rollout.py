"""Rollout planning and progress: pure decisions over a rollout's targets.

OMEGA's controller (:mod:`.omega`) stores rollouts and their targets; every decision it
takes about them is a function here, of data and the time it is given (docs/fleet-protocol.md,
"Waves and the failure budget"):

- :func:`plan` fixes the fleet of a new rollout: N mainframes ordered by
  ``sha256(rollout_id + mainframe_id)``, wave k covering the first ``floor(waves[k]/100 × N)``
  (at least one: a wave never exceeds its percentage, and the first is never empty);
- :func:`step` looks at a running rollout and says what happens now: which silent
  mainframes time out, whether the budget broke, whether the wave is done and the next one
  starts, or whether the rollout is over;
- :func:`summarize` turns a rollout's targets into the per-wave and total counts of the
  status answer.

Nothing here reads a clock, a file or a database.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class Kind(enum.StrEnum):
    INSTALL = "install"
    ROLLBACK = "rollback"


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TargetStatus(enum.StrEnum):
    WAITING = "waiting"  # its wave has not started
    PENDING = "pending"  # targeted, no report yet
    INSTALLED = "installed"
    FAILED = "failed"


class WaveDecision(enum.StrEnum):
    CONTINUE = "continue"  # nothing to do but wait (and time out the silent, if any)
    ADVANCE = "advance"  # the wave is done: start ``next_wave``
    COMPLETE = "complete"  # the last wave is done
    FAIL = "fail"  # the budget broke (install) or a rollback ended with failures


def wave_sizes(waves: Sequence[int], n: int) -> list[int]:
    """How many of the N ordered mainframes each wave covers, cumulatively: ``floor`` so a
    wave never exceeds its percentage, and at least one so the first wave is never empty."""
    return [max(p * n // 100, 1) if n else 0 for p in waves]  # integers: exact at 100 %


def fleet_order(rollout_id: str, mainframe_ids: Iterable[str]) -> list[str]:
    """The rollout's fleet in the order waves take it: by ``sha256(rollout_id + id)``."""

    def rank(mid: str) -> tuple[str, str]:
        return hashlib.sha256((rollout_id + mid).encode("utf-8")).hexdigest(), mid

    return sorted(set(mainframe_ids), key=rank)


def plan(rollout_id: str, mainframe_ids: Iterable[str], waves: Sequence[int]) -> dict[str, int]:
    """Each mainframe of the fleet and the index of the first wave that covers it."""
    order = fleet_order(rollout_id, mainframe_ids)
    sizes = wave_sizes(waves, len(order))
    out: dict[str, int] = {}
    start = 0
    for k, end in enumerate(sizes):
        for mid in order[start:end]:
            out[mid] = k
        start = max(start, end)
    return out


def budget_broken(failed: int, targeted: int, max_failure_ratio: float) -> bool:
    """``failed / targeted_so_far > max_failure_ratio`` (never with nobody targeted)."""
    return targeted > 0 and failed / targeted > max_failure_ratio


@dataclass(frozen=True)
class Target:
    mainframe_id: str
    wave: int
    status: TargetStatus


@dataclass(frozen=True)
class Progress:
    """What :func:`step` needs of a running rollout."""

    kind: Kind
    waves: tuple[int, ...]  # percents
    current_wave: int
    wave_started_at: float  # seconds since the epoch
    wave_timeout_s: float
    max_failure_ratio: float
    targets: tuple[Target, ...]
    # pending mainframes outside their maintenance window or update-locked (fleet/windows.py):
    # they wait, and the wave's timeout does not fail them
    held: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Step:
    outcome: WaveDecision
    timed_out: tuple[str, ...] = ()  # pending mainframes whose silence is now a failure
    next_wave: int | None = None  # with ADVANCE
    reason: str | None = None  # with FAIL


def step(p: Progress, now: float) -> Step:
    """What happens to a running rollout at ``now`` (see the module docstring).

    An install rollout fails as soon as its budget breaks. A rollback rollout is never
    halted (halting would leave the rest on the release being undone): it runs to the end
    of its wave and fails if any mainframe did not roll back.
    """
    targeted = [t for t in p.targets if t.wave <= p.current_wave]
    timed_out: tuple[str, ...] = ()
    if now - p.wave_started_at >= p.wave_timeout_s:
        timed_out = tuple(
            sorted(
                t.mainframe_id
                for t in targeted
                if t.status is TargetStatus.PENDING and t.mainframe_id not in p.held
            )
        )
    late = set(timed_out)
    failed = sum(1 for t in targeted if t.status is TargetStatus.FAILED or t.mainframe_id in late)
    pending = sum(
        1 for t in targeted if t.status is TargetStatus.PENDING and t.mainframe_id not in late
    )
    n = len(targeted)
    if p.kind is Kind.INSTALL and budget_broken(failed, n, p.max_failure_ratio):
        reason = (
            f"failure budget broken: {failed} of {n} targeted mainframes failed "
            f"(ratio {failed / n:.2f} > max_failure_ratio {p.max_failure_ratio:g})"
        )
        return Step(WaveDecision.FAIL, timed_out, reason=reason)
    if pending:
        return Step(WaveDecision.CONTINUE, timed_out)
    later = sorted({t.wave for t in p.targets if t.wave > p.current_wave})
    if later:
        return Step(WaveDecision.ADVANCE, timed_out, next_wave=later[0])
    if p.kind is Kind.ROLLBACK and failed:
        reason = f"{failed} of {n} mainframes did not roll back"
        return Step(WaveDecision.FAIL, timed_out, reason=reason)
    return Step(WaveDecision.COMPLETE, timed_out)


def waits(
    kind: Kind, targeted: Mapping[TargetStatus, int], max_failure_ratio: float, timed_out: bool
) -> bool:
    """Whether :func:`step` would say CONTINUE and time nobody out, judged from how many
    mainframes targeted so far are in each status, without their list: the wave has not
    timed out, someone is pending, and the budget holds. (The controller asks this first,
    so that a report costs a count, not a read of the whole fleet.)"""
    if timed_out:
        return False
    failed = targeted.get(TargetStatus.FAILED, 0)
    if kind is Kind.INSTALL and budget_broken(failed, sum(targeted.values()), max_failure_ratio):
        return False
    return targeted.get(TargetStatus.PENDING, 0) > 0


def summarize(
    waves: Sequence[int],
    current_wave: int,
    running: bool,
    targets: Iterable[Target],
    reasons: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The ``waves``, ``totals`` and ``failures`` of a rollout's status answer.

    A wave's ``size`` is how many mainframes it adds; ``targeted`` is that once the wave has
    started, else 0. Totals count the mainframes targeted so far.
    """
    targets = list(targets)
    rows = []
    totals = {"targeted": 0, "installed": 0, "failed": 0, "pending": 0}
    # Waves past the last one with mainframes are never started (step() skips them): once
    # the rollout has ended they are done, not waiting (a small fleet leaves some empty).
    last_needed = max((t.wave for t in targets), default=-1)
    for k, percent in enumerate(waves):
        mine = [t for t in targets if t.wave == k]
        started = k <= current_wave
        counts = {
            "targeted": len(mine) if started else 0,
            "installed": sum(1 for t in mine if t.status is TargetStatus.INSTALLED),
            "failed": sum(1 for t in mine if t.status is TargetStatus.FAILED),
            "pending": sum(1 for t in mine if t.status is TargetStatus.PENDING),
        }
        if k > current_wave and (running or k <= last_needed):
            state = "waiting"
        elif k == current_wave and running:
            state = "running"
        else:
            state = "done"
        rows.append({"index": k, "percent": percent, "size": len(mine), **counts, "state": state})
        for key, value in counts.items():
            totals[key] += value
    why = reasons or {}
    failures = [
        {"mainframe_id": t.mainframe_id, "reason": why.get(t.mainframe_id)}
        for t in sorted(targets, key=lambda t: t.mainframe_id)
        if t.status is TargetStatus.FAILED
    ]
    return {"waves": rows, "totals": totals, "failures": failures}
