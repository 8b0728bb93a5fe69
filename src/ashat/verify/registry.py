"""The checks ``deploy verify`` runs: the six built in, then plug-ins.

A plug-in is an entry point in the group ``ashat.checks`` naming a class (or factory) whose
instances have ``name``, ``title`` and ``run(ctx) -> Outcome`` (see :mod:`ashat.verify.base`).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ashat.errors import InvalidInput
from ashat.verify.agent_side import DatabaseCheck, ModuleLoadCheck
from ashat.verify.api import ApiCheck
from ashat.verify.base import Check
from ashat.verify.health import HealthCheck
from ashat.verify.performance import PerformanceCheck
from ashat.verify.security import SecurityCheck

ENTRY_POINT_GROUP = "ashat.checks"


def builtin_checks() -> list[Check]:
    return [
        HealthCheck(),
        ModuleLoadCheck(),
        ApiCheck(),
        DatabaseCheck(),
        PerformanceCheck(),
        SecurityCheck(),
    ]


def plugin_checks() -> list[Check]:
    found: list[Check] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            check = ep.load()()
        except Exception as e:
            raise InvalidInput(f"check plug-in {ep.name!r} ({ep.value}) failed to load: {e}") from e
        if not all(hasattr(check, a) for a in ("name", "title", "run")):
            raise InvalidInput(f"check plug-in {ep.name!r} lacks name, title or run()")
        found.append(check)
    return found


def all_checks(only: list[str] | None = None) -> list[Check]:
    checks = builtin_checks() + plugin_checks()
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two checks share a name: {sorted(names)}")
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise InvalidInput(
                f"unknown check(s) {', '.join(unknown)}: expected some of {', '.join(names)}"
            )
        checks = [c for c in checks if c.name in only]
    return checks
