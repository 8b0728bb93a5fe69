"""``deploy pause|resume|abort|retry``: the operator's hand on a running rollout. The work
is in :mod:`ashat.ops.rollout_control` (or the control plane's same route, with --via)."""

from __future__ import annotations

import click

from ashat.cli.context import complete_update_id, operations
from ashat.cli.output import OK, emit, json_option

WHAT = {
    "pause": "no wave starts and nothing new goes out until deploy resume",
    "resume": "the current wave's timeout starts again",
    "abort": "ended; who installed keeps it: deploy rollback sends them back",
    "retry": "each mainframe that failed gets the release again at its next poll",
}


def _run(action: str, update_id: str, reason: str | None) -> None:
    from ashat.cli.approve_cmd import describe_rollout
    from ashat.ops.rollout_control import ACTIONS

    outcome = operations().control_rollout(update_id, action, reason)
    r = outcome.rollout

    def human() -> None:
        why = f" ({reason})" if reason else ""
        click.echo(f"{OK} Rollout {r.get('rollout_id')} of {update_id} {ACTIONS[action]}{why}")
        click.echo(f"   {WHAT[action]}")
        for line in describe_rollout(r):
            click.echo(line)
        click.echo(f"Deployment:  {outcome.deployment.state.value}")

    emit(outcome.to_json(), human)


def _verb(action: str, doc: str) -> click.Command:
    @click.command(action, help=doc)
    @click.argument("update_id", shell_complete=complete_update_id)
    @click.option("--reason", help="Why (recorded in the audit trail and on OMEGA).")
    @json_option
    def verb(update_id: str, reason: str | None) -> None:
        _run(action, update_id, reason)

    return verb


pause = _verb("pause", "Pause a deployment's running rollout (no new wave, no new directive).")
resume = _verb("resume", "Resume a paused rollout where it stopped.")
abort = _verb("abort", "End a running rollout; who installed keeps it until deploy rollback.")
retry = _verb("retry", "Offer the release again to the mainframes where it failed.")
