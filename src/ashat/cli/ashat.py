"""``ashat``: run servers, manage keys and licenses, and the demo."""

from __future__ import annotations

from pathlib import Path

import click

from ashat import __version__
from ashat.cli.output import OK, AshatGroup, emit, json_option


@click.group(cls=AshatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ashat")
def cli() -> None:
    """ashat: servers (agent, serve), users, keys, licenses, and the demo."""


@cli.group(cls=AshatGroup)
def keys() -> None:
    """Ed25519 signing keys: a release key (agents --trust it), omega, license, verifier."""


@keys.command("generate")
@click.argument("name", required=False)
@click.option(
    "--approver",
    metavar="NAME",
    help="An approver's own key: NAME.key signs your approvals (deploy approve --key).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where NAME.key (mode 0600) and NAME.pub are written.",
)
@json_option
def keys_generate(name: str | None, approver: str | None, directory: str) -> None:
    """Write NAME.key (private, 0600) and NAME.pub; an existing key is never overwritten."""
    from ashat.bundle import generate_keypair, load_public_key
    from ashat.errors import InvalidInput

    if (name is None) == (approver is None):
        raise InvalidInput("give a key NAME, or --approver NAME for an approver's own key")
    given = name if name is not None else approver  # "" too: refused as a name, not None
    assert given is not None
    key_path, pub_path = generate_keypair(given, Path(directory))
    keyid = load_public_key(pub_path).keyid

    def human() -> None:
        click.echo(f"{OK} private key {key_path} (keep it secret)")
        if approver is not None:
            click.echo(
                f"{OK} public key  {pub_path} (a root key holder adds it: ashat trust add-key "
                f"approvers {pub_path.name} --name {approver})"
            )
            click.echo(f"   approve with: deploy approve ID --key {key_path}")
        else:
            click.echo(f"{OK} public key  {pub_path} ({_where_it_goes(str(name), pub_path)})")
        click.echo(f"   key id {keyid}")

    emit({"private_key": str(key_path), "public_key": str(pub_path), "keyid": keyid}, human)


def _where_it_goes(name: str, pub: Path) -> str:
    """Where a key's public half is given, by the names the guide uses for each key."""
    key = pub.with_suffix(".key")
    return {
        "omega": f"OMEGA signs with --omega-key {key}; mainframes take --trust-omega {pub}",
        "license": f"licenses are signed with --key {key}; OMEGA takes --license-trust {pub}",
        "verifier": f"PUBLIC signs with --verifier-key {key}; add {pub.name} to the root's "
        "verifiers (ashat trust init --verifier)",
    }.get(name, f"agents that install what it signs take --trust {pub}")


from ashat.cli.advisories_cmd import advisories_group  # noqa: E402
from ashat.cli.agent_cmd import agent  # noqa: E402
from ashat.cli.fleet_cmd import fleet_group  # noqa: E402
from ashat.cli.license_cmd import license_group  # noqa: E402
from ashat.cli.serve_cmd import serve  # noqa: E402
from ashat.cli.trust_cmd import trust_group  # noqa: E402
from ashat.cli.users_cmd import users_group  # noqa: E402

cli.add_command(agent)
cli.add_command(serve)
cli.add_command(license_group)
cli.add_command(trust_group)
cli.add_command(users_group)
cli.add_command(advisories_group)
cli.add_command(fleet_group)


@cli.command()
@click.option(
    "--app",
    "app_dir",
    type=click.Path(file_okay=False, exists=True),
    help="The application to deploy (default: examples/hello-service).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directory to look at afterwards.")
def demo(app_dir: str | None, keep: bool) -> None:
    """Run the whole workflow on loopback with real processes, then stop them."""
    from ashat.demo import run_demo

    run_demo(Path(app_dir) if app_dir else None, keep)


def main() -> None:
    from ashat.cli.output import run_main

    run_main(cli, "ashat")


if __name__ == "__main__":
    main()
