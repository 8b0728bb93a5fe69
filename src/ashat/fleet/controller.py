"""The rollout controller: carries out :mod:`.rollout`'s decisions on the fleet database.

:meth:`Controller.create` fixes a rollout's fleet and starts its first wave (cancelling
any running rollout: one runs at a time); :meth:`Controller.drive` applies
:func:`~.rollout.step` to a running rollout until it has to wait — timing out the silent,
starting the next wave (a mainframe already running the release counts as installed at
once), completing, or halting it, and then, for an install rollout with ``auto_rollback``,
creating the rollback rollout of every mainframe that installed it. Each returns the
mainframes that now have something to fetch. Called under OMEGA's lock and inside the
fleet database's exclusive transaction (:mod:`.omega`), so that when several replicas
drive one rollout each step is taken once: the next replica to look reads its result.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter

from ashat.bake import BakePolicy, decide
from ashat.clock import iso_from_timestamp as iso
from ashat.fleet.approvals import Approvals
from ashat.fleet.omega_errors import NoSuchRollout
from ashat.fleet.omega_store import FleetStore, Rollout, Spec, TargetRow
from ashat.fleet.rollout import (
    Kind,
    Progress,
    RolloutState,
    TargetStatus,
    WaveDecision,
    plan,
    step,
    summarize,
    waits,
)
from ashat.fleet.windows import holds

log = logging.getLogger("ashat.omega")

# The reason of a target its wave timed out (a mainframe offline): it may catch up later.
TIMED_OUT = "no report within wave_timeout_s"

HOLD_FRESH_S = 180.0  # a hold counts while its mainframe polled this recently (polls <= 60 s)
MAX_CACHED_POLICIES = 1024
MAX_HOLD_S = 8 * 86_400.0  # past this since its wave started, a held mainframe times out too
NOTHING_TO_ROLL_BACK_TO = "nothing to roll back to: OMEGA holds no approved release before it"


class Controller:
    def __init__(
        self,
        store: FleetStore,
        approvals: Approvals,
        finished: Counter,
        clock_now: Callable[[], float] = time.time,
    ) -> None:
        self.clock_now = clock_now  # OMEGA's clock, in epoch seconds (for the status)
        # each rollout's bake policy, read once: it never changes after the rollout starts
        self._policies: dict[str, BakePolicy | None] = {}
        self.store = store
        self.approvals = approvals
        self.finished = finished  # rollouts that ended, by kind and state

    def get(self, rollout_id: str) -> Rollout:
        r = self.store.rollout(rollout_id)
        if r is None:
            raise NoSuchRollout(f"no rollout {rollout_id[:80]!r}", rollout_id=rollout_id)
        return r

    def status(self, rollout_id: str) -> dict[str, Any]:
        """The rollout status answer (docs/fleet-protocol.md). Raises :class:`NoSuchRollout`."""
        r = self.get(rollout_id)
        rows = self.store.targets(r.rollout_id)
        body = self._summary(r, rows)
        return {
            "rollout_id": r.rollout_id,
            "kind": r.kind.value,
            "update_id": r.update_id,
            "from_update_id": r.from_update_id,
            "channel": r.channel,
            "to": r.selector,
            "rings": list(r.rings),
            "state": r.state.value,
            "reason": r.reason,
            "fleet_size": len(rows),
            "waves": body["waves"],
            "totals": body["totals"],
            "rollback_rollout_id": r.rollback_rollout_id,
            "parent_rollout_id": r.parent_rollout_id,
            "failures": body["failures"],
            "max_failure_ratio": r.max_failure_ratio,
            "wave_timeout_s": r.wave_timeout_s,
            "auto_rollback": r.auto_rollback,
            "created_at": r.created_at,
            "finished_at": r.finished_at,
            "paused": self.store.paused(r.rollout_id) if r.state is RolloutState.RUNNING else None,
            "pause_after": sorted(self.store.gates(r.rollout_id)),
            "bake": self._bake_status(r),
            "held": self._held(r, self.clock_now()) if r.state is RolloutState.RUNNING else {},
        }

    def _held(self, r: Rollout, now: float, released_since: float | None = None) -> dict[str, str]:
        """The current wave's pending mainframes that hold (fleet/windows.py), as polls of
        the last :data:`HOLD_FRESH_S` seconds say."""
        held = self.store.held_pending(
            r.rollout_id, r.current_wave, iso(now - HOLD_FRESH_S), released_since
        )
        rollback = r.kind is Kind.ROLLBACK
        return {m: why for m, why in held.items() if why == "released" or holds(why, rollback)}

    def _bake_status(self, r: Rollout) -> dict[str, Any] | None:
        """The bake policy and the current wave's bake: ``{"bake_s", "prometheus",
        "analysis", "wave", "started_at", "passed_at", "last"}``; None without a policy."""
        policy = self._policy(r.rollout_id)
        if policy is None:
            return None
        out: dict[str, Any] = {**policy.to_json(), "wave": None}
        try:
            started, passed, last = self.store.bake(r.rollout_id, r.current_wave)
        except KeyError:
            return out
        out.update(
            wave=r.current_wave,
            started_at=iso(started),
            passed_at=iso(passed) if passed is not None else None,
            last={**last.to_json(), "at": iso(last.at)} if last is not None else None,
        )
        return out

    def totals(self, r: Rollout) -> dict[str, int]:
        """The ``totals`` of ``r``'s status answer (also on OMEGA's ``/metrics``)."""
        totals: dict[str, int] = self._summary(r, self.store.targets(r.rollout_id))["totals"]
        return totals

    @staticmethod
    def _summary(r: Rollout, rows: list[TargetRow]) -> dict[str, Any]:
        body = summarize(
            r.waves,
            r.current_wave,
            r.state is RolloutState.RUNNING,
            (t.target() for t in rows),
            {t.mainframe_id: t.reason for t in rows},
        )
        for wave, ring in zip(body["waves"], r.rings, strict=False):
            wave["ring"] = ring  # a ring's wave: its selector's mainframes, not a percentage
        return body

    def fleet_previous(self, update_id: str) -> str | None:
        """What the fleet ran before ``update_id``: the release of the newest completed
        rollout of another release, else the release approved before it; None if none.
        Never a release rolled back here (withdrawn: a rollback does not send it again)."""

        def fit(candidate: str) -> bool:
            return (
                candidate != update_id
                and self.approvals.has(candidate)
                and not self.store.withdrawn(candidate)
            )

        for r in reversed(self.store.rollouts(RolloutState.COMPLETED)):
            if fit(r.update_id):
                return r.update_id
        approved = [a.update_id for a in self.store.approvals()]
        earlier = approved[: approved.index(update_id)] if update_id in approved else approved
        for candidate in reversed(earlier):
            if fit(candidate):
                return candidate
        return None

    def create(
        self,
        spec: Spec,
        fleet: list[str],
        now: float,
        rings_of: Mapping[str, int] | None = None,
    ) -> tuple[Rollout, set[str]]:
        """Start a rollout of ``spec`` to ``fleet`` (``rings_of``: the mainframes in a
        ring, and its index: their wave; the rest go by the percentage waves after the
        rings), cancelling the running ones it overlaps: all, unless both have a selector
        (two groups on two releases, A/B) and no mainframe is a target of both."""
        rollout_id = f"ro-{secrets.token_hex(8)}"
        mine = set(fleet)
        for running in self.store.rollouts(RolloutState.RUNNING):
            if spec.selector is not None and running.selector is not None:
                theirs = {t.mainframe_id for t in self.store.targets(running.rollout_id)}
                if not theirs & mine:
                    continue  # another group's rollout: it goes on
            self._finish(running, RolloutState.CANCELLED, f"superseded by {rollout_id}", now)
        r = Rollout(
            rollout_id=rollout_id,
            kind=spec.kind,
            update_id=spec.update_id,
            from_update_id=spec.from_update_id,
            channel=spec.channel,
            waves=spec.waves,
            max_failure_ratio=spec.max_failure_ratio,
            wave_timeout_s=spec.wave_timeout_s,
            auto_rollback=spec.auto_rollback,
            state=RolloutState.RUNNING,
            reason=None,
            current_wave=0,
            wave_started_at=now,
            rollback_rollout_id=None,
            parent_rollout_id=spec.parent_rollout_id,
            created_at=iso(now),
            finished_at=None,
            selector=spec.selector,
            rings=spec.rings,
        )
        ringed = dict(rings_of or {})
        ahead = len(spec.rings)
        rest = plan(rollout_id, [m for m in fleet if m not in ringed], spec.waves[ahead:])
        waves_of = {**ringed, **{mid: w + ahead for mid, w in rest.items()}}
        self.store.add_rollout(r, {mid: (w, TargetStatus.WAITING) for mid, w in waves_of.items()})
        self.store.add_gates(rollout_id, spec.pause_after)
        if spec.kind is Kind.INSTALL:
            self.store.add_bake_policy(rollout_id, spec.bake)
        woken = self._start_wave(r, 0, now)
        woken |= self.drive(r, now)
        return r, woken

    def drive(self, r: Rollout, now: float) -> set[str]:
        """Apply :func:`~.rollout.step` to a running rollout until it has to wait."""
        woken: set[str] = set()
        for _ in range(len(r.waves) + 2):  # each wave at most once, then an end
            fresh = self.store.rollout(r.rollout_id)
            if fresh is None or fresh.state is not RolloutState.RUNNING:
                break
            if self.store.paused(r.rollout_id) is not None:
                break  # no timeout, no next wave, no end until it is resumed
            r = fresh
            timed_out = now - r.wave_started_at >= r.wave_timeout_s
            counts = self.store.status_counts(r.rollout_id, r.current_wave)
            held: dict[str, str] = {}
            if timed_out and now - r.wave_started_at < MAX_HOLD_S:
                # the held wait for their window or lock: no timeout for them (a week and a
                # day at most: a weekly window opens within it, and no hold stalls a wave
                # for ever)
                held = self._held(r, now, released_since=now - r.wave_timeout_s)
                timed_out = counts.get(TargetStatus.PENDING, 0) > len(held)
            if waits(r.kind, counts, r.max_failure_ratio, timed_out):
                break
            targets = tuple(t.target() for t in self.store.targets(r.rollout_id))
            progress = Progress(
                r.kind,
                r.waves,
                r.current_wave,
                r.wave_started_at,
                r.wave_timeout_s,
                r.max_failure_ratio,
                targets,
                frozenset(held),
            )
            s = step(progress, now)
            for mid in s.timed_out:
                why = f"{TIMED_OUT} ({r.wave_timeout_s:g} s)"
                self.store.set_target(r.rollout_id, mid, TargetStatus.FAILED, why, iso(now))
            if s.outcome is WaveDecision.CONTINUE:
                break
            if (
                s.outcome in (WaveDecision.ADVANCE, WaveDecision.COMPLETE)
                and r.kind is Kind.INSTALL
            ):
                verdict, failure = self._baked(r, now)
                if verdict == "wait":
                    break
                if verdict == "fail":
                    woken |= self._halt(r, failure or "analysis failed", now)
                    break
            if s.outcome is WaveDecision.ADVANCE:
                assert s.next_wave is not None
                gates = self.store.gates(r.rollout_id)
                # an empty wave may be skipped: any gate up to the next wave holds it
                due = [g for g, passed in gates.items() if not passed]
                due = [g for g in due if r.current_wave <= g < s.next_wave]
                if due:
                    for g in due:
                        self.store.pass_gate(r.rollout_id, g)
                    why = f"gate after wave {due[-1] + 1}: deploy resume to go on"
                    self.store.pause(r.rollout_id, iso(now), why)
                    log.info("%s: %s", r.rollout_id, why)
                    break
                woken |= self._start_wave(r, s.next_wave, now)
                continue
            if s.outcome is WaveDecision.COMPLETE:
                self._finish(r, RolloutState.COMPLETED, None, now)
                log.info("%s: %s completed", r.rollout_id, r.update_id)
            else:
                woken |= self._halt(r, s.reason or "failed", now)
            break
        return woken

    def _policy(self, rollout_id: str) -> BakePolicy | None:
        """The rollout's bake policy (only active ones are stored), cached."""
        if rollout_id not in self._policies:
            if len(self._policies) > MAX_CACHED_POLICIES:
                self._policies.clear()
            self._policies[rollout_id] = self.store.bake_policy(rollout_id)
        return self._policies[rollout_id]

    def _baked(self, r: Rollout, now: float) -> tuple[str, str | None]:
        """Whether the current wave, all installed, has baked (``ashat/bake.py``): "pass"
        (or no bake asked), "wait" (the bake starts now, or goes on), or "fail" and why."""
        policy = self._policy(r.rollout_id)
        if policy is None:
            return "pass", None
        try:
            started, passed, last = self.store.bake(r.rollout_id, r.current_wave)
        except KeyError:
            self.store.start_bake(r.rollout_id, r.current_wave, now, iso(now))
            log.info("%s: wave %d installed; baking %g s", r.rollout_id, r.current_wave + 1,
                     policy.bake_s)  # fmt: skip
            return "wait", None
        if passed is not None:
            return "pass", None
        verdict, why = decide(policy, started, last, now, r.wave_started_at, r.wave_timeout_s)
        if verdict == "pass":
            self.store.pass_bake(r.rollout_id, r.current_wave, now, iso(now))
        return verdict, why

    def _start_wave(self, r: Rollout, wave: int, now: float) -> set[str]:
        """Start ``wave``: its mainframes are pending, but those already running the release
        count as installed at once. Returns the pending ones."""
        woken = set()
        # A mainframe still installing the release a rollback undoes runs the old one only
        # for now: it must report before it can count as rolled back.
        busy = (
            {
                t.mainframe_id
                for t in self.store.targets(r.parent_rollout_id)
                if t.status is TargetStatus.PENDING
            }
            if r.parent_rollout_id
            else set()
        )
        for mid in self.store.start_wave(r.rollout_id, wave, now, iso(now)):
            mf = self.store.mainframe(mid)
            if mf is not None and mf.current == r.update_id and mid not in busy:
                self.store.set_target(r.rollout_id, mid, TargetStatus.INSTALLED, None, iso(now))
            else:
                woken.add(mid)
        if wave > 0:
            log.info("%s: wave %d started (%d to install)", r.rollout_id, wave, len(woken))
        return woken

    def abort(self, r: Rollout, reason: str, now: float) -> None:
        """End a running rollout ``cancelled`` with ``reason``; no rollback of its own."""
        self._finish(r, RolloutState.CANCELLED, reason, now)

    def _finish(self, r: Rollout, state: RolloutState, reason: str | None, now: float) -> None:
        self.store.finish(r.rollout_id, state, reason, iso(now))
        self.finished.labels(kind=r.kind.value, state=state.value).inc()

    def _halt(self, r: Rollout, reason: str, now: float) -> set[str]:
        """Fail ``r``; with ``auto_rollback``, start the rollback of those that installed it."""
        if r.kind is not Kind.INSTALL or not r.auto_rollback:
            self._finish(r, RolloutState.FAILED, reason, now)
            log.warning("%s: %s failed: %s", r.rollout_id, r.update_id, reason)
            return set()
        if not self.approvals.has(r.from_update_id):
            reason = f"{reason}; {NOTHING_TO_ROLL_BACK_TO}"
            self._finish(r, RolloutState.FAILED, reason, now)
            log.error("%s: %s failed: %s", r.rollout_id, r.update_id, reason)
            return set()
        assert r.from_update_id is not None
        self._finish(r, RolloutState.FAILED, reason, now)
        # Those still installing count too: they may report ``installed`` after the halt,
        # and the rollback must not complete before they are back (see _start_wave).
        installed = [
            t.mainframe_id
            for t in self.store.targets(r.rollout_id)
            if t.status in (TargetStatus.INSTALLED, TargetStatus.PENDING)
        ]
        spec = Spec(
            kind=Kind.ROLLBACK,
            update_id=r.from_update_id,
            from_update_id=r.update_id,
            channel=r.channel,
            waves=(100,),
            max_failure_ratio=r.max_failure_ratio,
            wave_timeout_s=r.wave_timeout_s,
            auto_rollback=False,
            parent_rollout_id=r.rollout_id,
            selector=r.selector,  # one group's rollback leaves another group's rollout be
        )
        rb, woken = self.create(spec, installed, now)
        self.store.set_rollback(r.rollout_id, rb.rollout_id)
        log.error(
            "%s: %s failed (%s); %s rolls %d mainframes back to %s",
            r.rollout_id,
            r.update_id,
            reason,
            rb.rollout_id,
            len(installed),
            rb.update_id,
        )
        return woken

    def join_rollback(self, r: Rollout, mainframe_id: str, now: float) -> set[str]:
        """A mainframe installed ``r``'s release after ``r`` was halted: a running rollback
        of that release takes it too. Returns it if so."""
        woken = set()
        for rb in self.store.rollouts(RolloutState.RUNNING):
            if rb.kind is Kind.ROLLBACK and rb.from_update_id == r.update_id:
                self.store.add_target(
                    rb.rollout_id, mainframe_id, rb.current_wave, TargetStatus.PENDING
                )
                # It may have counted as rolled back while it still ran the old release.
                self.store.set_target(
                    rb.rollout_id, mainframe_id, TargetStatus.PENDING, None, iso(now)
                )
                woken.add(mainframe_id)
                log.info(
                    "%s: %s installed %s late; rolling it back too",
                    rb.rollout_id,
                    mainframe_id,
                    r.update_id,
                )
        return woken
