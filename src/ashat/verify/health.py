"""Health Check: the agent's ``/v1/health`` and the app's ``health_path`` answer 2xx."""

from __future__ import annotations

import time

import httpx

from ashat.transport import outgoing
from ashat.verify.base import CheckContext, Outcome


class HealthCheck:
    name = "health"
    title = "Health Check"

    def run(self, ctx: CheckContext) -> Outcome:
        started = time.monotonic()
        health = ctx.agent.health()  # retries with backoff inside the client
        agent_ms = (time.monotonic() - started) * 1000
        details: dict[str, object] = {"agent_latency_ms": round(agent_ms, 1)}
        if health.get("current") != ctx.update_id:
            return Outcome.failed(
                f"PUBLIC runs {health.get('current')}, not {ctx.update_id}", **details
            )
        if ctx.app_url is None:
            return Outcome.passed(
                f"agent responding in {agent_ms:.0f} ms (the release runs no app)", **details
            )
        path = str(ctx.app.get("health_path") or "/")
        url = ctx.app_url + path
        deadline = started + ctx.timeout_s * 0.8
        delay, attempts, last = 0.1, 0, "no answer"
        while True:
            attempts += 1
            t0 = time.monotonic()
            try:
                with outgoing.client(timeout_s=max(deadline - t0, 0.5)) as http:
                    resp = http.get(url)  # a new connection each try, as a new client makes
                ms = (time.monotonic() - t0) * 1000
                if 200 <= resp.status_code < 300:
                    return Outcome.passed(
                        f"server responding normally (agent {agent_ms:.0f} ms, "
                        f"app {path} {ms:.0f} ms)",
                        **details, app_latency_ms=round(ms, 1), attempts=attempts, url=url,
                    )  # fmt: skip
                last = f"{path} answered {resp.status_code}"
            except httpx.HTTPError as e:
                last = f"{path}: {outgoing.short(e)}"
            if time.monotonic() + delay > deadline:
                return Outcome.failed(last, **details, attempts=attempts, url=url)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
