"""``deploy verify``: the six checks against PUBLIC, concurrently, with the seed's output."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click

from ashat.cli.context import Project
from ashat.cli.output import BAD, OK, OUT, SKIP, WARN, emit, json_option, style
from ashat.cli.release import client_for, require_server
from ashat.errors import InvalidInput

ICONS = {"passed": OK, "failed": BAD, "skipped": SKIP, "error": WARN}


def app_url_from(agent_url: str, health: dict[str, Any], verify_cfg: dict[str, Any]) -> str | None:
    """Where the app answers: ``[verify] app_url``, else the agent's host and the app's port."""
    override = verify_cfg.get("app_url")
    if override is not None:
        if not isinstance(override, str) or not override.startswith(("http://", "https://")):
            raise InvalidInput("[verify] app_url must be an http(s) URL")
        return override.rstrip("/")
    app = health.get("app")
    if not isinstance(app, dict) or not isinstance(app.get("port"), int):
        return None
    host = urlsplit(agent_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{app['port']}"


def print_result(r: dict[str, Any]) -> None:
    icon = ICONS.get(r["status"], "?")
    click.echo(f"{icon} {r['title']}: {r['summary']}  ({r['duration_s']:.2f}s)")


@click.command()
@click.argument("update_id")
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Re-run only this check (repeatable): health, modules, api, database, performance, "
    "security, or a plug-in's name.",
)
@json_option
def verify(update_id: str, only: tuple[str, ...]) -> None:
    """Run the verification checks against PUBLIC; exit 1 if any fails."""
    from ashat.config import Config
    from ashat.ids import validate_update_id
    from ashat.verify.base import CheckContext
    from ashat.verify.registry import all_checks
    from ashat.verify.runner import check_timeout, run_checks
    from ashat.workflow.verify import verify as run_verify

    validate_update_id(update_id)
    project = Project.find()
    config = Config.load(project.root)
    verify_cfg = config.table("verify")
    checks = all_checks(list(only) or None)
    wf = project.workflow()
    wf.store.require(update_id)
    server = require_server(project, "public")

    with client_for(server) as agent:
        health = agent.health()
        app_url = app_url_from(server.url, health, verify_cfg)
        if not OUT.json:
            click.echo(style("ASHAT Deployment Verification", bold=True))
            click.echo(f"Update ID: {update_id} on {server.name} ({server.url})")

        def make_ctx(check: Any) -> CheckContext:
            return CheckContext(
                update_id=update_id,
                tier="public",
                agent=agent,
                agent_url=server.url,
                app_url=app_url,
                app=config.app.raw,
                verify=verify_cfg,
                project_root=project.root,
                ca_cert=server.ca_cert,
                baseline_p95_ms=baselines,
                timeout_s=check_timeout(verify_cfg, check.name),
            )

        baselines: dict[str, float] = {}

        def runner(names: Any, stored: dict[str, float]) -> list[dict[str, Any]]:
            baselines.update(stored)
            results = run_checks(checks, make_ctx)
            return [r.to_json() for r in results]

        result = run_verify(wf, update_id, health.get("current"), runner, list(only) or None)

    def human() -> None:
        for r in result.results:
            print_result(r)
        earlier = [r for r in result.latest if r["run"] != result.run]
        for r in earlier:
            click.echo(f"   (from run {r['run']}) ", nl=False)
            print_result(r)
        if result.passed:
            click.echo(
                f"{OK} {style('Verification PASSED!', bold=True)} next: deploy approve {update_id}"
            )
        else:
            bad = [r for r in result.latest if r["status"] not in ("passed", "skipped")]
            click.echo(f"{BAD} {style('Verification FAILED', bold=True)}: {len(bad)} check(s)")
            for r in bad:
                click.echo(f"   - {r['title']}: {r['summary']}")

    emit(result.to_json(), human)
    if not result.passed:
        raise SystemExit(1)
