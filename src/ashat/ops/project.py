"""What every operation needs: the project, its ``ashat.toml``, its store, its servers, and a
workflow acting as a user whose state changes are notified (``[[notify]]``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ashat.errors import InvalidInput
from ashat.project import current_actor, find_project_root, state_dir
from ashat.store.db import Database, database_url
from ashat.store.store import Store
from ashat.workflow.service import Workflow

if TYPE_CHECKING:
    from ashat.config import Config
    from ashat.transport.client import AgentClient
    from ashat.workflow.models import Deployment, Server


@dataclass
class Project:
    """A project directory (holding ``ashat.toml``) and the control store it uses.

    ``db_url`` overrides ``ASHAT_DB`` and the default ``.ashat/ashat.db``. One store
    connection per object: a server makes one per request (the store is not shared
    between threads).
    """

    root: Path
    db_url: str | None = None

    @classmethod
    def find(cls, start: Path | None = None, db_url: str | None = None) -> Project:
        return cls(find_project_root(start), db_url)

    @property
    def state_dir(self) -> Path:
        return state_dir(self.root)

    @property
    def url(self) -> str:
        """The control store's URL."""
        return self.db_url or database_url(self.root)

    @cached_property
    def store(self) -> Store:
        return Store(Database(self.url))

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    def config(self) -> Config:
        """``ashat.toml``, read now (it may change between two requests of a server)."""
        from ashat.config import Config

        return Config.load(self.root)

    def workflow(self, actor: str | None = None) -> Workflow:
        """A workflow acting as ``actor`` (else ``ASHAT_USER``, else the OS user).

        Raises :class:`InvalidInput` when ``[[notify]]`` in ``ashat.toml`` is malformed.
        """
        from ashat.ops.notifications import observer_for

        return Workflow(self.store, current_actor(actor), observer=observer_for(self))

    def reader(self, actor: str | None = None) -> Workflow:
        """A workflow for verbs that only read (history, log, audit verify, the overview):
        no ``[[notify]]`` observer, so neither ``ashat.toml`` nor the notifier is loaded."""
        return Workflow(self.store, current_actor(actor))

    def require_server(self, tier: str) -> Server:
        from ashat.ids import configure_args, tier_label

        server = self.store.server(tier)
        if server is None:
            raise InvalidInput(
                f"{tier_label(tier)} is not configured: run "
                f"'deploy configure {configure_args(tier)}' first"
            )
        return server

    def omega_of(self, dep: Deployment) -> Server:
        """The OMEGA holding ``dep``'s rollout now: its region's, or the one OMEGA."""
        from ashat.ids import omega_tier

        region = dep.details.get("region")
        return self.require_server(omega_tier(str(region) if region else None))

    def manifest_path(self, update_id: str) -> Path:
        """Where ``deploy push`` keeps the exact signed manifest approval promotes."""
        return self.state_dir / "manifests" / f"{update_id}.json"


def client_for(server: Server, timeout_s: float = 30.0, retries: int = 3) -> AgentClient:
    """A client for a configured server (httpx is imported here, not before). ``retries``
    0 for a best-effort probe that must give up after ``timeout_s``, not four times it."""
    from ashat.transport.client import AgentClient

    return AgentClient.for_server(server, timeout_s=timeout_s, retries=retries)
