"""``ashat license``: issue, revoke and list the licenses of Licensed Mainframes.

The work is in :mod:`ashat.ops.licenses`; these verbs only print what it returns.
"""

from __future__ import annotations

from pathlib import Path

import click

from ashat.cli.context import Project
from ashat.cli.output import OK, AshatGroup, emit, json_option
from ashat.clock import valid_through


@click.group("license", cls=AshatGroup)
def license_group() -> None:
    """Licenses of Licensed Mainframes (Ed25519-signed tokens OMEGA checks on every poll)."""


@license_group.command("issue")
@click.option("--mainframe", "mainframe_id", required=True, help="The mainframe's id.")
@click.option("--customer", required=True, help="Who the license is for.")
@click.option("--expires", required=True, help="YYYY-MM-DD (end of day, UTC) or ISO time.")
@click.option("--channel", "channels", multiple=True, default=["stable"], show_default=True)
@click.option("--region", help="Only this region's OMEGA serves it (omega --region).")
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="KEY=VALUE: a label of the mainframe for targeting (ring=pilot); repeatable.",
)
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
    region: str | None,
    labels: tuple[str, ...],
    key_path: str,
    out_path: str,
) -> None:
    """Sign a license for one mainframe and write it to --out."""
    from ashat.ops.licenses import issue_license

    record = issue_license(
        Project.find(),
        mainframe_id=mainframe_id,
        customer=customer,
        expires=expires,
        channels=channels,
        region=region,
        labels=labels,
        key_path=Path(key_path),
        out=Path(out_path),
    )
    out = Path(out_path)

    def human() -> None:
        click.echo(
            f"{OK} license {record['license_id']} for {record['mainframe_id']} "
            f"({record['customer']})"
        )
        click.echo(
            f"   channels {', '.join(record['channels'])}; "
            + (f"region {record['region']}; " if record.get("region") else "")
            + "".join(f"{k}={v}; " for k, v in sorted((record.get("labels") or {}).items()))
            + f"valid {valid_through(record['expires_at'])}"
        )
        click.echo(f"   written to {out} (mode 0600); give it to the mainframe with --license")

    emit(record, human)


@license_group.command("revoke")
@click.argument("license_id")
@click.option("--reason", help="Recorded in the audit trail.")
@click.option(
    "--issued-elsewhere",
    is_flag=True,
    help="Revoke an id this project did not issue and no mainframe of OMEGA's holds.",
)
@json_option
def revoke_cmd(license_id: str, reason: str | None, issued_elsewhere: bool) -> None:
    """Tell OMEGA to refuse LICENSE_ID from now on, and record it."""
    from ashat.ops.licenses import revoke_license

    omega = revoke_license(Project.find(), license_id, reason, issued_elsewhere=issued_elsewhere)
    emit(
        {"revoked": license_id, "omega": omega},
        lambda: click.echo(f"{OK} license {license_id} revoked on {omega}"),
    )


@license_group.command("list")
@json_option
def list_cmd() -> None:
    """Licenses issued from this project, with their status (OMEGA asked when configured)."""
    from ashat.ops.licenses import list_licenses

    listed = list_licenses(Project.find())
    records, omega_note = listed.licenses, listed.note

    def human() -> None:
        if not records:
            click.echo("No licenses issued from this project (ashat license issue ...).")
        for r in records:
            click.echo(
                f"  {r['license_id']:<22} {r['mainframe_id']:<16} {r['customer']:<16} "
                f"{','.join(r['channels']):<10} {_expiry(r['expires_at'])}  {r['status']}"
            )
        click.echo(f"({omega_note})")

    emit({"licenses": records, "note": omega_note}, human)


def _expiry(expires_at: str) -> str:
    """A list column: ``through 2027-12-31`` for a date given as such, else the time."""
    shown = valid_through(expires_at)
    return shown if shown.startswith("through ") else expires_at
