"""What every verb needs: the project, its store, and a workflow acting as the current user.

The class lives in :mod:`ashat.ops.project`, shared with ``ashat serve``; here a project a
verb finds is closed (its store connection with it) when the command ends, so a verb run
in-process (tests, the demo) leaves no connection open, PostgreSQL's included. Also the
shell completion of update ids (``deploy verify <TAB>``), read from the project's store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ashat.ops import project as ops_project
from ashat.ops.project import client_for

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from ashat.ops.operations import Operations

__all__ = ["Project", "client_for", "complete_update_id", "operations"]

COMPLETION_LIMIT = 200


class Project(ops_project.Project):
    @classmethod
    def find(cls, start: Path | None = None, db_url: str | None = None) -> Project:
        """The project at or above ``start`` (the working directory). Raises InvalidInput
        where there is none and a verb would make a control store here (no ``ASHAT_DB``,
        no store in ``.ashat/``): a verb run in the wrong directory said "(none)", exit 0,
        and left ``.ashat/ashat.db`` behind (in /tmp too)."""
        root = ops_project.find_project_root(start)
        refuse_no_project(root, db_url)
        found = cls(root, db_url)
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.find_root().call_on_close(found.close)
        return found


def refuse_no_project(root: Path, db_url: str | None) -> None:
    """Raise InvalidInput where ``root`` is no project and a command would make a control
    store there (no ``ashat.toml``, no ``ASHAT_DB`` or ``--db``, no store in ``.ashat/``)."""
    from ashat.errors import InvalidInput
    from ashat.project import CONFIG_NAME, state_dir

    if (
        not (root / CONFIG_NAME).is_file()
        and not (db_url or os.environ.get("ASHAT_DB"))
        and not (state_dir(root) / "ashat.db").is_file()
    ):
        raise InvalidInput(
            f"no ashat.toml in {root} or any directory above it: run this in your "
            "project's directory, or 'deploy init' to make one here"
        )


def operations() -> Operations:
    """The verbs, picked once per command: through ``ashat serve`` when ``--via`` (or
    ``ASHAT_CONTROL``) names one, else on this machine."""
    from ashat.ops.operations import LocalOperations

    root = click.get_current_context().find_root()
    url = root.params.get("via")
    if not url:
        return LocalOperations(Project.find)
    from ashat.ops.remote import RemoteOperations
    from ashat.transport.control import ControlClient

    client = ControlClient.from_environment(url)
    root.call_on_close(client.close)
    return RemoteOperations(client, Project.find)


def complete_update_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The project's newest deployments whose id starts with ``incomplete``, with their state.

    Pressing TAB must change nothing: without ``ASHAT_DB`` and without ``.ashat/ashat.db``
    there is no store to read, and none is created. Any error yields no suggestion (a
    completion cannot show a message).
    """
    from click.shell_completion import CompletionItem

    from ashat.project import find_project_root, state_dir

    root = find_project_root()
    if not os.environ.get("ASHAT_DB") and not (state_dir(root) / "ashat.db").is_file():
        return []
    try:
        project = ops_project.Project(root)
        try:
            deps = project.workflow().history(COMPLETION_LIMIT, None)
        finally:
            project.close()
    except Exception:  # a completion must never print a traceback into the user's shell
        return []
    return [
        CompletionItem(d.id, help=f"{d.state.value}: {d.description}")
        for d in deps
        if d.id.startswith(incomplete)
    ]
