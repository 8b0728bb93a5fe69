"""What every verb needs: the project, its store, and a workflow acting as the current user.

The class lives in :mod:`ashat.ops.project`, shared with ``ashat serve``. Also the shell
completion of update ids (``deploy verify <TAB>``), read from the project's store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ashat.ops.project import Project, client_for

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

__all__ = ["Project", "client_for", "complete_update_id"]

COMPLETION_LIMIT = 200


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

    if (
        not os.environ.get("ASHAT_DB")
        and not (state_dir(find_project_root()) / "ashat.db").is_file()
    ):
        return []
    try:
        project = Project.find()
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
