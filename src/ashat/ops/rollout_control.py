"""``deploy pause|resume|abort|retry``: an operator's hand on a deployment's rollout
(issue 19). OMEGA does it (:meth:`ashat.fleet.omega.Omega.control`); this records it in
the deployment's audit trail and, for an abort, moves the deployment on
(``distribution_failed``: ``deploy rollback`` then sends back who installed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ashat.errors import Refused
from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    from ashat.workflow.models import Deployment

ACTIONS = {"pause": "paused", "resume": "resumed", "abort": "aborted", "retry": "retried"}
RUNNING_ONLY = frozenset({"pause", "resume", "abort"})


class NoRunningRollout(Refused):
    kind = "no_running_rollout"


@dataclass(frozen=True)
class ControlOutcome:
    deployment: Deployment
    action: str
    rollout: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.to_json(),
            "action": self.action,
            "rollout": self.rollout,
        }


def control_rollout(
    project: Project,
    update_id: str,
    action: str,
    reason: str | None = None,
    *,
    actor: str | None = None,
) -> ControlOutcome:
    """Raises InvalidInput, DeploymentNotFound, NoRunningRollout (exit 3: the deployment
    is not distributing; ``retry`` also takes a completed one) or a transport error."""
    from ashat.errors import InvalidInput
    from ashat.ids import check_text, validate_update_id
    from ashat.ops.rollback import reconcile_following

    if action not in ACTIONS:
        raise InvalidInput(f"no rollout action {action!r}: {', '.join(ACTIONS)}")
    validate_update_id(update_id)
    if reason is not None:
        check_text(reason, "--reason")
    wf = project.workflow(actor)
    dep = wf.store.require(update_id)
    rollout_id = dep.details.get("rollout_id")
    allowed = ("distributing",) if action in RUNNING_ONLY else ("distributing", "completed")
    if not rollout_id or dep.state.value not in allowed:
        raise NoRunningRollout(
            f"{update_id} is {dep.state.value}: only a deployment that is "
            f"{' or '.join(allowed)} has a rollout to {action}",
            update_id=update_id,
            state=dep.state.value,
        )
    pending = dep.details.get("next_region")
    if pending and dep.state.value == "distributing":
        return _between_regions(project, wf, dep, action, str(pending), reason)
    server = project.omega_of(dep)  # its region's, with regions
    with client_for(server) as omega:
        status: dict[str, Any] = dict(omega.control_rollout(rollout_id, action, reason))
        wf.note(
            update_id,
            f"rollout.{ACTIONS[action]}",
            {"rollout_id": rollout_id, **({"reason": reason} if reason else {})},
        )
        if action == "abort":
            dep, status_now = reconcile_following(project, wf, update_id, omega)
            status = status_now or status
        else:
            dep = wf.store.require(update_id)
    return ControlOutcome(dep, action, status)


def _between_regions(
    project: Project, wf: Any, dep: Deployment, action: str, pending: str, reason: str | None
) -> ControlOutcome:
    """A region completed and ``pending`` is next: no rollout runs. An abort stops the
    release here (``distribution_failed``: the regions that got it keep it until ``deploy
    rollback``); the other actions have nothing to act on."""
    from ashat.workflow.states import State

    if action != "abort":
        raise NoRunningRollout(
            f"{dep.id} is between regions: nothing runs until 'deploy approve {dep.id}' "
            f"releases region {pending} ('deploy abort {dep.id}' stops it here)",
            update_id=dep.id,
            state=dep.state.value,
        )
    why = f"aborted before region {pending}" + (f": {reason}" if reason else "")
    dep = wf.move(
        dep.id,
        State.DISTRIBUTION_FAILED,
        reason=why[:500],
        details={"not_released_to": pending},
        details_update={"next_region": None},
    )
    return ControlOutcome(dep, action, {"state": "cancelled", "reason": why})
