"""The server-side halves of the verification checks (DESIGN §6), by name.

``POST /v1/releases/{id}/checks/{name}`` calls :func:`run_check` with the release's
directory, the JSON body the control side sent (:mod:`ashat.verify.agent_side`,
:mod:`ashat.verify.security`) and the app's environment (the agent's own plus
``--app-env``). Each check answers ``{"status": "passed" | "failed" | "skipped" | "error",
"summary": "<one line>", "details": {...}}`` within ``body["timeout_s"]`` (default 30 s):

- ``modules`` (:mod:`.modules`): import each module in a fresh interpreter;
- ``database`` (:mod:`.database`): connect, ``SELECT 1``, the schema version;
- ``security`` (:mod:`.security`): secrets, world-writable paths, vulnerable pins.

A bad body is an ``error`` result naming the field, never an exception; only an unknown
check name raises (:class:`UnknownCheck`, answered 404).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ashat.agent.checks.base import CheckFunction
from ashat.agent.checks.database import check_database
from ashat.agent.checks.modules import check_modules
from ashat.agent.checks.security import check_security
from ashat.agent.confine import Jail
from ashat.agent.errors import AgentError
from ashat.errors import NotFound

CHECKS: Mapping[str, CheckFunction] = {
    "modules": check_modules,
    "database": check_database,
    "security": check_security,
}


class UnknownCheck(AgentError, NotFound, KeyError):
    """No server-side check has this name (a ``KeyError``, and an agent error answered 404)."""

    status = 404
    kind = "no_such_check"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no server-side check named {name!r}: expected one of {', '.join(CHECKS)}",
            check=name,
        )
        self.name = name

    def __str__(self) -> str:  # KeyError's would quote the message
        return self.message


RUN_APP_CODE = frozenset({"modules"})  # these start the app's code: inside its jail


def run_check(
    name: str,
    release_dir: Path,
    body: dict[str, Any],
    env: Mapping[str, str],
    jail: Jail | None = None,
    advisories: Path | None = None,
    app: Mapping[str, Any] | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the check ``name`` on the release at ``release_dir``, code of the app's inside
    ``jail`` (:mod:`.confine`), the agent's OSV snapshot at ``advisories``, never opening a
    database file of the agent's own ``data_dir``; raises :class:`UnknownCheck`."""
    check = CHECKS.get(name)
    if check is None:
        raise UnknownCheck(name)
    if name == "modules":  # imported with the app's own interpreter ([app] in its manifest)
        return check(release_dir, body, env, jail=jail, app=app)
    if name in RUN_APP_CODE:
        return check(release_dir, body, env, jail=jail)
    if name == "security":
        return check(release_dir, body, env, snapshot=advisories)
    return check(release_dir, body, env, data_dir=data_dir)


__all__ = [
    "CHECKS",
    "UnknownCheck",
    "check_database",
    "check_modules",
    "check_security",
    "run_check",
]
