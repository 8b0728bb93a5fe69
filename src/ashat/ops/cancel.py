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
    stands whatever PUBLIC answers; the line says). Raises InvalidInput, DeploymentNotFound
    or TransitionRefused before anything changes."""
    from ashat.ops.rollback import public_follows

    wf = project.workflow(actor)
    dep = wf.cancel(update_id, reason)
    return CancelOutcome(dep, public_follows(project, wf, update_id))
