"""Value types shared by the workflow services, the store and the front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

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

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Deployment:
        """The inverse of :meth:`to_json` (``deploy --via``: a deployment ``ashat serve`` sent)."""
        return cls(
            id=d["update_id"],
            state=State(d["state"]),
            description=d["description"],
            created_by=d["created_by"],
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            reason=d.get("reason"),
            details=d.get("details") or {},
        )


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

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        """The inverse of :meth:`to_json`; ``prev_hash`` is not sent, so it is left empty."""
        return cls(
            d["seq"], d.get("update_id"), d["kind"], d["actor"], d["at"],
            d.get("details") or {}, "", d["hash"],
        )  # fmt: skip


TOKEN_ELSEWHERE = "(kept by the control server)"  # Server.token_path of a --via answer


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

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Server:
        """A server as ``ashat serve`` shows it: whether a token is set, never the token."""
        return cls(
            d["tier"], d["name"], d["url"], TOKEN_ELSEWHERE if d.get("token") else None,
            d.get("ca_cert"), d["updated_at"], d["updated_by"],
        )  # fmt: skip


@dataclass(frozen=True)
class Lease:
    tier: str
    deployment_id: str
    owner: str
    acquired_at: str
    expires_at: str

    @property
    def actor(self) -> str:
        """Who holds it: its ``owner`` is ``actor@host:pid`` (a user's name may hold '@')."""
        return self.owner.rpartition("@")[0]

    @property
    def process(self) -> tuple[str, int | None]:
        """The host and process id that hold it (None if the owner does not say)."""
        host, _, pid = self.owner.rpartition("@")[2].rpartition(":")
        return host, int(pid) if pid.isdigit() else None

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "update_id": self.deployment_id,
            "owner": self.owner,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Lease:
        return cls(d["tier"], d["update_id"], d["owner"], d["acquired_at"], d["expires_at"])


@dataclass(frozen=True)
class ChainReport:
    """The verdict of walking the audit chain."""

    ok: bool
    events: int
    broken_seq: int | None = None
    reason: str | None = None
    head: tuple[int, str] | None = None  # the last event's (seq, hash), when intact

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
            "head": {"seq": self.head[0], "hash": self.head[1]} if self.head else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChainReport:
        head = d.get("head")
        at = (int(head["seq"]), str(head["hash"])) if isinstance(head, dict) else None
        return cls(bool(d["ok"]), int(d["events"]), d.get("broken_seq"), d.get("reason"), at)


class RolloutStatus(TypedDict, total=False):
    """OMEGA's status of one rollout (``GET /v1/fleet/rollouts/{id}``; the fleet protocol
    in the architecture document has every key). The keys the control side reads:"""

    rollout_id: str
    update_id: str
    kind: str  # "install" | "rollback"
    state: str  # "running" | "paused" | "completed" | "failed" | "aborted" | ...
    waves: list[dict[str, Any]]
    totals: dict[str, int]
    failures: list[dict[str, Any]]
    rollback_rollout_id: str | None
    reason: str | None
