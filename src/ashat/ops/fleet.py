"""The fleet as OMEGA sees it, from the control side: list mainframes by label, label them,
pin them to a release (``ashat fleet``). Labels and selectors are :mod:`ashat.labels`'s;
each change is an audit event of the project."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ashat.errors import InvalidInput
from ashat.ops.project import Project, client_for

# what a mainframe's hold (its poll's hold=) means, as people read it
HOLD_WHY = {"window": "outside its maintenance window", "lock": "its app holds update.lock"}


def hold_text(hold: str) -> str:
    return HOLD_WHY.get(hold, hold)


@dataclass(frozen=True)
class FleetList:
    mainframes: list[dict[str, Any]]
    omega: str  # the OMEGA asked (its name)


def _omega(project: Project, region: str | None) -> Any:
    from ashat.ids import omega_tier

    return project.require_server(omega_tier(region))


def _selector(where: str | None) -> str | None:
    from ashat.labels import LabelError, parse_selector

    try:
        return str(parse_selector(where)) if where else None
    except LabelError as e:
        raise InvalidInput(f"--where: {e}") from e


def _mainframe_id(mainframe_id: str) -> str:
    from ashat.fleet.license import MAINFRAME_ID_RE

    if not MAINFRAME_ID_RE.fullmatch(mainframe_id):
        raise InvalidInput(f"{mainframe_id[:70]!r} is not a mainframe id")
    return mainframe_id


def list_mainframes(project: Project, where: str | None, region: str | None = None) -> FleetList:
    """OMEGA's registry, those ``where`` selects: labels, what each runs and should run."""
    selector = _selector(where)
    server = _omega(project, region)
    with client_for(server) as omega:
        return FleetList(omega.mainframes(selector), server.name)


def label_mainframe(
    project: Project, mainframe_id: str, items: Sequence[str], region: str | None = None
) -> dict[str, Any]:
    """Set (``KEY=VALUE``) and remove (``KEY-``) labels of a mainframe on OMEGA."""
    from ashat.labels import LabelError, parse_assignments

    _mainframe_id(mainframe_id)
    if not items:
        raise InvalidInput("give at least one KEY=VALUE (set) or KEY- (remove)")
    try:
        labels, remove = parse_assignments(items)
    except LabelError as e:
        raise InvalidInput(str(e)) from e
    server = _omega(project, region)
    with client_for(server) as omega:
        answer = omega.label(mainframe_id, labels, remove)
    project.workflow().note(
        None,
        "fleet.labelled",
        {"mainframe_id": mainframe_id, "set": labels, "removed": remove, "omega": server.name},
    )
    return {**answer, "omega": server.name}


def pin_mainframe(
    project: Project, mainframe_id: str, update_id: str | None, region: str | None = None
) -> dict[str, Any]:
    """Hold a mainframe on ``update_id`` (an approved release), or release it (None)."""
    from ashat.ids import validate_update_id

    _mainframe_id(mainframe_id)
    if update_id is not None:
        validate_update_id(update_id)
    server = _omega(project, region)
    with client_for(server) as omega:
        answer = omega.pin(mainframe_id, update_id)
    project.workflow().note(
        None,
        "fleet.pinned" if update_id else "fleet.unpinned",
        {"mainframe_id": mainframe_id, "update_id": update_id, "omega": server.name},
    )
    return {**answer, "omega": server.name}
