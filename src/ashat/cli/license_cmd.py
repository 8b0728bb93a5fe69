"""``ashat license``: issue, revoke and list the licenses of Licensed Mainframes.

Issued licenses are recorded (without the token) in ``.ashat/licenses.jsonl`` of the project
and in its audit trail; a revocation goes to OMEGA first (which refuses the license from its
next poll on) and is then recorded here.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from ashat.cli.context import Project
from ashat.cli.output import OK, AshatGroup, emit, json_option
from ashat.errors import InvalidInput


def _registry(project: Project) -> Path:
    return project.state_dir / "licenses.jsonl"


def _read_registry(project: Project) -> list[dict[str, Any]]:
    path = _registry(project)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise InvalidInput(f"{path}:{n} is not JSON; fix or remove that line") from e
    return out


def _append_registry(project: Project, record: dict[str, Any]) -> None:
    path = _registry(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


@click.group("license", cls=AshatGroup)
def license_group() -> None:
    """Licenses of Licensed Mainframes (Ed25519-signed tokens OMEGA checks on every poll)."""


@license_group.command("issue")
@click.option("--mainframe", "mainframe_id", required=True, help="The mainframe's id.")
@click.option("--customer", required=True, help="Who the license is for.")
@click.option("--expires", required=True, help="YYYY-MM-DD (end of day, UTC) or ISO time.")
@click.option("--channel", "channels", multiple=True, default=["stable"], show_default=True)
@click.option(
    "--key", "key_path", required=True, type=click.Path(dir_okay=False), help="License signing key."
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the token (0600).",
)
@json_option
def issue_cmd(
    mainframe_id: str,
    customer: str,
    expires: str,
    channels: tuple[str, ...],
    key_path: str,
    out_path: str,
) -> None:
    """Sign a license for one mainframe and write it to --out."""
    from ashat.bundle import load_private_key
    from ashat.fleet.license import issue, parse_expiry
    from ashat.project import write_private

    now = dt.datetime.now(dt.UTC)
    when = parse_expiry(expires, now)
    key = load_private_key(Path(key_path))
    out = Path(out_path)
    if out.exists():
        raise InvalidInput(f"{out} exists; refusing to overwrite a license file")
    token, lic = issue(key, mainframe_id, customer, when, channels, now=now)
    write_private(out, token.encode("ascii") + b"\n")
    project = Project.find()
    record = {**lic.to_json(), "file": str(out.resolve())}
    _append_registry(project, record)
    project.workflow().note(None, "license.issued", lic.to_json())

    def human() -> None:
        click.echo(f"{OK} license {lic.license_id} for {lic.mainframe_id} ({lic.customer})")
        click.echo(f"   channels {', '.join(lic.channels)}; expires {lic.expires_at}")
        click.echo(f"   written to {out} (mode 0600); give it to the mainframe with --license")

    emit(record, human)


@license_group.command("revoke")
@click.argument("license_id")
@click.option("--reason", help="Recorded in the audit trail.")
@json_option
def revoke_cmd(license_id: str, reason: str | None) -> None:
    """Tell OMEGA to refuse LICENSE_ID from now on, and record it."""
    from ashat.cli.release import client_for, require_server

    if not license_id or len(license_id) > 100 or not license_id.isprintable():
        raise InvalidInput(f"invalid license id {license_id!r}")
    project = Project.find()
    server = require_server(project, "omega")
    with client_for(server) as omega:
        omega.request("POST", "/v1/fleet/revocations", json_body={"license_id": license_id})
    project.workflow().note(None, "license.revoked", {"license_id": license_id, "reason": reason})
    emit(
        {"revoked": license_id, "omega": server.name},
        lambda: click.echo(f"{OK} license {license_id} revoked on {server.name}"),
    )


@license_group.command("list")
@json_option
def list_cmd() -> None:
    """Licenses issued from this project, with their status (OMEGA asked when configured)."""
    project = Project.find()
    records = _read_registry(project)
    revoked: set[str] = set()
    omega_note = "OMEGA not configured: revocations not checked"
    server = project.store.server("omega")
    if server is not None:
        from ashat.cli.release import client_for
        from ashat.transport.errors import TransportError

        try:
            with client_for(server, timeout_s=5) as omega:
                answer = omega.request("GET", "/v1/fleet/revocations")
            revoked = {r["license_id"] for r in answer.get("revoked", [])}
            omega_note = f"revocations from {server.name}"
        except TransportError as e:
            omega_note = f"OMEGA unreachable ({e.message}): revocations not checked"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in records:
        r["status"] = (
            "revoked" if r["license_id"] in revoked
            else "expired" if r["expires_at"] <= now
            else "ok"
        )  # fmt: skip

    def human() -> None:
        if not records:
            click.echo("No licenses issued from this project (ashat license issue ...).")
        for r in records:
            click.echo(
                f"  {r['license_id']:<22} {r['mainframe_id']:<16} {r['customer']:<16} "
                f"{','.join(r['channels']):<10} {r['expires_at']}  {r['status']}"
            )
        click.echo(f"({omega_note})")

    emit({"licenses": records, "note": omega_note}, human)
