"""The narrow interfaces the workflow services are given: a store and a clock.

The real store is :class:`ashat.store.store.Store`; tests may pass any object with these
methods. Keeping the seam this small is what lets the CLI and the HTTP API share the
services and lets unit tests run without sockets or files.
"""

from __future__ import annotations

import builtins  # the method named `list` shadows the builtin in the class body
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ashat.clock import Clock, SystemClock, iso, iso_after  # noqa: F401  (the ports' clock)
from ashat.workflow.models import ChainReport, Deployment, Event, Lease, Server
from ashat.workflow.states import State


class StorePort(Protocol):
    def get(self, update_id: str) -> Deployment | None: ...
    def require(self, update_id: str) -> Deployment: ...
    def list(
        self,
        limit: int = 50,
        states: Sequence[State] | None = None,
        exclude_states: Sequence[State] | None = None,
    ) -> list[Deployment]: ...
    def create(
        self,
        dep: Deployment,
        event_kind: str,
        event_details: dict[str, Any],
        take_lease: tuple[str, str, str] | None = None,
    ) -> Deployment: ...
    def transition(
        self,
        update_id: str,
        expected: State,
        target: State,
        *,
        actor: str,
        at: str,
        event_kind: str,
        event_details: dict[str, Any] | None = None,
        reason: str | None = None,
        details_update: dict[str, Any] | None = None,
        take_lease: tuple[str, str, str] | None = None,
        release_lease: str | None = None,
    ) -> Deployment: ...
    def update_details(self, update_id: str, details_update: dict[str, Any], at: str) -> None: ...
    def append_event(
        self,
        kind: str,
        actor: str,
        at: str,
        details: dict[str, Any] | None = None,
        deployment_id: str | None = None,
    ) -> Event: ...
    def events(
        self, deployment_id: str | None = None, limit: int | None = None
    ) -> builtins.list[Event]: ...
    def verify_audit(self, at: tuple[int, str] | None = None) -> ChainReport: ...
    def lease(self, tier: str) -> Lease | None: ...
    def leases(self) -> builtins.list[Lease]: ...
    def renew_lease(self, tier: str, update_id: str, expires_at: str) -> bool: ...
    def server(self, tier: str) -> Server | None: ...
    def servers(self) -> builtins.list[Server]: ...
    def set_server(self, server: Server, event_details: dict[str, Any]) -> None: ...
    def record_checks(
        self, update_id: str, results: builtins.list[dict[str, Any]], actor: str, at: str
    ) -> int: ...
    def latest_checks(self, update_id: str) -> builtins.list[dict[str, Any]]: ...
    def baselines(self, tier: str) -> dict[str, builtins.list[float]]: ...
    def set_baseline(
        self, tier: str, path: str, p95_ms: float, update_id: str, actor: str, at: str
    ) -> None: ...
    def add_approval(
        self,
        update_id: str,
        approver: str,
        at: str,
        comment: str | None,
        statement: dict[str, Any] | None = None,
    ) -> bool: ...
    def atomic(self) -> AbstractContextManager[object]:
        """One write transaction around several calls (they join it): what they read is
        what they change, whoever else writes at the same time."""
        ...

    def approvals(self, update_id: str) -> builtins.list[dict[str, Any]]: ...
    def approval_statements(self, update_id: str) -> builtins.list[dict[str, Any]]: ...
