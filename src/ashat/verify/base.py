"""The check interface (DESIGN §6): what a check receives, what it returns.

A check is any object with ``name``, ``title`` and ``run(ctx) -> Outcome``. The six built-in
checks and third-party ones (entry-point group ``ashat.checks``) share this interface; the
runner adds timing and turns exceptions and timeouts into ``error`` results, so a check only
says what it found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Status = Literal["passed", "failed", "skipped", "error"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "skipped", "error")


@dataclass(frozen=True)
class Outcome:
    """What a check found: a status, a one-line summary and structured details."""

    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def passed(cls, summary: str, **details: Any) -> Outcome:
        return cls("passed", summary, details)

    @classmethod
    def failed(cls, summary: str, **details: Any) -> Outcome:
        return cls("failed", summary, details)

    @classmethod
    def skipped(cls, summary: str, **details: Any) -> Outcome:
        return cls("skipped", summary, details)


@dataclass(frozen=True)
class CheckResult:
    name: str
    title: str
    status: Status
    summary: str
    details: dict[str, Any]
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "details": self.details,
            "duration_s": round(self.duration_s, 3),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CheckResult:
        return cls(
            d["name"], d["title"], d["status"], d["summary"], d.get("details") or {},
            float(d.get("duration_s") or 0.0),
        )  # fmt: skip


class AgentCalls(Protocol):
    """The agent routes checks use (``ashat.transport.AgentClient``)."""

    base_url: str

    def health(self) -> dict[str, Any]: ...
    def request(
        self, method: str, path: str, *, json_body: Any = None, timeout_s: float | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may look at. ``settings`` is ``[verify.<name>]`` of ashat.toml."""

    update_id: str
    tier: str
    agent: AgentCalls
    agent_url: str
    app_url: str | None
    app: dict[str, Any]
    verify: dict[str, Any]
    project_root: Any
    ca_cert: str | None
    baseline_runs_ms: dict[str, list[float]]  # passed runs' p95 by path, newest first
    timeout_s: float

    def settings(self, name: str) -> dict[str, Any]:
        value = self.verify.get(name)
        return value if isinstance(value, dict) else {}


class Check(Protocol):
    name: str
    title: str

    def run(self, ctx: CheckContext) -> Outcome: ...


class CheckConfigError(Exception):
    """A check's settings are malformed; the runner reports it as that check's ``error``."""
