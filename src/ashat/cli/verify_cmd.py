"""``deploy verify``: the six checks against PUBLIC, concurrently, with the seed's output.

The work is :func:`ashat.ops.verify.run_verify`; this module prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ashat.cli.context import complete_update_id, operations
from ashat.cli.output import (
    BAD,
    OK,
    SKIP,
    WARN,
    Verdict,
    emit,
    json_mode,
    json_option,
    style,
)
from ashat.errors import OperationFailed
from ashat.ops.verify import app_url_from

if TYPE_CHECKING:
    from ashat.workflow.models import Server

__all__ = ["ICONS", "app_url_from", "print_result", "verify"]

ICONS = {"passed": OK, "failed": BAD, "skipped": SKIP, "error": WARN}


FINDINGS_SHOWN = 20  # lines of a security finding list printed (--json has them all)


def print_result(r: dict[str, Any]) -> None:
    icon = ICONS.get(r["status"], "?")
    click.echo(f"{icon} {r['title']}: {r['summary']}  ({r['duration_s']:.2f}s)")
    for line in security_findings(r)[:FINDINGS_SHOWN]:
        click.echo(f"     {line}")


def security_findings(r: dict[str, Any]) -> list[str]:
    """Where the Security Scan found each thing (masked: never a secret's value)."""
    details = r.get("details") if r.get("name") == "security" else None
    tree = details.get("tree") if isinstance(details, dict) else None
    if not isinstance(tree, dict):
        return []
    out = []
    for f in tree.get("secrets") or []:
        if isinstance(f, dict):
            out.append(f"{f.get('path')}:{f.get('line')}  {f.get('kind')}  {f.get('match')}")
    for path in tree.get("world_writable") or []:
        out.append(f"{path}  world-writable")
    for v in tree.get("vulnerable") or []:
        if isinstance(v, dict):
            ids = ", ".join(str(a.get("id")) for a in v.get("advisories") or [])
            out.append(f"{v.get('name')}=={v.get('version')}  {ids}")
    return out


@click.command()
@click.argument("update_id", shell_complete=complete_update_id)
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
    from ashat.ids import validate_update_id

    validate_update_id(update_id)

    def on_start(server: Server) -> None:
        if not json_mode():
            click.echo(style("ASHAT Deployment Verification", bold=True))
            click.echo(f"Update ID: {update_id} on {server.name} ({server.url})")

    from ashat.cli import unlean

    unlean()  # check plug-ins run in this process: they get every installed module
    data = operations().verify(update_id, list(only) or None, on_start)
    passed, latest = data["passed"], data["checks"]

    def human() -> None:
        for r in data["results"]:
            print_result(r)
        earlier = [r for r in latest if r["run"] != data["run"]]
        for r in earlier:
            click.echo(f"   (from run {r['run']}) ", nl=False)
            print_result(r)
        if passed:
            if data.get("verification_digest"):
                click.echo(
                    f"{OK} PUBLIC signed the verification statement "
                    f"{str(data['verification_digest'])[:16]}"
                )
            click.echo(
                f"{OK} {style('Verification PASSED!', bold=True)} next: deploy approve {update_id}"
            )
        else:
            missing = data.get("missing") or []
            off = set(missing)
            bad = [
                r
                for r in latest
                if r["status"] not in ("passed", "skipped") and r["name"] not in off
            ]
            click.echo(
                f"{BAD} {style('Verification FAILED', bold=True)}: "
                f"{len(bad) + len(missing)} check(s)"
            )
            for r in bad:
                click.echo(f"   - {r['title']}: {r['summary']}")
            if missing:
                click.echo(
                    f"   - not run yet: {', '.join(missing)} (every check must pass for this "
                    "release; run 'deploy verify' without --only, or switch a check off with "
                    "[verify] disabled in ashat.toml)"
                )

    emit(data, human)
    if not passed:
        raise Verdict(OperationFailed, "verification failed")
