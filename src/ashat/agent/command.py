"""``ashat agent``: the server run on PUBLIC and OMEGA (DESIGN §5).

This module is imported by the ``ashat`` CLI on every invocation, so at the top it imports
only click and the standard library; the server (Starlette, uvicorn, cryptography) is
imported when the command runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

ROLES = ("public", "omega")
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("agent")
@click.option("--role", type=click.Choice(ROLES), required=True, help="Which tier this agent is.")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Data directory (blobs, releases, logs, state); created if missing.",
)
@click.option(
    "--listen", default="127.0.0.1:8700", show_default=True, help="HOST:PORT to serve on."
)
@click.option("--token-file", type=_FILE, required=True, help="File holding the bearer token.")
@click.option(
    "--trust",
    type=_FILE,
    multiple=True,
    required=True,
    help="Public key (.pub) whose release signatures are accepted; repeatable.",
)
@click.option("--tls-cert", type=_FILE, help="PEM certificate: serve https (with --tls-key).")
@click.option("--tls-key", type=_FILE, help="PEM private key of --tls-cert.")
@click.option(
    "--keep",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Releases kept on disk (current and previous always are).",
)
@click.option(
    "--app-env",
    type=_FILE,
    help="dotenv file (KEY=VALUE) passed to the app's environment; never logged.",
)
@click.option(
    "--max-blob-bytes",
    type=click.IntRange(min=1),
    default=2 * 1024**3,
    show_default=True,
    help="Largest blob accepted, in bytes.",
)
def agent(
    role: str,
    data: Path,
    listen: str,
    token_file: Path,
    trust: tuple[Path, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    keep: int,
    app_env: Path | None,
    max_blob_bytes: int,
) -> None:
    """Run an agent: receive bundles, stage and activate releases, supervise the app."""
    from ashat.agent.config import AgentConfig, Role, parse_listen, read_app_env
    from ashat.bundle.keys import load_public_key
    from ashat.project import read_token_file

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both or neither")
    host, port = parse_listen(listen)
    keys = [load_public_key(p) for p in trust]
    config = AgentConfig(
        role=Role(role),
        data=data.resolve(),
        host=host,
        port=port,
        token=read_token_file(token_file),
        trusted={k.keyid: k for k in keys},
        tls_cert=tls_cert,
        tls_key=tls_key,
        keep=keep,
        app_env=read_app_env(app_env) if app_env is not None else {},
        max_blob_bytes=max_blob_bytes,
    )
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    from ashat.agent.runner import run_agent

    def announce(line: str) -> None:
        click.echo(line, err=True)

    run_agent(config, announce)


def main() -> None:
    """Run ``agent`` alone, with the ``ashat`` CLI's error handling (``python -m``)."""
    from ashat.cli.output import AshatGroup

    group = AshatGroup(name="ashat", commands=[agent])
    group(["agent", *sys.argv[1:]], prog_name="ashat")


if __name__ == "__main__":
    main()
