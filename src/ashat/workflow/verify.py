"""``deploy verify``: run the checks against PUBLIC and record the verdict.

``pushed | verified | verification_failed -> verifying -> verified | verification_failed``.
The checks themselves live in :mod:`ashat.verify`; this module decides when they may run,
stores every result with its event, keeps the performance baseline (updated only by a
passed run), and judges the deployment on the latest result of every check, so
``--only NAME`` re-runs some checks without forgetting the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ashat.errors import AshatError, OperationFailed
from ashat.ids import validate_update_id
from ashat.workflow.models import Deployment
from ashat.workflow.service import Workflow
from ashat.workflow.states import State, check_transition

# (names to run or None for all, baselines by path) -> results as dicts (CheckResult.to_json)
Runner = Callable[[Sequence[str] | None, dict[str, float]], list[dict[str, Any]]]


@dataclass(frozen=True)
class VerifyResult:
    deployment: Deployment
    run: int
    results: list[dict[str, Any]]  # this run's
    latest: list[dict[str, Any]]  # the latest of every check, this run's included
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.deployment.id,
            "state": self.deployment.state.value,
            "passed": self.passed,
            "run": self.run,
            "results": self.results,
            "checks": self.latest,
        }


def verify(
    wf: Workflow,
    update_id: str,
    public_current: str | None,
    runner: Runner,
    only: Sequence[str] | None = None,
    tier: str = "public",
) -> VerifyResult:
    validate_update_id(update_id)
    dep = wf.store.require(update_id)
    check_transition(update_id, dep.state, State.VERIFYING)  # refuses naming what is allowed
    if public_current != update_id:
        raise OperationFailed(
            f"PUBLIC runs {public_current or 'nothing'}, not {update_id}: there is nothing of "
            f"{update_id} to verify (push it again under a new id)",
            public_current=public_current,
        )
    wf.move(update_id, State.VERIFYING, details={"only": list(only) if only else None})
    try:
        results = runner(only, wf.store.baselines(tier))
        run = wf.store.record_checks(update_id, results, wf.actor, wf.now())
    except AshatError as e:
        wf.move(update_id, State.VERIFICATION_FAILED, reason=e.message[:500])
        raise
    latest = wf.store.latest_checks(update_id)
    passed = all(r["status"] in ("passed", "skipped") for r in latest)
    for r in results:
        if r["name"] == "performance" and r["status"] == "passed":
            d = r.get("details") or {}
            if isinstance(d.get("p95_ms"), int | float) and isinstance(d.get("path"), str):
                wf.store.set_baseline(
                    tier, d["path"], float(d["p95_ms"]), update_id, wf.actor, wf.now()
                )
    summary = {r["name"]: r["status"] for r in latest}
    failing = [r for r in latest if r["status"] not in ("passed", "skipped")]
    reason = None if passed else "; ".join(f"{r['title']}: {r['summary']}" for r in failing)[:500]
    dep = wf.move(
        update_id,
        State.VERIFIED if passed else State.VERIFICATION_FAILED,
        reason=reason,
        details={"run": run, "checks": summary},
        details_update={"checks": summary},
    )
    return VerifyResult(dep, run, results, latest, passed)
