"""What every verb needs: the project, its store, and a workflow acting as the current user.

The class lives in :mod:`ashat.ops.project`, shared with ``ashat serve``; here a project a
verb finds is closed (its store connection with it) when the command ends, so a verb run
in-process (tests, the demo) leaves no connection open, PostgreSQL's included.
"""

from __future__ import annotations

from pathlib import Path

import click

from ashat.ops import project as ops_project
from ashat.ops.project import client_for

__all__ = ["Project", "client_for"]


class Project(ops_project.Project):
    @classmethod
    def find(cls, start: Path | None = None, db_url: str | None = None) -> Project:
        found = cls(ops_project.find_project_root(start), db_url)
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.find_root().call_on_close(found.close)
        return found
