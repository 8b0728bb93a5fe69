"""``deploy``: the seed's verbs. Each is a thin shell over a workflow service.

Verbs print in the spirit of the seed's example session, or one JSON document with
``--json``; exit codes follow DESIGN §8 (see ``ashat.errors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ashat import __version__
from ashat.cli.context import complete_update_id, operations
from ashat.cli.output import BAD, OK, WARN, AshatGroup, Verdict, emit, json_option, run_main, style
from ashat.errors import InvalidInput, OperationFailed, RemoteError
from ashat.workflow.models import Deployment, Event
from ashat.workflow.states import State, describe_allowed


def _short_time(at: str) -> str:
    return at[:19].replace("T", " ")


def _details_line(details: dict[str, Any]) -> str:
    parts = []
    for k, v in details.items():
        if isinstance(v, dict | list):
            continue
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _print_event(ev: Event) -> None:
    click.echo(
        f"  #{ev.seq:<6} {_short_time(ev.at)}  {ev.actor:<12} {ev.kind:<26} "
        f"{_details_line(ev.details)}".rstrip()
    )


def _tasks(dep: Deployment) -> str:
    return ", ".join(str(t.get("ref")) for t in dep.details.get("tasks") or [])


def _print_table(deps: list[Deployment]) -> None:
    if not deps:
        click.echo("  (none)")
        return
    width = max(len(d.id) for d in deps)
    for d in deps:
        click.echo(
            f"  {d.id:<{width}}  {d.state.value:<20} {d.created_by:<12} "
            f"{_short_time(d.updated_at)}  {d.description}"
            + (f"  [{_tasks(d)}]" if d.details.get("tasks") else "")
        )


@click.group(cls=AshatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--via",
    metavar="URL",
    envvar="ASHAT_CONTROL",
    help="Work through 'ashat serve' at URL instead of the local store (also ASHAT_CONTROL); "
    "your API token comes from ASHAT_TOKEN or ASHAT_TOKEN_FILE.",
)
@click.version_option(__version__, prog_name="deploy")
def cli(via: str | None) -> None:
    """ashat deploy: carry a release ALPHA -> PUBLIC -> approval -> OMEGA -> Licensed Mainframes."""


# -- configure / servers --------------------------------------------------------------------


@cli.command()
@click.argument("tier", type=click.Choice(["public", "omega"]))
@click.argument("url")
@click.argument("name")
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="File holding the bearer token."
)
@click.option("--ca-cert", type=click.Path(dir_okay=False), help="CA certificate (PEM) for https.")
@click.option(
    "--region",
    help="OMEGA only: the region this OMEGA serves ([distribution] regions releases to each).",
)
@json_option
def configure(
    tier: str, url: str, name: str, token_file: str | None, ca_cert: str | None,
    region: str | None,
) -> None:  # fmt: skip
    """Set the PUBLIC (staging) or OMEGA (production) server: deploy configure public URL NAME."""
    from ashat.ids import omega_tier, tier_label

    if region is not None:
        if tier != "omega":
            raise InvalidInput("--region names an OMEGA's region: deploy configure omega ...")
        tier = omega_tier(region)
    token_path = Path(token_file) if token_file else None
    server, old = operations().configure(tier, url, name, token_path, ca_cert)

    def human() -> None:
        verb = "Reconfigured" if old else "Configured"
        click.echo(f"{OK} {verb} {tier_label(tier)}: {server.name} at {server.url}")
        if old:
            click.echo(f"   (was {old.name} at {old.url})")
        click.echo(f"   token: {'configured' if server.token_path else 'none'}")

    emit({"server": server.to_json(), "replaced": old.to_json() if old else None}, human)


@cli.command()
@click.option("--check", is_flag=True, help="Ask each server's /v1/health.")
@json_option
def servers(check: bool) -> None:
    """The configured tiers, their URLs and names."""
    from ashat.ids import tier_label

    rows, results = operations().servers(check)

    def human() -> None:
        if not rows:
            click.echo("No servers configured. Run: deploy configure public <url> <name>")
            return
        click.echo("ASHAT Servers")
        for s in rows:
            line = f"  {tier_label(s.tier):<7} {s.name:<20} {s.url}"
            if s.tier in results:
                r = results[s.tier]
                ok = r["reachable"] and r.get("authorized", True)
                line += f"  {OK} reachable" if ok else f"  {BAD} {r['error']}"
                isolation = (r.get("health") or {}).get("app_isolation") or {}
                if isolation.get("warning"):
                    line += f"\n          {WARN} UNCONFINED APP: {isolation['warning']}"
            click.echo(line)

    emit(
        {"servers": [{**s.to_json(), **results.get(s.tier, {})} for s in rows]},
        human,
    )
    if check and any(not (r["reachable"] and r.get("authorized", True)) for r in results.values()):
        raise Verdict(RemoteError, "a server is unreachable or refuses our token")


# -- status / history / log -----------------------------------------------------------------


@cli.command()
@click.argument("update_id", required=False, shell_complete=complete_update_id)
@json_option
def status(update_id: str | None) -> None:
    """A deployment's state and last events; without an id, what is in flight."""
    ops = operations()
    if update_id:
        view = ops.status(update_id)
        dep, events, lease, checks = view.deployment, view.events, view.leases, view.checks
        rollout, rollout_note = view.rollout, view.rollout_note

        def human() -> None:
            click.echo(f"Update ID:   {dep.id}")
            click.echo(f"State:       {style(dep.state.value, bold=True)}")
            click.echo(f"Next:        {describe_allowed(dep.state)}")
            click.echo(f"Description: {dep.description}")
            if dep.details.get("tasks"):
                click.echo(f"Tasks:       {_tasks(dep)}")
            click.echo(f"Pushed by:   {dep.created_by} at {_short_time(dep.created_at)}")
            click.echo(f"Updated:     {_short_time(dep.updated_at)}")
            if dep.reason:
                click.echo(f"Reason:      {dep.reason}")
            tail = dep.details.get("log_tail") if dep.state.value == "failed" else None
            if isinstance(tail, str) and tail.strip():
                click.echo("Its log ends with:")
                for line in tail.rstrip().splitlines()[-40:]:
                    click.echo(f"  | {line}")
            for le in lease:
                click.echo(f"Holds:       {le.tier.upper()} until {_short_time(le.expires_at)}")
            if checks:
                click.echo("Checks:")
                for r in checks:
                    click.echo(f"  {r['status']:<8} {r['title']}: {r['summary']}")
            statement = dep.details.get("verification")
            if isinstance(statement, dict) and isinstance(statement.get("signed"), dict):
                from ashat.trust.statements import digest

                signers = ", ".join(str(s.get("keyid")) for s in statement.get("signatures", []))
                click.echo(
                    f"Verified:    signed by PUBLIC (key {signers}), statement "
                    f"{digest(statement)[:16]}, at {statement['signed'].get('at')}"
                )
            if dep.details.get("approvers"):
                click.echo(f"Approvers:   {', '.join(map(str, dep.details['approvers']))}")
            from ashat.cli.approve_cmd import describe_fleet, describe_rollout

            if dep.details.get("regions"):
                from ashat.workflow.approve import region_summary

                click.echo(f"Regions:     {region_summary(dep.details, dep.state.value)}")
            for r in view.rollouts or ([rollout] if rollout else []):
                t = r.get("totals") or {}
                at = f" [{r['region']}]" if r.get("region") else ""
                if r.get("kind") == "rollback":
                    click.echo(
                        f"Rollback:{at}    {r.get('rollout_id')} to {r.get('update_id')} "
                        f"({r.get('state')}): {t.get('installed', 0)} of "
                        f"{t.get('targeted', 0)} restored"
                    )
                    continue
                paused = r.get("paused") if r.get("state") == "running" else None
                click.echo(
                    f"Rollout:{at}     {r.get('rollout_id')} "
                    f"({'paused' if paused else r.get('state')}): "
                    f"{t.get('installed', 0)} installed, {t.get('failed', 0)} failed "
                    f"of {r.get('fleet_size', 0)}"
                )
                for line in describe_rollout({**r, "rollback": None} if view.rollouts else r):
                    click.echo(line)
                if isinstance(paused, dict):
                    click.echo(
                        f"  {WARN} paused at {_short_time(str(paused.get('paused_at')))} "
                        f"({paused.get('reason') or 'by an operator'}): no wave starts until "
                        f"deploy resume {dep.id}"
                    )
            if rollout_note:
                click.echo(f"Rollout:     {rollout_note}")
            if view.fleet:
                for line in describe_fleet(view.fleet):
                    click.echo(line)
            click.echo("Recent events:")
            for ev in events:
                _print_event(ev)

        emit(view.to_json(), human)
        return
    ov = ops.overview()

    def human_all() -> None:
        click.echo("In flight:")
        _print_table(ov.active)
        if ov.leases:
            click.echo("Tier leases:")
            for le in ov.leases:
                click.echo(
                    f"  {le.tier.upper():<7} {le.deployment_id} ({le.owner}) "
                    f"until {_short_time(le.expires_at)}"
                )
        click.echo("Recently ended:")
        _print_table(ov.recent)

    emit(
        {
            "active": [d.to_json() for d in ov.active],
            "recent": [d.to_json() for d in ov.recent],
            "leases": [le.to_json() for le in ov.leases],
        },
        human_all,
    )


@cli.command()
@click.option("--limit", default=20, show_default=True, type=int, help="How many to show.")
@click.option(
    "--state",
    "state",
    default=None,
    help="Only deployments in this state.",
    shell_complete=lambda ctx, param, incomplete: [
        s.value for s in State if s.value.startswith(incomplete)
    ],
)
@json_option
def history(limit: int, state: str | None) -> None:
    """Deployments, newest first."""
    deps = operations().history(limit, state)

    def human() -> None:
        click.echo("ASHAT Deployment History")
        _print_table(deps)

    emit({"deployments": [d.to_json() for d in deps]}, human)


@cli.command()
@click.argument("update_id", shell_complete=complete_update_id)
@json_option
def log(update_id: str) -> None:
    """Every audit event of one deployment, oldest first."""
    events = operations().log(update_id)

    def human() -> None:
        click.echo(f"Audit events of {update_id}:")
        for ev in events:
            _print_event(ev)

    emit({"update_id": update_id, "events": [e.to_json() for e in events]}, human)


@cli.group(cls=AshatGroup)
def audit() -> None:
    """The tamper-evident history."""


@audit.command("verify")
@click.option(
    "--at",
    "anchor",
    default=None,
    metavar="SEQ:HASH",
    help="Check too that event SEQ has HASH, as an earlier verify printed it (kept elsewhere).",
)
@json_option
def audit_verify(anchor: str | None) -> None:
    """Walk the whole hash chain; exit 1 naming the first broken event."""
    report = operations().audit_verify(anchor)

    def human() -> None:
        if report.ok:
            click.echo(f"{OK} Audit chain intact: {report.events} events verified")
            if anchor is not None:
                click.echo(f"  {OK} event #{anchor.split(':')[0].strip()} is the one recorded")
            if report.head is not None:
                seq, digest = report.head
                click.echo(
                    f"  head: {seq}:{digest}\n"
                    "  (keep it elsewhere; `deploy audit verify --at` it later finds a chain "
                    "rewritten up to it)"
                )
        else:
            click.echo(f"{BAD} Audit chain BROKEN at event #{report.broken_seq}: {report.reason}")

    emit(report.to_json(), human)
    if not report.ok:
        raise Verdict(OperationFailed, "the audit chain is broken")


# -- cancel ---------------------------------------------------------------------------------


@cli.command()
@click.argument("update_id", shell_complete=complete_update_id)
@click.option("--reason", default=None, help="Why (recorded in the audit trail).")
@json_option
def cancel(update_id: str, reason: str | None) -> None:
    """Cancel a deployment that has not been approved."""
    outcome = operations().cancel(update_id, reason)
    dep = outcome.deployment

    def human() -> None:
        click.echo(f"{OK} Deployment {dep.id} cancelled ({dep.reason})")
        mark = WARN if "did not go back" in outcome.public else OK
        click.echo(f"  {mark} {outcome.public}")

    emit(outcome.to_json(), human)


# -- help -----------------------------------------------------------------------------------

VERBS = [
    ("init [--yes] [--run CMD] [--force]", "start a project here: ashat.toml, signing key"),
    (
        "configure public|omega <url> <name>",
        "set the staging (PUBLIC) or production (OMEGA) server",
    ),
    ("push <id> '<description>' [--source DIR | --git REF]", "build, sign, send to PUBLIC"),
    ("verify <id> [--only NAME]", "run the six checks against PUBLIC"),
    (
        "approve <id> [--as USER] [--no-wait]",
        "approve; with enough, release to OMEGA and the fleet",
    ),
    (
        "rollback <id> [--reason TEXT]",
        "put back what ran before <id>: PUBLIC, and once released OMEGA and the fleet too "
        "(a running rollout is aborted first)",
    ),
    ("servers [--check]", "list the configured servers (and whether they answer)"),
    ("status [id]", "what is in flight, or one deployment's state and last events"),
    ("history [--limit N] [--state S]", "deployments, newest first"),
    ("log <id>", "every audit event of one deployment"),
    ("audit verify", "check the tamper-evident history end to end"),
    ("cancel <id> [--reason TEXT]", "stop a deployment before approval"),
    ("pause|resume <id> [--reason TEXT]", "hold a running rollout between waves, and go on"),
    ("abort <id> [--reason TEXT]", "end a running rollout (then deploy rollback sends it back)"),
    ("retry <id>", "offer the release again to the mainframes where it failed"),
    ("helper start|stop|status", "a warm process that makes push start fast"),
    ("help", "this list"),
]


from ashat.cli.approve_cmd import approve  # noqa: E402
from ashat.cli.helper_cmd import helper  # noqa: E402
from ashat.cli.init_cmd import init  # noqa: E402
from ashat.cli.release import push, rollback  # noqa: E402  (verbs with their own module)
from ashat.cli.rollout_cmd import abort, pause, resume, retry  # noqa: E402
from ashat.cli.verify_cmd import verify  # noqa: E402

cli.add_command(init)
cli.add_command(push)
cli.add_command(verify)
cli.add_command(approve)
cli.add_command(rollback)
cli.add_command(helper)
for _verb in (pause, resume, abort, retry):
    cli.add_command(_verb)


@cli.command("help")
@json_option
def help_(**_: Any) -> None:
    """The verbs, one line each."""
    verbs = [(v, d) for v, d in VERBS if set(v.split()[0].split("|")) <= set(cli.commands)]

    def human() -> None:
        click.echo("ASHAT Deployment Workflow: ALPHA -> PUBLIC -> approval -> OMEGA -> mainframes")
        width = max(len(v) for v, _ in verbs)
        for v, d in verbs:
            click.echo(f"  deploy {v:<{width}}  {d}")
        click.echo(
            "Every verb takes --json. 'deploy VERB --help' for options; docs/guide.md for more."
        )

    emit({"verbs": [{"usage": f"deploy {v}", "summary": d} for v, d in verbs]}, human)


def main() -> None:
    from ashat.cli import lean_start

    lean_start()
    run_main(cli, "deploy")


if __name__ == "__main__":
    main()
