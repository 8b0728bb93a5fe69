"""What every verb needs: the project, its store, and a workflow acting as the current user."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ashat.project import current_actor, find_project_root, state_dir
from ashat.store.db import Database, database_url
from ashat.store.store import Store
from ashat.workflow.service import Workflow


@dataclass
class Project:
    root: Path

    @classmethod
    def find(cls) -> Project:
        return cls(find_project_root())

    @property
    def state_dir(self) -> Path:
        return state_dir(self.root)

    @cached_property
    def store(self) -> Store:
        return Store(Database(database_url(self.root)))

    def workflow(self, actor: str | None = None) -> Workflow:
        return Workflow(self.store, current_actor(actor))
