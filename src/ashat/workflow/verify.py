"""``deploy verify``: run the checks against PUBLIC and record the verdict.

``pushed | verified | verification_failed -> verifying -> verified | verification_failed``.
The checks themselves live in :mod:`ashat.verify`; this module decides when they may run,
stores every result with its event, keeps the performance baseline, and judges the
deployment (:func:`verdict`): it is ``verified`` only when every *required* check (all the
project's checks but those ``[verify] disabled`` names) has a latest result, for this
release, that passed (or was skipped because its settings give it nothing to check).
``--only NAME`` re-runs some checks without forgetting the others, and can never make a
deployment verified while another required check has no result or failed. Only a run that
leaves the deployment fully verified moves the performance baseline.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ashat.errors import AshatError, OperationFailed
from ashat.faults import crash_point
from ashat.ids import same_person, validate_update_id
from ashat.trust.statements import digest as statement_digest
from ashat.workflow.errors import LeaseHeld
from ashat.workflow.models import Deployment, Lease
from ashat.workflow.service import Workflow
from ashat.workflow.states import State, check_transition

# (names to run or None for all, baselines by path) -> results as dicts (CheckResult.to_json)
Runner = Callable[[Sequence[str] | None, dict[str, list[float]]], list[dict[str, Any]]]
# (the latest result of each check) -> PUBLIC's signed verification statement, or None when
# PUBLIC has no verifier key and the project no root of trust (nothing to sign then)
Attest = Callable[[list[dict[str, Any]]], dict[str, Any] | None]


ACCEPTED = ("passed", "skipped")


@dataclass(frozen=True)
class Verdict:
    """The deployment's verdict from the latest result of each check."""

    required: tuple[str, ...]
    missing: tuple[str, ...]  # required, and never run against this release
    failing: tuple[dict[str, Any], ...]  # required, and the latest result is not accepted

    @property
    def passed(self) -> bool:
        return not self.missing and not self.failing

    def reason(self) -> str | None:
        if self.passed:
            return None
        parts = [f"{r['title']}: {r['summary']}" for r in self.failing]
        if self.missing:
            parts.append(
                f"not run yet: {', '.join(self.missing)} (run 'deploy verify' without --only, "
                "or switch a check off with [verify] disabled)"
            )
        return "; ".join(parts)[:500]


def verdict(required: Sequence[str], latest: Sequence[dict[str, Any]]) -> Verdict:
    """Judge on the latest result of each required check; results of others are ignored."""
    by_name = {r["name"]: r for r in latest}
    missing = tuple(n for n in required if n not in by_name)
    failing = tuple(
        by_name[n] for n in required if n in by_name and by_name[n]["status"] not in ACCEPTED
    )
    return Verdict(tuple(required), missing, failing)


@dataclass(frozen=True)
class VerifyResult:
    deployment: Deployment
    run: int
    results: list[dict[str, Any]]  # this run's
    latest: list[dict[str, Any]]  # the latest of every check, this run's included
    passed: bool
    missing: tuple[str, ...] = ()  # required checks with no result yet

    @property
    def statement_digest(self) -> str | None:
        """The digest of PUBLIC's signed statement, when this run ended with one."""
        statement = self.deployment.details.get("verification")
        return statement_digest(statement) if isinstance(statement, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.deployment.id,
            "state": self.deployment.state.value,
            "passed": self.passed,
            "run": self.run,
            "results": self.results,
            "checks": self.latest,
            "missing": list(self.missing),
            "verification_digest": self.statement_digest,
        }


def _refuse_if_verified_elsewhere(wf: Workflow, update_id: str) -> None:
    """A deployment left ``verifying`` is verified again by ``deploy verify``, unless a
    verify may still run it: PUBLIC's lease for it has not expired, and it is another
    person's, or its process still runs (or runs on another host, which cannot be asked).
    Raises LeaseHeld."""
    lease = wf.store.lease("public")
    if lease is None or lease.deployment_id != update_id or lease.expires_at <= wf.now():
        return
    if same_person(lease.actor) == same_person(wf.actor) and not _runs(lease):
        return  # this person's verify, whose process is gone: run it again
    raise LeaseHeld(
        f"{update_id} is being verified by {lease.owner} (lease until {lease.expires_at}); "
        "wait for it to end or its lease to expire",
        tier="public",
        holder=update_id,
    )


def _runs(lease: Lease) -> bool:
    """Whether the process that holds ``lease`` may still run: not if it is of this host
    and gone."""
    host, pid = lease.process
    if host != socket.gethostname() or pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def verify(
    wf: Workflow,
    update_id: str,
    public_current: str | None,
    runner: Runner,
    only: Sequence[str] | None = None,
    tier: str = "public",
    *,
    required: Sequence[str],
    attest: Attest | None = None,
) -> VerifyResult:
    """Run the checks (``only`` some) through ``runner`` and record results and verdict.

    ``required`` names every check the project requires (all of them but those switched
    off in ``[verify] disabled``). Raises TransitionRefused, OperationFailed (PUBLIC runs
    another release) or what the runner raises (the deployment is then
    ``verification_failed``). With ``attest``, a verified release also gets PUBLIC's
    signed statement (kept in the deployment's ``verification``); PUBLIC refusing to sign
    fails the verification.
    """
    validate_update_id(update_id)
    dep = wf.store.require(update_id)
    resumed = dep.state is State.VERIFYING  # a verify cut short (killed, its server gone)
    if resumed:
        _refuse_if_verified_elsewhere(wf, update_id)
    else:
        check_transition(update_id, dep.state, State.VERIFYING)  # refuses naming what may be
    if public_current != update_id:
        if resumed:  # PUBLIC moved on meanwhile: this verify can never finish
            wf.move(
                update_id,
                State.VERIFICATION_FAILED,
                reason=f"verification cut short; PUBLIC runs {public_current or 'nothing'} now",
            )
        raise OperationFailed(
            f"PUBLIC runs {public_current or 'nothing'}, not {update_id}: there is nothing of "
            f"{update_id} to verify (push it again under a new id)",
            public_current=public_current,
        )
    if resumed:
        lease = wf.store.lease("public")
        if lease is None or lease.deployment_id != update_id:  # taken by another since
            holder = lease.deployment_id if lease else None
            wf.move(update_id, State.VERIFICATION_FAILED,
                    reason=f"verification cut short; PUBLIC's lease went to {holder}")  # fmt: skip
            raise LeaseHeld(
                f"PUBLIC's lease went to {holder} since this verify was cut short; "
                f"{update_id} is verification_failed: run 'deploy verify {update_id}' again "
                "once PUBLIC is free",
                tier="public",
                holder=holder,
            )
        wf.note(update_id, "verify.resumed", {"previous_owner": lease.owner})
        wf.renew("public", update_id)
    else:
        wf.move(update_id, State.VERIFYING, details={"only": list(only) if only else None})
    crash_point("verify.started")
    try:
        results = runner(only, wf.store.baselines(tier))
        run = wf.store.record_checks(update_id, results, wf.actor, wf.now())
    except AshatError as e:
        wf.move(update_id, State.VERIFICATION_FAILED, reason=e.message[:500])
        raise
    latest = wf.store.latest_checks(update_id)
    judged = verdict(required, latest)
    summary = {r["name"]: r["status"] for r in latest}
    statement = None
    reason = judged.reason()
    if judged.passed and attest is not None:
        try:
            statement = attest(latest)
        except AshatError as e:
            reason = f"PUBLIC did not sign the verification: {e.message}"[:500]
            wf.move(update_id, State.VERIFICATION_FAILED, reason=reason)
            raise
    if judged.passed:
        # Only a fully verified (and, with a verifier, signed) release moves the baseline: a
        # failed or partial run must not make the next honest release look like a regression.
        by_name = {r["name"]: r for r in latest}
        perf = by_name.get("performance")
        if perf is not None and perf["run"] == run and perf["status"] == "passed":
            d = perf.get("details") or {}
            if isinstance(d.get("p95_ms"), int | float) and isinstance(d.get("path"), str):
                wf.store.set_baseline(
                    tier, d["path"], float(d["p95_ms"]), update_id, wf.actor, wf.now()
                )
    update: dict[str, Any] = {"checks": summary, "verification": statement}
    dep = wf.move(
        update_id,
        State.VERIFIED if judged.passed else State.VERIFICATION_FAILED,
        reason=reason,
        details={
            "run": run,
            "checks": summary,
            "missing": list(judged.missing),
            **({"verification_digest": statement_digest(statement)} if statement else {}),
        },
        details_update=update,
    )
    return VerifyResult(dep, run, results, latest, judged.passed, judged.missing)
