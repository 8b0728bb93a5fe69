"""``deploy push`` and ``deploy rollback``: the verbs that move bytes to PUBLIC.

The work is :mod:`ashat.ops.push` and :mod:`ashat.ops.rollback`; this module prints.
Heavy modules (httpx, cryptography) are imported inside the verbs, so that ``deploy status``
stays fast.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ashat.cli.context import Project, client_for, complete_update_id, operations
from ashat.cli.output import BAD, OK, WARN, emit, json_mode, json_option, style

if TYPE_CHECKING:
    from ashat.workflow.models import Server

__all__ = ["client_for", "manifest_path", "push", "require_server", "rollback"]

UPLOAD_BAR_MIN = 16 * 1024 * 1024  # bytes: a smaller upload ends before a bar would tell much


def require_server(project: Project, tier: str) -> Server:
    return project.require_server(tier)


def manifest_path(project: Project, update_id: str) -> Path:
    return project.manifest_path(update_id)


@click.command()
@click.argument("update_id")
@click.argument("description")
@click.option(
    "--source", type=click.Path(file_okay=False), help="Directory to push (default: the project)."
)
@click.option("--git", "git_ref", metavar="REF", help="Push exactly the tree committed at REF.")
@click.option(
    "--task",
    "tasks",
    metavar="REF",
    multiple=True,
    help="A task this release carries out: a Jira key, a GitHub or GitLab issue (URL or "
    "OWNER/REPO#N), or a free reference; repeatable.",
)
@json_option
def push(
    update_id: str,
    description: str,
    source: str | None,
    git_ref: str | None,
    tasks: tuple[str, ...],
) -> None:
    """Build, sign and send a release to PUBLIC, then activate it there."""

    started = False

    def on_start(server: Server) -> None:
        nonlocal started
        started = True
        if not json_mode():
            click.echo(style("ASHAT Deployment Workflow Initiated", bold=True))
            click.echo(f"Update ID: {update_id}")
            click.echo(f"Target: {server.name} ({server.url})")
            click.echo("Deployment Plan: 4 steps (record, upload, stage, activate)")

    bar = _UploadBar() if not json_mode() and sys.stdout.isatty() else None

    def step(name: str, detail: str) -> None:
        if bar is not None:
            bar.stop()
        if not json_mode():
            click.echo(f"  {OK} {name:<9} {detail}")

    try:
        data = operations().push(
            update_id, description, source=source, git_ref=git_ref, on_start=on_start,
            step=step, tasks=tasks, on_upload=bar,
        )  # fmt: skip
    except Exception:
        if started and not json_mode():
            click.echo(f"  {BAD} push failed; PUBLIC keeps its previous release", err=True)
        raise
    finally:
        if bar is not None:
            bar.close()

    def human() -> None:
        sent = data["bytes_sent"]
        click.echo(
            f"Sent {_size(sent)} in {data['blobs_sent']} blobs; {data['blobs_skipped']} blobs "
            f"({_size(data['bytes_total'] - sent)}) were already on PUBLIC"
        )
        click.echo(
            f"{OK} {style('Pushed', bold=True)} {update_id} to {data['target']} in "
            f"{data['duration_s']:.2f}s — next: deploy verify {update_id}"
        )

    emit(data, human)


@click.command()
@click.argument("update_id", shell_complete=complete_update_id)
@click.option("--reason", help="Why (recorded in the audit trail).")
@json_option
def rollback(update_id: str, reason: str | None) -> None:
    """Put PUBLIC (or, once released, OMEGA and the fleet) back on the release before it."""
    from ashat.ops.rollback import RollbackHooks

    def fleet(server: Server) -> None:
        if not json_mode():
            click.echo(style("ASHAT Rollback of OMEGA and the Licensed Mainframes", bold=True))

    def started(rollout_id: str, server: Server) -> None:
        if not json_mode():
            click.echo(f"  {OK} rollback rollout {rollout_id} started on {server.name}")

    hooks = RollbackHooks(fleet=fleet, started=started)
    outcome = operations().rollback(update_id, reason, hooks)

    def human() -> None:
        if outcome.fleet:
            totals = outcome.status.get("totals") or {}
            click.echo(
                f"  {OK} {totals.get('installed', 0)} of {totals.get('targeted', 0)} mainframes "
                f"back on {outcome.status.get('update_id')}"
            )
            if outcome.note:
                mark = WARN if "did not go back" in outcome.note else OK
                click.echo(f"  {mark} {outcome.note}")
        else:
            click.echo(style("ASHAT Rollback", bold=True))
            click.echo(f"Update ID: {update_id}")
            click.echo(f"  {OK} {outcome.note}")
        click.echo(f"{OK} {update_id} is rolled back")

    emit(outcome.data, human)


class _UploadBar:
    """A transient bar of the bytes a push has sent, their rate and the time left, while it
    uploads :data:`UPLOAD_BAR_MIN` or more (made at a terminal only; called from the
    upload's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._closed = False

    def __call__(self, sent: int, total: int) -> None:
        with self._lock:
            if self._bar is None:
                if total < UPLOAD_BAR_MIN or self._closed:
                    return
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                self._bar = Progress(
                    TextColumn("  uploading"), BarColumn(), DownloadColumn(binary_units=True),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                )  # fmt: skip
                self._task = self._bar.add_task("upload", total=total)
                self._bar.start()
            self._bar.update(self._task, completed=sent, total=total)

    def stop(self) -> None:
        """Take the bar away (a step line follows); the next upload may draw another."""
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None

    def close(self) -> None:
        """Take the bar away for good: an upload thread still running after Ctrl-C must
        not draw one again (it would hide the cursor past the command's end)."""
        with self._lock:
            self._closed = True
        self.stop()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
