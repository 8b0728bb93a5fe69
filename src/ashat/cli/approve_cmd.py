"""``deploy approve``: record an approval; when enough, release to OMEGA and follow the rollout.

The work is :func:`ashat.ops.approve.run_approve`; this module prints (and draws a progress
bar on a terminal while the rollout runs).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ashat.cli.context import complete_update_id, operations
from ashat.cli.output import BAD, OK, WARN, Verdict, emit, json_mode, json_option, style
from ashat.errors import OperationFailed

if TYPE_CHECKING:
    from ashat.workflow.approve import ApprovalPolicy, ApproveResult, DistributionPolicy
    from ashat.workflow.models import Deployment, Server


def describe_fleet(fleet: dict[str, Any]) -> list[str]:
    """``deploy status``'s fleet lines: the releases side by side, then who is not yet
    as desired, and why."""
    parts = []
    for r in fleet.get("releases") or []:
        health = f"{r['healthy']} healthy"
        if r["unhealthy"]:
            health += f", {r['unhealthy']} unhealthy"
        if r["restarts"]:
            health += f", {r['restarts']} restarts"
        if r["update_id"] is None:  # no release yet: no app to fare well or badly
            parts.append(f"nothing on {r['mainframes']}")
        else:
            parts.append(f"{r['update_id']} on {r['mainframes']} ({health})")
    lines = [f"Fleet:       {'; '.join(parts) or 'no mainframe'}"]
    apart = fleet.get("apart") or []
    if apart:
        lines.append(f"  not yet as desired: {fleet.get('apart_count', len(apart))}")
    for m in apart:
        lines.append(
            f"  {m['mainframe_id']} runs {m.get('current') or 'nothing'}, should run "
            f"{m.get('desired') or 'nothing'}: {m.get('rule')}"
        )
    return lines


def describe_rollout(status: dict[str, Any]) -> list[str]:
    lines = []
    for w in status.get("waves") or []:
        lines.append(
            f"  wave {w['index'] + 1} ({w.get('ring') or str(w['percent']) + '%'}): "
            f"{w['targeted']} targeted, "
            f"{w['installed']} installed, {w['failed']} failed, {w['pending']} pending"
            f" [{w.get('state', '?')}]"
        )
    held = status.get("held") or {}
    if held:
        from ashat.ops.fleet import hold_text

        for mid, reason in sorted(held.items()):
            lines.append(f"  held: {mid} ({hold_text(reason)}): it installs when it may")
    bake = status.get("bake")
    if bake and bake.get("wave") is not None:
        last = bake.get("last") or {}
        names = ", ".join(q["name"] for q in bake.get("analysis") or []) or "no analysis"
        verdict = (
            "passed" if bake.get("passed_at")
            else f"FAILED: {last['failed']}" if last.get("failed")
            else f"not evaluated: {last['error']}" if last.get("error")
            else "baking"
        )  # fmt: skip
        lines.append(
            f"  bake after wave {bake['wave'] + 1} ({bake['bake_s']:g} s; {names}): {verdict}"
        )
    back = status.get("rollback")
    if back:
        t = back.get("totals") or {}
        lines.append(
            f"  rollback to {back.get('update_id')}: {t.get('installed', 0)} of "
            f"{t.get('targeted', 0)} restored [{back.get('state')}]"
        )
    return lines


class _ProgressBar:
    """A transient bar of mainframes done while the rollout runs (a terminal only)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def tick(self, dep: Deployment, status: dict[str, Any] | None) -> None:
        if json_mode() or not sys.stdout.isatty():
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True
            )
            self._bar.start()
            self._task = self._bar.add_task("Distributing to Licensed Mainframes", total=None)
        totals = (status or {}).get("totals") or {}
        done = totals.get("installed", 0) + totals.get("failed", 0)
        self._bar.update(self._task, total=(status or {}).get("fleet_size") or None, completed=done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@click.command()
@click.argument("update_id", shell_complete=complete_update_id)
@click.option(
    "--as",
    "as_user",
    metavar="USER",
    help="Approve as USER (else ASHAT_USER/OS user); with a root of trust, the name --key "
    "must belong to.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    envvar="ASHAT_APPROVER_KEY",
    help="Your own approver key, which signs the approval here: an ashat key (ashat keys "
    "generate --approver) or an OpenSSH key (a .pub whose private half is in ssh-agent "
    "works too). Env: ASHAT_APPROVER_KEY.",
)
@click.option("--comment", help="Recorded with the approval.")
@click.option(
    "--to",
    "to",
    metavar="SELECTOR",
    help="Release to the mainframes whose labels match only (ring=pilot, site in "
    "(berlin,paris), customer!=acme); replaces [distribution] to; '*': all.",
)
@click.option("--no-wait", is_flag=True, help="Return once the rollout has started.")
@json_option
def approve(
    update_id: str,
    as_user: str | None,
    key_path: str | None,
    comment: str | None,
    to: str | None,
    no_wait: bool,
) -> None:
    """Approve a verified deployment; with enough approvals, release it to OMEGA and the fleet."""
    from pathlib import Path

    from ashat.ops.approve import ApproveHooks
    from ashat.trust.signers import signer_for
    from ashat.workflow.states import State

    signer = signer_for(Path(key_path)) if key_path else None

    def header(text: str) -> None:
        if not json_mode():
            click.echo(style(text, bold=True))

    def recorded(result: ApproveResult, policy: ApprovalPolicy, actor: str) -> None:
        if not json_mode():
            mark = OK if result.counted else WARN
            note = "" if result.counted else " (already recorded: counted once)"
            click.echo(
                f"{mark} Approval by {actor} recorded{note}: {result.valid} of {policy.required}"
            )
            if result.valid < len(result.approvals):  # the root of trust counts fewer
                click.echo(
                    f"  {WARN} {len(result.approvals) - result.valid} recorded approval(s) "
                    f"do not count: {'; '.join(result.notes)[:500]}"
                )

    def released(
        server: Server, relayed: int, rollout: dict[str, Any], distribution: DistributionPolicy
    ) -> None:
        if not json_mode():
            from ashat.ids import tier_label

            where = f" ({tier_label(server.tier)})" if "@" in server.tier else ""
            click.echo(
                f"  {OK} released to {server.name}{where} ({relayed} bytes relayed from PUBLIC)"
            )
            click.echo(
                f"Distributing to Licensed Mainframes: rollout {rollout.get('rollout_id')}, "
                f"{rollout.get('fleet_size', '?')} mainframes, waves {list(distribution.waves)}"
            )

    def region_done(region: str, status: dict[str, Any]) -> None:
        bar.stop()
        if not json_mode():
            for line in describe_rollout(status):
                click.echo(line)
            click.echo(f"{OK} region {region} completed; the next region's rollout starts")

    bar = _ProgressBar()
    hooks = ApproveHooks(
        recorded=recorded, header=header, released=released, tick=bar.tick,
        region_done=region_done,
    )  # fmt: skip
    try:
        outcome = operations().approve(
            update_id, as_user=as_user, comment=comment, wait=not no_wait, hooks=hooks,
            signer=signer, to=to,
        )  # fmt: skip
    finally:
        bar.stop()
    if outcome.waiting_for:
        emit(
            outcome.data,
            lambda: click.echo(f"Waiting for {outcome.waiting_for} more approval(s)."),
        )
        return
    dep = outcome.deployment
    status = outcome.data.get("rollout_status")
    paused = (status or {}).get("paused")

    def human() -> None:
        for line in describe_rollout(status or {}):
            click.echo(line)
        if dep.state is State.COMPLETED:
            click.echo(f"{OK} {style('Deployment completed successfully!', bold=True)}")
        elif dep.state is State.DISTRIBUTING and paused:
            click.echo(f"{WARN} Rollout paused ({paused.get('reason') or 'by an operator'})")
            click.echo(f"   go on with: deploy resume {update_id}")
        elif dep.state is State.DISTRIBUTING:
            click.echo(f"Rollout running; follow it with: deploy status {update_id}")
        else:
            click.echo(f"{BAD} {style(f'Distribution {dep.state.value}', bold=True)}: {dep.reason}")

    emit(outcome.data, human)
    if dep.state in (State.DISTRIBUTION_FAILED, State.ROLLED_BACK):
        raise Verdict(OperationFailed, f"distribution {dep.state.value}")
    if dep.state is State.DISTRIBUTING and not no_wait and not paused:
        raise OperationFailed(f"gave up waiting; the rollout goes on: deploy status {update_id}")
