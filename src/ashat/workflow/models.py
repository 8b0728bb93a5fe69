"""Value types shared by the workflow services, the store and the front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ashat.workflow.states import State


@dataclass(frozen=True)
class Deployment:
    id: str
    state: State
    description: str
    created_by: str
    created_at: str
    updated_at: str
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.id,
            "state": self.state.value,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True)
class Change:
    """A state change that happened: what an observer of the workflow is told (notifications).

    ``previous`` is None when the deployment was just created.
    """

    deployment: Deployment
    previous: State | None
    actor: str
    at: str


@dataclass(frozen=True)
class Event:
    seq: int
    deployment_id: str | None
    kind: str
    actor: str
    at: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "update_id": self.deployment_id,
            "kind": self.kind,
            "actor": self.actor,
            "at": self.at,
            "details": self.details,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Server:
    tier: str
    name: str
    url: str
    token_path: str | None
    ca_cert: str | None
    updated_at: str
    updated_by: str

    def to_json(self) -> dict[str, Any]:
        # The token itself is never part of any output; only whether one is configured.
        return {
            "tier": self.tier,
            "name": self.name,
            "url": self.url,
            "token": "configured" if self.token_path else None,
            "ca_cert": self.ca_cert,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class Lease:
    tier: str
    deployment_id: str
    owner: str
    acquired_at: str
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "update_id": self.deployment_id,
            "owner": self.owner,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class ChainReport:
    """The verdict of walking the audit chain."""

    ok: bool
    events: int
    broken_seq: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
        }
