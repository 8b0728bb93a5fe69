"""``ashat advisories update``: the OSV snapshot PUBLIC's Security Scan checks pinned
requirements against. The work is in :mod:`ashat.agent.advisories`."""

from __future__ import annotations

from pathlib import Path

import click

from ashat.cli.output import OK, AshatGroup, emit, json_option


@click.group("advisories", cls=AshatGroup)
def advisories_group() -> None:
    """OSV advisories for the Security Scan, kept by PUBLIC's agent."""


@advisories_group.command("update")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's data directory: the snapshot goes to DATA/advisories, where the "
    "agent looks by default.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Another directory for the snapshot (give it to the agent with --advisories).",
)
@click.option(
    "--from",
    "source",
    metavar="URL|FILE",
    help="OSV's PyPI zip, or a copy of it on disk for a machine without a route to it "
    "[default: https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip].",
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="CA certificate for an https --from (e.g. behind a TLS-inspecting proxy).",
)
@json_option
def update_cmd(
    data: Path | None, directory: Path | None, source: str | None, ca_cert: str | None
) -> None:
    """Fetch OSV's advisories for PyPI and replace the agent's snapshot with them."""
    import datetime as dt

    from ashat.agent.advisories import OSV_PYPI_URL, update
    from ashat.errors import InvalidInput

    if (data is None) == (directory is None):
        raise InvalidInput("give the agent's --data DIR, or --dir DIR for another place")
    target = directory if directory is not None else Path(str(data)) / "advisories"
    snap = update(target, source or OSV_PYPI_URL, dt.datetime.now(dt.UTC), ca_cert)

    def human() -> None:
        click.echo(f"{OK} {snap.records} OSV advisories for PyPI in {snap.directory}")
        skipped = f"; {snap.skipped} files skipped (not OSV records)" if snap.skipped else ""
        click.echo(f"   from {snap.source} at {snap.fetched_at}{skipped}")
        if directory is not None:
            click.echo(f"   give it to PUBLIC's agent: ashat agent --advisories {snap.directory}")

    emit(snap.to_json(), human)
