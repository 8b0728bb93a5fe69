"""What every verb needs: the project, its store, and a workflow acting as the current user.

The class lives in :mod:`ashat.ops.project`, shared with ``ashat serve``.
"""

from __future__ import annotations

from ashat.ops.project import Project, client_for

__all__ = ["Project", "client_for"]
