"""``state.json``: what the agent remembers besides the trees and symlinks, and the pure
decisions taken from it (which release a rollback leaves as ``previous``, which to prune).

The symlinks are the truth about what is current and previous; this file holds history:
every activation in order, the releases rolled back (never offered again as a default
rollback target, nor taken again on a mainframe but by a rollback OMEGA signed; kept once
pruned too), the order releases were staged or activated in (for pruning), and the app
processes the agent started (so a restarted agent can stop the ones a crash orphaned).
It is written whole and atomically after each change.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ashat.faults import crash_point
from ashat.project import write_private

SCHEMA = 1
MAX_HISTORY = 1000  # activations remembered
MAX_ROLLED_BACK = 1000  # releases remembered as rolled back here, pruned or not


@dataclass(frozen=True)
class Activation:
    update_id: str
    at: str  # ISO 8601, UTC
    how: str  # "activate" or "rollback"


@dataclass(frozen=True)
class AppRecord:
    """An app process the agent started and has not yet seen stop."""

    release: str
    pid: int
    port: int
    started: int | None  # start time in clock ticks (/proc/PID/stat), tells a reused pid apart


@dataclass
class AgentState:
    history: list[Activation] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    recency: list[str] = field(default_factory=list)  # least recently staged/activated first
    apps: list[AppRecord] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)  # releases whose migrate hook ran here

    @classmethod
    def load(cls, path: Path) -> AgentState:
        """The state in ``path`` (empty if there is none). Raises ``ValueError`` if corrupt."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not an agent state file of schema {SCHEMA}")
        try:
            return cls(
                history=[Activation(**a) for a in obj["history"]],
                rolled_back=[str(i) for i in obj["rolled_back"]],
                recency=[str(i) for i in obj["recency"]],
                apps=[AppRecord(**a) for a in obj["apps"]],
                migrated=[str(i) for i in obj.get("migrated", [])],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed agent state ({e})") from e

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "history": [asdict(a) for a in self.history],
            "rolled_back": list(self.rolled_back),
            "recency": list(self.recency),
            "apps": [asdict(a) for a in self.apps],
            "migrated": list(self.migrated),
        }

    def save(self, path: Path) -> None:
        data = json.dumps(self.to_json(), indent=1, sort_keys=True).encode("utf-8")
        crash_point("state.save")
        write_private(path, data, mode=0o600)

    def touch(self, update_id: str) -> None:
        """``update_id`` was just staged or activated: make it the most recent."""
        if update_id in self.recency:
            self.recency.remove(update_id)
        self.recency.append(update_id)

    def forget(self, update_id: str) -> None:
        """The release is gone from disk (pruned, or failed before its first activation).
        That it was rolled back here is kept: a mainframe's bearer token must not bring it
        back once it is pruned (its manifest is no secret, its blobs come with a license)."""
        if update_id in self.recency:
            self.recency.remove(update_id)
        if update_id in self.migrated:
            self.migrated.remove(update_id)

    def migrated_after(self, target: str) -> list[str]:
        """Releases whose migrate hook ran here and that were activated after ``target``
        last was, newest first: what a rollback to ``target`` passes back over."""
        last = {a.update_id: i for i, a in enumerate(self.history)}
        since = last.get(target, -1)
        over = [r for r in self.migrated if r != target and last.get(r, -1) > since]
        return sorted(over, key=lambda r: last[r], reverse=True)

    def record_activation(self, update_id: str, how: str, at: str) -> None:
        self.history.append(Activation(update_id, at, how))
        del self.history[:-MAX_HISTORY]
        if update_id in self.rolled_back:  # activated again on purpose
            self.rolled_back.remove(update_id)
        self.touch(update_id)

    def mark_rolled_back(self, update_id: str) -> None:
        if update_id not in self.rolled_back:
            self.rolled_back.append(update_id)
            del self.rolled_back[:-MAX_ROLLED_BACK]

    def lost_switch(
        self, current: str | None, previous: str | None
    ) -> tuple[str, str | None] | None:
        """A switch the links show and the history lacks (the agent died after both links
        moved, before this file was written: crash point ``switch.done``): ``(how, rolled
        back)`` to record, else None. A forward switch leaves the release that ran as
        ``previous``; a rollback never does (it is the one rolled back)."""
        last = self.history[-1].update_id if self.history else None
        if current is None or current == last:
            return None
        if last is None or previous == last:
            return "activate", None
        return "rollback", last

    def was_activated(self, update_id: str) -> bool:
        return any(a.update_id == update_id for a in self.history)


def previous_after_rollback(
    history: Sequence[str], to: str, excluded: Collection[str], available: Collection[str]
) -> str | None:
    """The release that was active before ``to`` last became active, for ``previous``.

    Walks back from ``to``'s last activation (from the end if it never was active),
    skipping ``to`` itself, ``excluded`` (rolled-back ids) and ids no longer ``available``.
    """
    end = len(history)
    for i in range(len(history) - 1, -1, -1):
        if history[i] == to:
            end = i
            break
    for update_id in reversed(history[:end]):
        if update_id != to and update_id not in excluded and update_id in available:
            return update_id
    return None


def prune_plan(
    recency: Sequence[str], keep: int, protected: Collection[str], available: Collection[str]
) -> list[str]:
    """The ids to delete: all ``available`` but the ``keep`` most recent and ``protected``.

    Releases not in ``recency`` (left by an older state file) count as the least recent.
    """
    unknown = sorted(i for i in available if i not in recency)
    ordered = unknown + [i for i in recency if i in available]
    kept = set(ordered[-keep:]) if keep > 0 else set()
    return [i for i in ordered if i not in kept and i not in protected]
