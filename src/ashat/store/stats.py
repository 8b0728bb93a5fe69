"""Aggregates of the control store for ``/metrics`` on ``ashat serve``: plain queries, read
at each scrape, so what the CLI did and what the API did are counted alike."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ashat.store.db import Database


@dataclass
class CheckStats:
    results: dict[tuple[str, str], int] = field(default_factory=dict)  # (check, status) -> n
    duration_sum: dict[str, float] = field(default_factory=dict)  # check -> seconds
    duration_count: dict[str, int] = field(default_factory=dict)
    last_duration: dict[str, float] = field(default_factory=dict)  # of its newest result
    last_status: dict[str, str] = field(default_factory=dict)


@dataclass
class PushTotals:
    bytes_sent: int = 0
    bytes_skipped: int = 0
    blobs_sent: int = 0
    blobs_skipped: int = 0


def deployments_by_state(db: Database) -> dict[str, int]:
    rows = db.query("SELECT state, COUNT(*) FROM deployments GROUP BY state")
    return {str(r[0]): int(r[1]) for r in rows}


def check_stats(db: Database) -> CheckStats:
    out = CheckStats()
    for name, status, n, total in db.query(
        "SELECT name, status, COUNT(*), SUM(duration_s) FROM check_results GROUP BY name, status"
    ):
        out.results[(str(name), str(status))] = int(n)
        out.duration_sum[name] = out.duration_sum.get(name, 0.0) + float(total or 0.0)
        out.duration_count[name] = out.duration_count.get(name, 0) + int(n)
    for name, status, duration in db.query(
        "SELECT c.name, c.status, c.duration_s FROM check_results c JOIN "
        "(SELECT name, MAX(at) AS at FROM check_results GROUP BY name) m "
        "ON c.name = m.name AND c.at = m.at"
    ):
        out.last_status[str(name)] = str(status)
        out.last_duration[str(name)] = float(duration)
    return out


def approvals_count(db: Database) -> int:
    row = db.query_one("SELECT COUNT(*) FROM approvals")
    return int(row[0]) if row else 0


def users_by_role(db: Database) -> dict[str, int]:
    return {
        str(r[0]): int(r[1]) for r in db.query("SELECT role, COUNT(*) FROM users GROUP BY role")
    }


def audit_events(db: Database) -> int:
    row = db.query_one("SELECT seq FROM audit_head WHERE id = 1")
    return int(row[0]) if row else 0


def push_totals(db: Database) -> PushTotals:
    """Bytes and blobs pushed to PUBLIC, and those skipped because PUBLIC had them."""
    out = PushTotals()
    for (raw,) in db.query("SELECT details FROM deployments"):
        try:
            d: Any = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if not isinstance(d, dict) or not isinstance(d.get("bytes_sent"), int):
            continue
        out.bytes_sent += d["bytes_sent"]
        total = d.get("bytes_total")
        if isinstance(total, int):
            out.bytes_skipped += max(0, total - d["bytes_sent"])
        out.blobs_sent += int(d.get("blobs_sent") or 0)
        out.blobs_skipped += int(d.get("blobs_skipped") or 0)
    return out


def rollouts_in_flight(db: Database, limit: int = 20) -> list[tuple[str, str]]:
    """(update id, rollout id) of the deployments distributing now, newest first."""
    rows = db.query(
        "SELECT id, details FROM deployments WHERE state = ? ORDER BY updated_at DESC LIMIT ?",
        ("distributing", limit),
    )
    out = []
    for update_id, raw in rows:
        try:
            rollout_id = json.loads(raw).get("rollout_id")
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(rollout_id, str):
            out.append((str(update_id), rollout_id))
    return out
