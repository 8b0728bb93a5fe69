"""Errors of the workflow layer.

::

    Refused (exit 3)
    ├── TransitionRefused   the table forbids current -> target
    ├── Conflict            another actor changed the deployment first (lost compare-and-set)
    ├── LeaseHeld           another deployment holds the tier
    ├── AlreadyExists       the update id is taken
    └── PolicyRefused       approval policy (self-approval, not an approver)
    InvalidInput (exit 2)
    └── NotFound            no such deployment
    RemoteError (exit 4)
    ├── Interrupted         a server went away mid-verb: the deployment stays resumable
    └── OmegaApart          OMEGA's address spreads requests over replicas (resumable)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ashat.errors import NotFound, Refused, RemoteError

if TYPE_CHECKING:
    from ashat.workflow.states import State


class TransitionRefused(Refused):
    kind = "transition_refused"

    def __init__(self, update_id: str, current: State, target: State, allowed: str) -> None:
        super().__init__(
            f"{update_id} is {current.value}; it cannot go to {target.value} "
            f"(from {current.value} it may go to: {allowed})",
            update_id=update_id,
            state=current.value,
            requested=target.value,
        )
        self.current = current
        self.target = target


class Conflict(Refused):
    kind = "conflict"


class LeaseHeld(Refused):
    kind = "lease_held"


class AlreadyExists(Refused):
    kind = "already_exists"


class PolicyRefused(Refused):
    kind = "policy_refused"


class DeploymentNotFound(NotFound):
    def __init__(self, update_id: str) -> None:
        super().__init__(f"no deployment {update_id!r}", update_id=update_id)


class Interrupted(RemoteError):
    """A verb stopped because a server could not be reached (or answered nonsense).

    What the server did with the last request is unknown, and nothing is wrong with the
    release: the deployment keeps its in-flight state (``pushing``, ``releasing``) so that
    running the same verb again resumes it, as after a killed ``deploy`` process.
    """

    kind = "interrupted"

    def __init__(self, cause: RemoteError, update_id: str, state: str, verb: str) -> None:
        super().__init__(
            f"{cause.message}; {update_id} stays {state}: run '{verb}' again to resume",
            update_id=update_id,
            state=state,
            cause=cause.kind,
        )


class OmegaApart(RemoteError):
    """OMEGA lost a release it had just staged: the address it is configured by spreads the
    requests of one approval over several replicas, each of which stages releases in its own
    data directory. Transient: once the address is one replica's, the approval resumes."""

    kind = "omega_apart"
    transient = True

    def __init__(self, update_id: str, configure: str) -> None:
        super().__init__(
            f"OMEGA answered that {update_id} is not staged there, right after staging it: "
            "its address looks like a load balancer over several OMEGA replicas, each with "
            "releases staged in its own data directory. Configure one replica's own address "
            f"for the control side (deploy configure {configure} --token-file FILE; "
            "docs/team.md)",
            update_id=update_id,
        )
