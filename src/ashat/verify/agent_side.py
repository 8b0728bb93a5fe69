"""Checks that run on the agent, inside the release: Module Load Test and Database Connection.

The control side only forwards the settings to ``POST /v1/releases/{id}/checks/{name}``
and relays the verdict; the agent runs them where the release and its environment live.
"""

from __future__ import annotations

from typing import Any

from ashat.verify.base import CheckConfigError, CheckContext, Outcome


def ask_agent(ctx: CheckContext, name: str, body: dict[str, Any]) -> Outcome:
    answer = ctx.agent.request(
        "POST",
        f"/v1/releases/{ctx.update_id}/checks/{name}",
        json_body={**body, "timeout_s": ctx.timeout_s * 0.9},
        timeout_s=ctx.timeout_s + 5,
    )
    status = answer.get("status")
    if status not in ("passed", "failed", "skipped", "error"):
        return Outcome("error", f"the agent answered the {name} check with status {status!r}")
    details = answer.get("details")
    return Outcome(
        status, str(answer.get("summary") or ""), details if isinstance(details, dict) else {}
    )


class ModuleLoadCheck:
    name = "modules"
    title = "Module Load Test"

    def run(self, ctx: CheckContext) -> Outcome:
        # PUBLIC loads the modules the release's signed [app] names, not ashat.toml's as
        # it is now: what was pushed is what is verified (and the caller cannot choose).
        return ask_agent(ctx, "modules", {})


class DatabaseCheck:
    name = "database"
    title = "Database Connection"

    def run(self, ctx: CheckContext) -> Outcome:
        # Asked of PUBLIC even with nothing to connect to: its "skipped" is the one its
        # verification statement may sign (a skip said here alone, it would refuse).
        cfg = ctx.settings("database")
        body: dict[str, Any] = {
            k: cfg[k]
            for k in ("url", "url_env", "schema_version_query", "expect_schema_version")
            if k in cfg
        }
        for k in ("url", "url_env", "schema_version_query"):
            if k in body and not isinstance(body[k], str):
                raise CheckConfigError(f"{k} must be a string")
        return ask_agent(ctx, "database", body)
