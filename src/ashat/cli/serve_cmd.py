"""``ashat serve``: the control-plane API (DESIGN §8).

Imported by the ``ashat`` CLI on every invocation, so at the top it imports only click and
the standard library; Starlette, uvicorn and the rest load when the command runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ashat.cli.agent_cmd import upload_pace_options

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("serve")
@click.option(
    "--listen", default="127.0.0.1:8800", show_default=True, help="HOST:PORT to serve on."
)
@click.option("--db", "db_url", help="Control store URL (default: ASHAT_DB, else .ashat/ashat.db).")
@click.option(
    "--project",
    "project_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The project directory (default: the nearest one holding ashat.toml).",
)
@click.option("--tls-cert", type=_FILE, help="PEM certificate: serve https (with --tls-key).")
@click.option("--tls-key", type=_FILE, help="PEM private key of --tls-cert.")
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    metavar="IPS",
    help="Comma-separated addresses of TLS proxies whose X-Forwarded-Proto/-For are "
    "believed ('*': any), so the dashboard's Secure cookie and origin check see https.",
)
@upload_pace_options
@click.option(
    "--spool-user-quota",
    type=click.IntRange(min=1),
    default=4 * 1024**3,
    show_default=True,
    help="Bytes of uploads one user may have waiting for their push (--via).",
)
@click.option(
    "--spool-quota",
    type=click.IntRange(min=1),
    default=16 * 1024**3,
    show_default=True,
    help="Bytes of uploads all users together may have waiting.",
)
def serve(
    listen: str,
    db_url: str | None,
    project_dir: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    forwarded_allow_ips: str,
    min_upload_rate: int,
    upload_grace: float,
    spool_user_quota: int,
    spool_quota: int,
) -> None:
    """Serve the control-plane HTTP API and web dashboard (/; OpenAPI at /openapi.json,
    metrics at /metrics)."""
    from ashat.agent.config import parse_listen
    from ashat.cli.context import refuse_no_project
    from ashat.project import find_project_root

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both or neither")
    host, port = parse_listen(listen)
    root = project_dir.resolve() if project_dir else find_project_root()
    refuse_no_project(root, db_url)  # the wrong directory: no empty store served from it
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from ashat.api.runner import run_server
    from ashat.ops.push import SpoolQuota

    def announce(line: str) -> None:
        click.echo(line, err=True)

    _warn_without_users(root, db_url)
    run_server(
        root, db_url, host, port, tls_cert, tls_key, announce, forwarded_allow_ips,
        (min_upload_rate, upload_grace), SpoolQuota(spool_user_quota, spool_quota),
    )  # fmt: skip


def _warn_without_users(root: Path, db_url: str | None) -> None:
    from ashat.ops.project import Project
    from ashat.ops.users import list_users

    project = Project(root, db_url)
    try:
        if not list_users(project):
            click.echo(
                "warning: no users yet, so every request but /v1/health, /openapi.json and "
                "/metrics is refused: add one with 'ashat users add NAME --role admin' and "
                "'ashat users token NAME'",
                err=True,
            )
    finally:
        project.close()
