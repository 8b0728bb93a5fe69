"""``deploy push`` and ``deploy rollback``: the verbs that move bytes to PUBLIC.

Heavy modules (httpx, cryptography) are imported inside the verbs, so that ``deploy status``
stays fast.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ashat.cli.context import Project
from ashat.cli.output import BAD, OK, OUT, emit, json_option, style
from ashat.errors import InvalidInput

if TYPE_CHECKING:
    from ashat.transport.client import AgentClient
    from ashat.workflow.models import Server
    from ashat.workflow.push import Bundle


def require_server(project: Project, tier: str) -> Server:
    server = project.store.server(tier)
    if server is None:
        raise InvalidInput(
            f"{tier.upper()} is not configured: run 'deploy configure {tier} <url> <name>' first"
        )
    return server


def manifest_path(project: Project, update_id: str) -> Path:
    return project.state_dir / "manifests" / f"{update_id}.json"


def client_for(server: Server, timeout_s: float = 30.0) -> AgentClient:
    from ashat.transport.client import AgentClient

    return AgentClient.for_server(server, timeout_s=timeout_s)


def _build_bundle(
    project: Project, update_id: str, description: str, source: str | None, git_ref: str | None
) -> tuple[Bundle, Any]:
    """Build and hash the tree first: a bad tree is refused before anything is recorded."""
    from ashat.bundle import build_from_dir, build_from_git, load_private_key, sign_manifest
    from ashat.config import Config
    from ashat.ids import validate_update_id
    from ashat.project import write_private
    from ashat.transport.client import BlobRef
    from ashat.workflow.ports import iso
    from ashat.workflow.push import Bundle

    validate_update_id(update_id)
    description = description.strip()
    if not description or len(description) > 1000:
        raise InvalidInput("the description must be 1-1000 characters")
    if source and git_ref:
        raise InvalidInput("give --source or --git, not both")
    config = Config.load(project.root)
    key = load_private_key(config.signing_key_path())
    created_at = iso(project.workflow().clock.now())
    meta: dict[str, Any] = {
        "update_id": update_id,
        "sequence": 1,  # replaced by the sequence the store allocates
        "description": description,
        "app": config.app.raw,
        "created_at": created_at,
    }
    if git_ref:
        built = build_from_git(project.root, git_ref, **meta)
    else:
        root = Path(source).resolve() if source else project.root
        if not root.is_dir():
            raise InvalidInput(f"--source {source}: not a directory")
        cache = project.state_dir / "hashcache.json"
        built = build_from_dir(root, cache_path=cache, **meta)
    manifest = built.manifest
    sizes = {f.sha256: f.size for f in manifest.files if f.kind == "file"}

    def sign(sequence: int) -> Any:
        signed = sign_manifest(replace(manifest, sequence=sequence), key)
        # Keep exactly what is signed: approval promotes these bytes, not the tree as it is
        # by then.
        write_private(manifest_path(project, update_id), signed.to_bytes(), mode=0o644)
        return signed

    def blob(sha: str) -> BlobRef:
        return BlobRef(sha, sizes[sha], built.blobs[sha])

    return Bundle(manifest, sizes, sign, blob, dict(manifest.source)), built


@click.command()
@click.argument("update_id")
@click.argument("description")
@click.option(
    "--source", type=click.Path(file_okay=False), help="Directory to push (default: the project)."
)
@click.option("--git", "git_ref", metavar="REF", help="Push exactly the tree committed at REF.")
@json_option
def push(update_id: str, description: str, source: str | None, git_ref: str | None) -> None:
    """Build, sign and send a release to PUBLIC, then activate it there."""
    from ashat.workflow.push import push as run_push

    project = Project.find()
    server = require_server(project, "public")
    bundle, built = _build_bundle(project, update_id, description, source, git_ref)
    wf = project.workflow()

    if not OUT.json:
        click.echo(style("ASHAT Deployment Workflow Initiated", bold=True))
        click.echo(f"Update ID: {update_id}")
        click.echo(f"Target: {server.name} ({server.url})")
        click.echo("Deployment Plan: 4 steps (record, upload, stage, activate)")

    def step(name: str, detail: str) -> None:
        if not OUT.json:
            click.echo(f"  {OK} {name:<9} {detail}")

    try:
        with client_for(server) as agent:
            result = run_push(
                wf, agent, update_id, description, bundle, target=server.name, step=step
            )
    except Exception:
        if not OUT.json:
            click.echo(f"  {BAD} push failed; PUBLIC keeps its previous release", err=True)
        raise
    finally:
        built.cleanup()

    def human() -> None:
        r = result
        click.echo(
            f"Sent {_size(r.bytes_sent)} in {r.blobs_sent} blobs; {r.blobs_skipped} blobs "
            f"({_size(r.bytes_total - r.bytes_sent)}) were already on PUBLIC"
        )
        click.echo(
            f"{OK} {style('Pushed', bold=True)} {update_id} to {r.target} in {r.duration_s:.2f}s"
            f" — next: deploy verify {update_id}"
        )

    emit(result.to_json(), human)


@click.command()
@click.argument("update_id")
@click.option("--reason", help="Why (recorded in the audit trail).")
@json_option
def rollback(update_id: str, reason: str | None) -> None:
    """Put PUBLIC (or, once released, OMEGA and the fleet) back on the release before it."""
    from ashat.ids import validate_update_id
    from ashat.workflow.approve import FLEET_ROLLBACK_FROM
    from ashat.workflow.push import rollback_public

    validate_update_id(update_id)
    project = Project.find()
    wf = project.workflow()
    dep = wf.store.require(update_id)
    if dep.state in FLEET_ROLLBACK_FROM and dep.details.get("rollout_id"):
        _rollback_fleet(project, update_id, reason)
        return
    server = require_server(project, "public")
    with client_for(server) as agent:
        result = rollback_public(wf, agent, update_id, reason)

    def human() -> None:
        click.echo(style("ASHAT Rollback", bold=True))
        click.echo(f"Update ID: {update_id}")
        click.echo(f"  {OK} {result.note}")
        click.echo(f"{OK} {update_id} is rolled back")

    emit(result.to_json(), human)


def _rollback_fleet(project: Project, update_id: str, reason: str | None) -> None:
    import time

    from ashat.errors import OperationFailed
    from ashat.workflow.approve import finish_fleet_rollback, start_fleet_rollback

    wf = project.workflow()
    dep = wf.store.require(update_id)
    server = require_server(project, "omega")
    if not OUT.json:
        click.echo(style("ASHAT Rollback of OMEGA and the Licensed Mainframes", bold=True))
    with client_for(server) as omega:
        rollout_id = dep.details.get("rollback_rollout_id")
        if not rollout_id:
            rollout_id = start_fleet_rollback(wf, update_id, omega, reason)["rollout_id"]
        if not OUT.json:
            click.echo(f"  {OK} rollback rollout {rollout_id} started on {server.name}")
        deadline = time.monotonic() + 900
        dep, status = finish_fleet_rollback(wf, update_id, omega, str(rollout_id), reason)
        while status.get("state") == "running":
            if time.monotonic() > deadline:
                raise OperationFailed(f"rollback {rollout_id} still running; see deploy status")
            time.sleep(0.3)
            dep, status = finish_fleet_rollback(wf, update_id, omega, str(rollout_id), reason)
    totals = status.get("totals") or {}

    def human() -> None:
        click.echo(
            f"  {OK} {totals.get('installed', 0)} of {totals.get('targeted', 0)} mainframes "
            f"back on {status.get('update_id')}"
        )
        click.echo(f"{OK} {update_id} is rolled back")

    emit(
        {
            "update_id": update_id,
            "state": dep.state.value,
            "restored": status.get("update_id"),
            "rollout": status,
        },
        human,
    )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
