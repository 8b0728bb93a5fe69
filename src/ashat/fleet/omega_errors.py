"""What OMEGA's fleet routes refuse with, as agent errors (each knows its HTTP status).

::

    AgentError                                 (ashat.agent.errors)
    ├── LicenseDenied    Refused   403  a license OMEGA will not serve; ``reason`` says why
    ├── NoSuchRollout    NotFound  404
    ├── NoSuchPack       NotFound  404  no pack of that release here: fetch its blobs one by one
    │   └── PackBuilding             404  not yet (it is being built): ask again after Retry-After
    └── FleetConflict    Refused   409  not approved, not current, a lower sequence than the
                                        fleet runs, nothing to roll back to, not a target

Malformed requests are the agent's :class:`~ashat.agent.errors.RequestInvalid` (400), a
missing license on a mainframe route :class:`~ashat.agent.errors.Unauthenticated` (401).
"""

from __future__ import annotations

from ashat.agent.errors import AgentError
from ashat.errors import NotFound, Refused
from ashat.fleet.license import LicenseRefused


class LicenseDenied(AgentError, Refused):
    status = 403
    kind = "license_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason

    @classmethod
    def of(cls, e: LicenseRefused) -> LicenseDenied:
        return cls(e.reason, e.message)


class NoSuchRollout(AgentError, NotFound):
    status = 404
    kind = "no_such_rollout"


class NoSuchPack(AgentError, NotFound):
    status = 404
    kind = "no_such_pack"


class PackBuilding(NoSuchPack):
    """Not yet: OMEGA is building the pack (``Retry-After`` says when to ask again)."""

    kind = "pack_building"
    retry_after_s = 1


class FleetConflict(AgentError, Refused):
    status = 409
    kind = "fleet_conflict"
