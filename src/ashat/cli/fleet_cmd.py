"""``ashat fleet``: the Licensed Mainframes as OMEGA sees them — list them by label, label
them, pin them to a release. The work is in :mod:`ashat.ops.fleet`; these verbs print it."""

from __future__ import annotations

from typing import Any

import click

from ashat.cli.context import Project
from ashat.cli.output import OK, AshatGroup, emit, json_option

_REGION = click.option("--region", help="The OMEGA of this region (deploy configure --region).")


@click.group("fleet", cls=AshatGroup)
def fleet_group() -> None:
    """The Licensed Mainframes on OMEGA: labels, pins, and what each should run."""


@fleet_group.command("list")
@click.option(
    "--where",
    help="A label selector: ring=pilot, site in (berlin,paris), customer!=acme, gpu, !gpu "
    "(comma-separated, all must hold).",
)
@click.option("--labels", "show_labels", is_flag=True, help="Show each mainframe's labels.")
@_REGION
@json_option
def list_cmd(where: str | None, show_labels: bool, region: str | None) -> None:
    """Mainframes, what each runs and should run (and which rule says so)."""
    from ashat.ops.fleet import hold_text, list_mainframes

    found = list_mainframes(Project.find(), where, region)
    rows = found.mainframes

    def human() -> None:
        if not rows:
            click.echo(f"No mainframe on {found.omega}" + (f" matches {where}." if where else "."))
            return
        click.echo(f"{'MAINFRAME':<16} {'RUNS':<16} {'SHOULD RUN':<16} WHY")
        for m in rows:
            runs, desired = m.get("current") or "-", m.get("desired") or "-"
            mark = "" if runs == desired else "  ←"
            click.echo(
                f"{m['mainframe_id']:<16} {runs:<16} {desired:<16} {m.get('rule', '')}{mark}"
            )
            if m.get("hold"):  # told at its last poll: it installs nothing until it may
                click.echo(f"{'':<16} held: {hold_text(m['hold'])}")
            if show_labels:
                labels = " ".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items())
                click.echo(f"{'':<16} {labels}")
        apart = sum(1 for m in rows if (m.get("current") or "-") != (m.get("desired") or "-"))
        click.echo(f"({len(rows)} mainframe(s) on {found.omega}; {apart} not yet as desired)")

    emit({"mainframes": rows, "omega": found.omega, "where": where}, human)


@fleet_group.command("label")
@click.argument("mainframe_id")
@click.argument("labels", nargs=-1)
@_REGION
@json_option
def label_cmd(mainframe_id: str, labels: tuple[str, ...], region: str | None) -> None:
    """Set (KEY=VALUE) and remove (KEY-) labels of MAINFRAME_ID on OMEGA."""
    from ashat.ops.fleet import label_mainframe

    answer = label_mainframe(Project.find(), mainframe_id, labels, region)
    emit(answer, lambda: _say_labels(answer))


def _say_labels(answer: dict[str, Any]) -> None:
    now = " ".join(f"{k}={v}" for k, v in sorted(answer["labels"].items())) or "none"
    click.echo(f"{OK} {answer['mainframe_id']} on {answer['omega']}: labels {now}")
    if not answer.get("registered"):
        click.echo("   (it has not polled OMEGA yet: the labels wait for it)")


@fleet_group.command("pin")
@click.argument("mainframe_id")
@click.argument("update_id")
@_REGION
@json_option
def pin_cmd(mainframe_id: str, update_id: str, region: str | None) -> None:
    """Hold MAINFRAME_ID on UPDATE_ID (approved): no rollout of another release takes it."""
    from ashat.ops.fleet import pin_mainframe

    answer = pin_mainframe(Project.find(), mainframe_id, update_id, region)

    def human() -> None:
        click.echo(f"{OK} {mainframe_id} pinned to {update_id} on {answer['omega']}")
        for rollout_id in answer.get("left_rollouts") or []:
            click.echo(f"   taken out of running rollout {rollout_id}")

    emit(answer, human)


@fleet_group.command("unpin")
@click.argument("mainframe_id")
@_REGION
@json_option
def unpin_cmd(mainframe_id: str, region: str | None) -> None:
    """Let MAINFRAME_ID follow its channel's rollouts again."""
    from ashat.ops.fleet import pin_mainframe

    answer = pin_mainframe(Project.find(), mainframe_id, None, region)
    emit(answer, lambda: click.echo(f"{OK} {mainframe_id} unpinned on {answer['omega']}"))
