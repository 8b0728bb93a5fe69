"""``ashat``: run servers, manage keys and licenses, and the demo."""

from __future__ import annotations

import click

from ashat import __version__
from ashat.cli.output import AshatGroup


@click.group(cls=AshatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ashat")
def cli() -> None:
    """ashat: servers (agent), keys, and the demo."""


def main() -> None:
    cli(prog_name="ashat")


if __name__ == "__main__":
    main()
