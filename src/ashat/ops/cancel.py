"""Cancel: a deployment that was not approved stops, and PUBLIC goes back on the release it
ran before the cancelled push (issue 19): a cancelled release serves nowhere it can be
taken from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ashat.ops.project import Project

if TYPE_CHECKING:
    from ashat.workflow.models import Deployment


@dataclass(frozen=True)
class CancelOutcome:
    deployment: Deployment
    public: str  # what happened on PUBLIC, in a line

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment.to_json(), "public": self.public}


def run_cancel(
    project: Project, update_id: str, reason: str | None, *, actor: str | None = None
) -> CancelOutcome:
    """Cancel ``update_id`` as ``actor``, then put PUBLIC back (best effort: the cancel
    stands whatever PUBLIC answers; the line says). Run again on a deployment cancelled
    while PUBLIC was away, it puts PUBLIC back now. Raises InvalidInput, DeploymentNotFound
    or TransitionRefused (cancelled already, nothing left to do) before anything changes."""
    from ashat.ids import validate_update_id
    from ashat.ops.rollback import public_follows
    from ashat.workflow.states import State

    validate_update_id(update_id)
    wf = project.workflow(actor)
    dep = wf.store.require(update_id)
    if dep.state is State.CANCELLED and _still_on_public(project, dep):
        return CancelOutcome(dep, public_follows(project, wf, update_id))
    dep = wf.cancel(update_id, reason)
    return CancelOutcome(dep, public_follows(project, wf, update_id))


def _still_on_public(project: Project, dep: Deployment) -> bool:
    """Whether PUBLIC still runs a cancelled ``dep`` and has a release to go back to: the
    cancel reached it not (PUBLIC away, the process killed). PUBLIC unreachable again is
    said as such (a transport error, exit 4), not as "nothing left to do"."""
    from ashat.ops.project import client_for

    server = project.store.server("public")
    if server is None or not dep.details.get("public_previous"):
        return False
    with client_for(server, retries=0) as agent:
        return bool(agent.health().get("current") == dep.id)
