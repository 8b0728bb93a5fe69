"""``deploy approve``: record an approval; when enough, release to OMEGA and follow the rollout."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ashat.cli.context import Project
from ashat.cli.output import BAD, OK, OUT, WARN, emit, json_option, style
from ashat.cli.release import client_for, manifest_path, require_server
from ashat.errors import OperationFailed

if TYPE_CHECKING:
    from ashat.transport.client import AgentClient
    from ashat.workflow.models import Deployment
    from ashat.workflow.service import Workflow

WAITING_STATES = ("distributing", "distribution_failed")


def make_relay(public: AgentClient, omega: AgentClient) -> Any:
    """Blobs go PUBLIC -> here -> OMEGA: exactly what was verified, only what OMEGA lacks."""
    from ashat.transport.client import BlobRef

    def relay(digests: list[str]) -> int:
        if not digests:
            return 0
        with tempfile.TemporaryDirectory(prefix="ashat-relay-") as tmp:
            refs = []
            for sha in digests:
                dest = Path(tmp) / sha
                refs.append(BlobRef(sha, public.download(sha, dest), dest))
            return omega.upload(refs)

    return relay


def load_signed_manifest(project: Project, update_id: str) -> tuple[bytes, list[str]]:
    from ashat.bundle import parse_manifest

    path = manifest_path(project, update_id)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OperationFailed(
            f"the signed manifest of {update_id} is missing ({path}): it is written by "
            "'deploy push' on this machine"
        ) from e
    m = parse_manifest(data)
    return data, sorted({f.sha256 for f in m.files if f.kind == "file"})


def describe_rollout(status: dict[str, Any]) -> list[str]:
    lines = []
    for w in status.get("waves") or []:
        lines.append(
            f"  wave {w['index'] + 1} ({w['percent']}%): {w['targeted']} targeted, "
            f"{w['installed']} installed, {w['failed']} failed, {w['pending']} pending"
            f" [{w.get('state', '?')}]"
        )
    back = status.get("rollback")
    if back:
        t = back.get("totals") or {}
        lines.append(
            f"  rollback to {back.get('update_id')}: {t.get('installed', 0)} of "
            f"{t.get('targeted', 0)} restored [{back.get('state')}]"
        )
    return lines


def wait_for_rollout(
    wf: Workflow, update_id: str, omega: AgentClient, limit_s: float
) -> tuple[Deployment, dict[str, Any] | None]:
    """Reconcile until the deployment leaves the distribution states (progress bar on a tty)."""
    from ashat.workflow.approve import reconcile

    deadline = time.monotonic() + limit_s
    dep, status = reconcile(wf, update_id, omega)
    if OUT.json or not _tty():
        while dep.state.value in WAITING_STATES and time.monotonic() < deadline:
            time.sleep(0.3)
            dep, status = reconcile(wf, update_id, omega)
        return dep, status
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True
    ) as bar:
        task = bar.add_task("Distributing to Licensed Mainframes", total=None)
        while dep.state.value in WAITING_STATES and time.monotonic() < deadline:
            totals = (status or {}).get("totals") or {}
            done = totals.get("installed", 0) + totals.get("failed", 0)
            bar.update(task, total=(status or {}).get("fleet_size") or None, completed=done)
            time.sleep(0.3)
            dep, status = reconcile(wf, update_id, omega)
    return dep, status


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()


@click.command()
@click.argument("update_id")
@click.option("--as", "as_user", metavar="USER", help="Approve as USER (else ASHAT_USER/OS user).")
@click.option("--comment", help="Recorded with the approval.")
@click.option("--no-wait", is_flag=True, help="Return once the rollout has started.")
@json_option
def approve(update_id: str, as_user: str | None, comment: str | None, no_wait: bool) -> None:
    """Approve a verified deployment; with enough approvals, release it to OMEGA and the fleet."""
    from ashat.config import Config
    from ashat.ids import validate_update_id
    from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy, release
    from ashat.workflow.approve import approve as record
    from ashat.workflow.states import State

    validate_update_id(update_id)
    project = Project.find()
    config = Config.load(project.root)
    policy = ApprovalPolicy.parse(config.table("approval"))
    distribution = DistributionPolicy.parse(config.table("distribution"))
    wf = project.workflow(as_user)
    dep = wf.store.require(update_id)
    if dep.state in (State.VERIFIED, State.APPROVED, State.RELEASING):
        # Check everything the release needs before an approval is recorded.
        omega_server = require_server(project, "omega")
        public_server = require_server(project, "public")
        manifest_bytes, digests = load_signed_manifest(project, update_id)
    out: dict[str, Any] = {"update_id": update_id}
    header_done = False

    def header(text: str) -> None:
        nonlocal header_done
        if not OUT.json and not header_done:
            click.echo(style(text, bold=True))
            header_done = True

    if dep.state is State.VERIFIED:
        result = record(wf, update_id, policy, comment)
        out.update(result.to_json())
        dep = result.deployment
        if not OUT.json:
            mark = OK if result.counted else WARN
            note = "" if result.counted else " (already recorded: counted once)"
            click.echo(
                f"{mark} Approval by {wf.actor} recorded{note}: "
                f"{len(result.approvals)} of {policy.required}"
            )
        if dep.state is not State.APPROVED:
            emit(
                out,
                lambda: click.echo(
                    f"Waiting for {policy.required - len(result.approvals)} more approval(s)."
                ),
            )
            return
    elif dep.state not in (State.APPROVED, State.RELEASING, State.DISTRIBUTING):
        from ashat.workflow.states import check_transition

        check_transition(update_id, dep.state, State.APPROVED)  # raises, naming what is allowed

    if dep.state in (State.APPROVED, State.RELEASING):
        header("ASHAT Deployment to OMEGA Approved!")
        with client_for(public_server) as public, client_for(omega_server) as omega:
            if dep.state is State.RELEASING:
                wf.note(update_id, "release.resumed", {})
            dep, rollout, relayed = release(
                wf, update_id, omega, manifest_bytes, digests, make_relay(public, omega),
                distribution, resume=dep.state is State.RELEASING,
            )  # fmt: skip
        out.update({"rollout": rollout, "bytes_relayed": relayed})
        if not OUT.json:
            click.echo(
                f"  {OK} released to {omega_server.name} ({relayed} bytes relayed from PUBLIC)"
            )
            click.echo(
                f"Distributing to Licensed Mainframes: rollout {rollout.get('rollout_id')}, "
                f"{rollout.get('fleet_size', '?')} mainframes, waves {list(distribution.waves)}"
            )
    else:
        omega_server = require_server(project, "omega")
        header(f"ASHAT Distribution of {update_id}")

    status = None
    if not no_wait:
        limit = distribution.wave_timeout_s * (len(distribution.waves) + 2) + 60
        with client_for(omega_server) as omega:
            dep, status = wait_for_rollout(wf, update_id, omega, limit)
    out.update({"state": dep.state.value, "rollout_status": status})

    def human() -> None:
        for line in describe_rollout(status or {}):
            click.echo(line)
        if dep.state is State.COMPLETED:
            click.echo(f"{OK} {style('Deployment completed successfully!', bold=True)}")
        elif dep.state is State.DISTRIBUTING:
            click.echo(f"Rollout running; follow it with: deploy status {update_id}")
        else:
            click.echo(f"{BAD} {style(f'Distribution {dep.state.value}', bold=True)}: {dep.reason}")

    emit(out, human)
    if dep.state in (State.DISTRIBUTION_FAILED, State.ROLLED_BACK):
        raise SystemExit(1)
    if dep.state is State.DISTRIBUTING and not no_wait:
        raise OperationFailed(f"gave up waiting; the rollout goes on: deploy status {update_id}")
