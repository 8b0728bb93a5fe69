"""``deploy init``: a commented ``ashat.toml``, a signing key and ``.gitignore``; the work is
in :mod:`ashat.ops.init`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ashat.cli.output import OK, emit, json_mode, json_option


@click.command("init")
@click.option("--yes", "-y", is_flag=True, help="Ask nothing: take the defaults and options.")
@click.option("--force", is_flag=True, help="Replace an existing ashat.toml.")
@click.option(
    "--name", help="[app] name: a-z, 0-9, '-', '_' (default: made from the directory's name)."
)
@click.option("--run", help="[app] run: the command that serves the app; must contain {port}.")
@click.option("--health-path", help="[app] health_path (default: /).")
@json_option
def init(
    yes: bool, force: bool, name: str | None, run: str | None, health_path: str | None
) -> None:
    """Start a project here: ashat.toml, .ashat/keys/alpha.key, .ashat/ in .gitignore."""
    from ashat.errors import InvalidInput
    from ashat.ids import app_name_from, validate_app_name
    from ashat.ops.init import guess_run, init_project, plan_init
    from ashat.project import CONFIG_NAME

    root = Path.cwd()
    if (root / CONFIG_NAME).exists() and not force:  # before asking three questions for nothing
        raise InvalidInput(f"{root / CONFIG_NAME} already exists; use --force to replace it")
    if not (yes or json_mode()):
        name = click.prompt(
            "Application name",
            default=name or app_name_from(root.resolve().name),
            value_proc=_asking_again(validate_app_name, InvalidInput),
        )
        run = click.prompt(
            "Command that serves it ({port} is the port; empty: no app)",
            default=run or guess_run(root) or "",
            show_default=True,
        )
        health_path = click.prompt("Health path", default=health_path or "/")
    result = init_project(root, plan_init(root, name, run, health_path), force=force)

    def human() -> None:
        verb = "Replaced" if result.replaced else "Wrote"
        click.echo(f"{OK} {verb} {result.config.name}: edit [app] and [verify], then push")
        if result.key_created:
            click.echo(f"{OK} signing key {result.key.relative_to(root)} (mode 0600, keep it)")
        else:
            click.echo(f"{OK} signing key {result.key.relative_to(root)} already there, kept")
        click.echo(
            f"   agents trust its public half: --trust {result.public_key.relative_to(root)}"
        )
        if result.gitignore_changed:
            click.echo(f"{OK} added .ashat/ to {result.gitignore.name}")
        click.echo("Next: deploy configure public <url> <name> --token-file <file>")

    emit(result.to_json(), human)


def _asking_again(check: Callable[[str], str], error: type[Exception]) -> Callable[[str], str]:
    """A prompt's check: an answer ``check`` refuses is asked again, saying why."""

    def check_answer(value: str) -> str:
        try:
            return check(value)
        except error as e:
            raise click.UsageError(str(e)) from e

    return check_answer
