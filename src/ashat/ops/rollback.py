"""Rollback: PUBLIC back on the release it ran before a deployment; or, once the deployment
went out to the fleet, OMEGA and every mainframe back on the release before it, and then
PUBLIC too: a rolled-back release serves nowhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ashat.errors import OperationFailed
from ashat.faults import crash_point
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.transport.client import AgentClient
    from ashat.workflow.models import Deployment, Server
    from ashat.workflow.service import Workflow

FLEET_ROLLBACK_LIMIT_S = 900.0  # a fleet rollback is followed this long, or its wave's timeout
POLL_S = 0.3


@dataclass
class RollbackHooks:
    """What a front end may show while a fleet rollback runs (both optional)."""

    fleet: Callable[[Server], None] | None = None  # the fleet's rollback is about to start
    started: Callable[[str, Server], None] | None = None  # its rollout id, on OMEGA


@dataclass
class RollbackOutcome:
    """``fleet`` tells which kind ran; ``data`` is the verb's JSON document."""

    deployment: Deployment
    fleet: bool
    note: str = ""  # PUBLIC: what happened there
    status: dict[str, Any] = field(default_factory=dict)  # fleet: the rollback rollout
    data: dict[str, Any] = field(default_factory=dict)


def run_rollback(
    project: Project,
    update_id: str,
    reason: str | None = None,
    *,
    actor: str | None = None,
    hooks: RollbackHooks | None = None,
) -> RollbackOutcome:
    """Roll ``update_id`` back as ``actor`` and return once it is ``rolled_back``.

    Raises InvalidInput, DeploymentNotFound, TransitionRefused, OperationFailed (the fleet's
    rollback failed or outlasted :data:`FLEET_ROLLBACK_LIMIT_S`) or a transport error.
    """
    from ashat.ids import check_text, validate_update_id
    from ashat.workflow.approve import FLEET_ROLLBACK_FROM
    from ashat.workflow.push import rollback_public

    validate_update_id(update_id)
    if reason is not None:
        check_text(reason, "--reason")
    wf = project.workflow(actor)
    dep = wf.store.require(update_id)
    if dep.state.value == "distributing":  # stop the rollout first, then send back who took it
        from ashat.ops.rollout_control import control_rollout

        with client_for(project.omega_of(dep)) as omega:  # it may have ended
            dep, _ = reconcile_following(project, wf, update_id, omega)
        if dep.state.value == "distributing":  # (between two regions too)
            why = f"rolled back: {reason}" if reason else "rolled back by the operator"
            dep = control_rollout(project, update_id, "abort", why, actor=actor).deployment
    if dep.state in FLEET_ROLLBACK_FROM and dep.details.get("rollout_id"):
        return _rollback_fleet(project, update_id, reason, actor, hooks or RollbackHooks())
    server = project.require_server("public")
    with client_for(server) as agent:
        result = rollback_public(wf, agent, update_id, reason)
    return RollbackOutcome(result.deployment, False, note=result.note, data=result.to_json())


def _rollback_fleet(
    project: Project, update_id: str, reason: str | None, actor: str | None, hooks: RollbackHooks
) -> RollbackOutcome:
    from ashat.workflow.approve import (
        finish_fleet_rollback,
        restore_omega,
        settle_fleet_rollback,
        start_fleet_rollback,
    )

    wf = project.workflow(actor)
    dep = wf.store.require(update_id)
    server = project.omega_of(dep)
    if hooks.fleet is not None:
        hooks.fleet(server)
    _rollback_earlier_regions(project, wf, dep, reason, hooks)
    with client_for(server) as omega:
        rollout_id = dep.details.get("rollback_rollout_id") or _rollback_of(omega, update_id)
        settled: dict[str, Any] | None = None
        if rollout_id:  # a re-run: this rollback started before (deploy killed, OMEGA away)
            wf.store.update_details(update_id, {"rollback_rollout_id": rollout_id}, wf.now())
            restore_omega(omega, update_id, dep.details.get("omega_previous"))  # if not yet
            ended = dict(omega.rollout_status(str(rollout_id)))
            if ended.get("state") not in ("running", "completed"):  # short of some mainframes
                if _fleet_is_back(omega, update_id):  # they rolled back late, as they came back
                    settled = ended
                else:  # a new rollback for those still on it
                    wf.note(update_id, "rollback.retried", {"after": rollout_id})
                    rollout_id = None
        if settled is not None:
            status = settled
            dep = settle_fleet_rollback(wf, update_id, status, reason)
        else:
            if not rollout_id:
                rollout_id = start_fleet_rollback(wf, update_id, omega, reason)["rollout_id"]
                crash_point("rollback.started")
            if hooks.started is not None:
                hooks.started(str(rollout_id), server)
            started = time.monotonic()
            dep, status = finish_fleet_rollback(wf, update_id, omega, str(rollout_id), reason)
            # at least its wave's timeout (the release's own, which may exceed the limit)
            wave_s = status.get("wave_timeout_s")
            deadline = started + max(
                FLEET_ROLLBACK_LIMIT_S,
                float(wave_s) + 60.0 if isinstance(wave_s, int | float) else 0.0,
            )
            while status.get("state") == "running":
                if time.monotonic() > deadline:
                    raise OperationFailed(f"rollback {rollout_id} still running; see deploy status")
                time.sleep(POLL_S)
                dep, status = finish_fleet_rollback(wf, update_id, omega, str(rollout_id), reason)
    public = public_follows(project, wf, update_id)
    data = {
        "update_id": update_id,
        "state": dep.state.value,
        "restored": status.get("update_id"),
        "public": public,
        "rollout": status,
    }
    return RollbackOutcome(dep, True, note=public, status=status, data=data)


def _rollback_of(omega: AgentClient, update_id: str) -> str | None:
    """The newest rollback rollout OMEGA holds of ``update_id``: one this deployment's
    rollback started, whose id a killed ``deploy`` never kept (a release, once rolled back,
    is never released again)."""
    found = [r for r in omega.rollouts_of(update_id) if r.get("kind") == "rollback"]
    return str(found[-1]["rollout_id"]) if found else None


def _fleet_is_back(omega: AgentClient, update_id: str) -> bool:
    """Whether neither OMEGA nor any of its mainframes runs ``update_id`` any more."""
    if omega.health().get("current") == update_id:
        return False
    return not any(m.get("current") == update_id for m in omega.mainframes())


def _rollback_earlier_regions(
    project: Project, wf: Workflow, dep: Deployment, reason: str | None, hooks: RollbackHooks
) -> None:
    """With regions: each region that completed before the current one goes back too, newest
    first, each waited for (the current region's rollback then ends the deployment)."""
    from ashat.ids import omega_tier
    from ashat.workflow.approve import restore_omega

    for done in reversed(dep.details.get("regions_done") or []):
        region = str(done["region"])
        if region == dep.details.get("region"):
            continue  # the current region (stopped between regions): the caller's to do
        server = project.require_server(omega_tier(region))
        key = f"rollback_rollout_id@{region}"
        with client_for(server) as omega:
            rollout_id = wf.store.require(dep.id).details.get(key)
            if not rollout_id:
                previous = done.get("omega_previous")
                rollout = omega.fleet_rollback(dep.id, previous, reason or "operator rollback")
                restore_omega(omega, dep.id, previous)
                rollout_id = rollout.get("rollout_id")
                wf.store.update_details(dep.id, {key: rollout_id}, wf.now())
                wf.note(
                    dep.id,
                    "rollback.started",
                    {"rollout_id": rollout_id, "to": rollout.get("update_id"), "region": region},
                )
            if hooks.started is not None:
                hooks.started(str(rollout_id), server)
            deadline = time.monotonic() + FLEET_ROLLBACK_LIMIT_S
            status = dict(omega.rollout_status(str(rollout_id)))
            while status.get("state") == "running" and time.monotonic() < deadline:
                time.sleep(POLL_S)
                status = dict(omega.rollout_status(str(rollout_id)))
        if status.get("state") != "completed":
            raise OperationFailed(
                f"the rollback of {dep.id} in region {region} did not complete "
                f"({status.get('state')}): {status.get('reason')}"
            )


def public_follows(
    project: Project, wf: Workflow, update_id: str, caused_by: str | None = None
) -> str:
    """Once OMEGA and the fleet are back from ``update_id``, PUBLIC goes back too (a
    rolled-back release serves nowhere). Best effort: the fleet's rollback never waits on
    staging; what happened, or why not, in a line."""
    from ashat.errors import AshatError
    from ashat.workflow.push import restore_public

    server = project.store.server("public")
    if server is None:
        return "PUBLIC is not configured: nothing to restore there"
    try:
        with client_for(server) as agent:
            return restore_public(wf, agent, update_id, caused_by)
    except AshatError as e:
        why = {"error": e.message[:500]}
        wf.note(update_id, "rollback.public_failed", why, caused_by=caused_by)
        return f"PUBLIC did not go back ({e.message}): it may still run {update_id}"


def reconcile_following(
    project: Project, wf: Workflow, update_id: str, omega: AgentClient
) -> tuple[Deployment, dict[str, Any] | None]:
    """:func:`~ashat.workflow.approve.reconcile`, and when it ended in an automatic
    rollback, PUBLIC back too (:func:`public_follows`)."""
    from ashat.workflow.approve import reconcile, released_by
    from ashat.workflow.states import State

    before = wf.store.require(update_id).state
    dep, status = reconcile(wf, update_id, omega)
    if dep.state is State.ROLLED_BACK and before is not State.ROLLED_BACK:
        if dep.details.get("regions_done"):  # the regions before the failed one go back too
            _earlier_regions_follow(project, wf, dep)
        public_follows(project, wf, update_id, caused_by=released_by(dep))
    return dep, status


def _earlier_regions_follow(project: Project, wf: Workflow, dep: Deployment) -> None:
    """An automatic rollback in one region: the regions that completed before it go back too
    (a rolled-back release serves nowhere). Best effort, as for PUBLIC: what failed is an
    event, and ``deploy status`` shows each region's rollouts."""
    from ashat.errors import AshatError

    try:
        _rollback_earlier_regions(
            project, wf, dep, "automatic rollback in a later region", RollbackHooks()
        )
    except AshatError as e:
        wf.note(dep.id, "rollback.regions_failed", {"error": e.message[:500]})
