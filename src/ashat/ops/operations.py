"""The verbs as one interface, run here or through ``ashat serve``.

:class:`Operations` is what a ``deploy`` verb may ask for; the CLI picks an implementation
once (``cli/context.py`` ``operations()``) and never branches on it again:

- :class:`LocalOperations` runs each verb on this machine, over the project found from
  the working directory and its store (the functions of ``ops/``);
- :class:`~ashat.ops.remote.RemoteOperations` asks ``ashat serve`` (``deploy --via URL``)
  and gives back the same result types, calling the same hooks, so a verb prints the same
  lines and the same ``--json`` whichever way it ran. ``tests/integration/
  test_operations_parity.py`` runs one suite against both.

Each method returns what the verb prints from and raises what the verb exits with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ashat.ops.approve import ApproveHooks, ApproveOutcome
    from ashat.ops.cancel import CancelOutcome
    from ashat.ops.project import Project
    from ashat.ops.rollback import RollbackHooks, RollbackOutcome
    from ashat.ops.rollout_control import ControlOutcome
    from ashat.ops.status import StatusView
    from ashat.trust.statements import Signer
    from ashat.workflow.models import ChainReport, Deployment, Event, Server
    from ashat.workflow.service import Overview

ServerResults = dict[str, dict[str, Any]]


class Operations(Protocol):
    """What the ``deploy`` verbs ask for, wherever it runs."""

    # -- reading
    def history(self, limit: int, state: str | None) -> list[Deployment]: ...
    def overview(self) -> Overview: ...
    def status(self, update_id: str, events: int = 10) -> StatusView: ...
    def log(self, update_id: str) -> list[Event]: ...
    def audit_verify(self, at: str | None = None) -> ChainReport: ...
    def servers(self, check: bool) -> tuple[list[Server], ServerResults]: ...

    # -- changing
    def configure(
        self, tier: str, url: str, name: str, token_file: Path | None, ca_cert: str | None
    ) -> tuple[Server, Server | None]: ...
    def push(
        self,
        update_id: str,
        description: str,
        *,
        source: str | None,
        git_ref: str | None,
        on_start: Callable[[Server], None],
        step: Callable[[str, str], None],
        tasks: Sequence[str] = (),
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]: ...
    def verify(
        self, update_id: str, only: list[str] | None, on_start: Callable[[Server], None]
    ) -> dict[str, Any]: ...
    def approve(
        self,
        update_id: str,
        *,
        as_user: str | None,
        comment: str | None,
        wait: bool,
        hooks: ApproveHooks,
        signer: tuple[Signer, str] | None = None,
        to: str | None = None,
    ) -> ApproveOutcome: ...
    def cancel(self, update_id: str, reason: str | None) -> CancelOutcome: ...
    def control_rollout(
        self, update_id: str, action: str, reason: str | None
    ) -> ControlOutcome: ...
    def rollback(
        self, update_id: str, reason: str | None, hooks: RollbackHooks
    ) -> RollbackOutcome: ...


class LocalOperations:
    """The verbs on this machine, acting as ``actor`` (None: ``ASHAT_USER`` or the OS
    user, :func:`ashat.project.current_actor`). The project is found (from the working
    directory) only when a verb first needs it, so a refused argument is refused first."""

    def __init__(self, find: Callable[[], Project], actor: str | None = None) -> None:
        self._find = find
        self.actor = actor

    @cached_property
    def project(self) -> Project:
        return self._find()

    def history(self, limit: int, state: str | None) -> list[Deployment]:
        return self.project.reader(self.actor).history(limit, state)

    def overview(self) -> Overview:
        return self.project.reader(self.actor).overview()

    def status(self, update_id: str, events: int = 10) -> StatusView:
        from ashat.ops.status import deployment_status

        return deployment_status(self.project, update_id, actor=self.actor, events=events)

    def log(self, update_id: str) -> list[Event]:
        return self.project.reader(self.actor).log(update_id)

    def audit_verify(self, at: str | None = None) -> ChainReport:
        return self.project.reader(self.actor).audit_verify(at)

    def servers(self, check: bool) -> tuple[list[Server], ServerResults]:
        from ashat.ops.status import check_servers

        rows = self.project.store.servers()
        return rows, (check_servers(self.project) if check else {})

    def configure(
        self, tier: str, url: str, name: str, token_file: Path | None, ca_cert: str | None
    ) -> tuple[Server, Server | None]:
        from ashat.ops.servers import configure_server

        return configure_server(
            self.project, tier, url, name, token_file=token_file, ca_cert=ca_cert,
            actor=self.actor,
        )  # fmt: skip

    def push(
        self,
        update_id: str,
        description: str,
        *,
        source: str | None,
        git_ref: str | None,
        on_start: Callable[[Server], None],
        step: Callable[[str, str], None],
        tasks: Sequence[str] = (),
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        from ashat.ops.push import run_push

        return run_push(
            self.project, update_id, description, source=source, git_ref=git_ref,
            actor=self.actor, on_start=on_start, step=step, tasks=tasks, on_upload=on_upload,
        ).to_json()  # fmt: skip

    def verify(
        self, update_id: str, only: list[str] | None, on_start: Callable[[Server], None]
    ) -> dict[str, Any]:
        from ashat.ops.verify import run_verify

        return run_verify(
            self.project, update_id, only, actor=self.actor, on_start=on_start
        ).to_json()

    def approve(
        self,
        update_id: str,
        *,
        as_user: str | None,
        comment: str | None,
        wait: bool,
        hooks: ApproveHooks,
        signer: tuple[Signer, str] | None = None,
        to: str | None = None,
    ) -> ApproveOutcome:
        from ashat.ops.approve import run_approve

        return run_approve(
            self.project, update_id, actor=as_user or self.actor, comment=comment, wait=wait,
            hooks=hooks, signer=signer, to=to,
        )  # fmt: skip

    def cancel(self, update_id: str, reason: str | None) -> CancelOutcome:
        from ashat.ops.cancel import run_cancel

        return run_cancel(self.project, update_id, reason, actor=self.actor)

    def control_rollout(self, update_id: str, action: str, reason: str | None) -> ControlOutcome:
        from ashat.ops.rollout_control import control_rollout

        return control_rollout(self.project, update_id, action, reason, actor=self.actor)

    def rollback(self, update_id: str, reason: str | None, hooks: RollbackHooks) -> RollbackOutcome:
        from ashat.ops.rollback import run_rollback

        return run_rollback(self.project, update_id, reason, actor=self.actor, hooks=hooks)
