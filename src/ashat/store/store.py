"""The control store: the repository the workflow services use.

Every state change goes through :meth:`Store.transition`, a compare-and-set
(``UPDATE ... WHERE id = ? AND state = ?``) in the same transaction as its audit event and
any lease it takes or gives back, so a crash never leaves one without the other.
"""

from __future__ import annotations

import builtins  # the method named `list` shadows the builtin in the class body
import json
import statistics
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from ashat.canonical import canonical_json, sha256_hex
from ashat.store.audit import GENESIS_HASH, chain_hash, event_body, verify_chain
from ashat.store.db import Database, Row
from ashat.workflow.errors import AlreadyExists, Conflict, DeploymentNotFound, LeaseHeld
from ashat.workflow.models import ChainReport, Deployment, Event, Lease, Server
from ashat.workflow.states import State

# Passed Performance Baseline runs a new run is judged against (their median): one noisy
# run among them neither fails a release nor moves the baseline.
BASELINE_RUNS = 5

_DEPLOYMENT_COLS = "id, state, description, created_by, created_at, updated_at, reason, details"
_EVENT_COLS = "seq, deployment_id, kind, actor, at, details, prev_hash, hash"


def _loads(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"unparseable": str(raw)}
    return value if isinstance(value, dict) else {"value": value}


def _deployment(row: Row) -> Deployment:
    return Deployment(
        id=row[0],
        state=State(row[1]),
        description=row[2],
        created_by=row[3],
        created_at=row[4],
        updated_at=row[5],
        reason=row[6],
        details=_loads(row[7]),
    )


def _event(row: Row) -> Event:
    return Event(
        seq=int(row[0]),
        deployment_id=row[1],
        kind=row[2],
        actor=row[3],
        at=row[4],
        details=_loads(row[5]),
        prev_hash=row[6],
        hash=row[7],
    )


def _dumps(details: dict[str, Any]) -> str:
    return canonical_json(details).decode("utf-8")


class Store:
    """Deployments, servers, leases and the audit chain over one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def close(self) -> None:
        self.db.close()

    # -- audit -----------------------------------------------------------------------------

    def append_event(
        self,
        kind: str,
        actor: str,
        at: str,
        details: dict[str, Any] | None = None,
        deployment_id: str | None = None,
    ) -> Event:
        """Append one event to the chain; joins the caller's transaction if there is one."""
        details = dict(details or {})
        with self.db.transaction():
            head = self.db.query_one(
                "SELECT seq, hash FROM audit_head WHERE id = 1" + self.db.lock_clause()
            )
            prev_seq, prev_hash = (int(head[0]), head[1]) if head else (0, GENESIS_HASH)
            seq = prev_seq + 1
            digest = chain_hash(prev_hash, event_body(seq, deployment_id, kind, actor, at, details))
            self.db.execute(
                f"INSERT INTO events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, deployment_id, kind, actor, at, _dumps(details), prev_hash, digest),
            )
            self.db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
        return Event(seq, deployment_id, kind, actor, at, details, prev_hash, digest)

    def events(self, deployment_id: str | None = None, limit: int | None = None) -> list[Event]:
        """Events oldest first; with ``limit``, the newest ``limit`` of them."""
        where, params = ("WHERE deployment_id = ?", [deployment_id]) if deployment_id else ("", [])
        if limit is None:
            sql = f"SELECT {_EVENT_COLS} FROM events {where} ORDER BY seq"
            return [_event(r) for r in self.db.query(sql, params)]
        sql = f"SELECT {_EVENT_COLS} FROM events {where} ORDER BY seq DESC LIMIT ?"
        return [_event(r) for r in reversed(self.db.query(sql, [*params, limit]))]

    def _iter_events(self, batch: int = 5000) -> Iterator[Event]:
        after = 0
        while True:
            rows = self.db.query(
                f"SELECT {_EVENT_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, batch),
            )
            if not rows:
                return
            for r in rows:
                yield _event(r)
            after = int(rows[-1][0])

    def verify_audit(self, at: tuple[int, str] | None = None) -> ChainReport:
        head = self.db.query_one("SELECT seq, hash FROM audit_head WHERE id = 1")
        head_seq, head_hash = (int(head[0]), head[1]) if head else (0, GENESIS_HASH)
        return verify_chain(self._iter_events(), head_seq, head_hash, at)

    # -- deployments -----------------------------------------------------------------------

    def get(self, update_id: str) -> Deployment | None:
        row = self.db.query_one(
            f"SELECT {_DEPLOYMENT_COLS} FROM deployments WHERE id = ?", (update_id,)
        )
        return _deployment(row) if row else None

    def require(self, update_id: str) -> Deployment:
        dep = self.get(update_id)
        if dep is None:
            raise DeploymentNotFound(update_id)
        return dep

    def list(
        self,
        limit: int = 50,
        states: Sequence[State] | None = None,
        exclude_states: Sequence[State] | None = None,
    ) -> list[Deployment]:
        """Deployments, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if states:
            clauses.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(s.value for s in states)
        if exclude_states:
            clauses.append(f"state NOT IN ({', '.join('?' for _ in exclude_states)})")
            params.extend(s.value for s in exclude_states)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(
            f"SELECT {_DEPLOYMENT_COLS} FROM deployments {where} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [_deployment(r) for r in rows]

    def create(
        self,
        dep: Deployment,
        event_kind: str,
        event_details: dict[str, Any],
        take_lease: tuple[str, str, str] | None = None,
    ) -> Deployment:
        """Insert a new deployment with its first event (and lease ``(tier, owner, expires)``).

        Raises :class:`AlreadyExists` when the id is taken, :class:`LeaseHeld` when the tier
        is held by another live deployment.
        """
        with self.db.transaction():
            if self.get(dep.id) is not None:
                existing = self.require(dep.id)
                raise AlreadyExists(
                    f"update id {dep.id!r} already exists (state {existing.state.value}); "
                    "choose a new id",
                    update_id=dep.id,
                    state=existing.state.value,
                )
            # The release sequence is allocated here, in the same transaction: deployments
            # are never deleted, so the count only grows and two pushes never share one.
            row = self.db.query_one("SELECT COUNT(*) FROM deployments")
            sequence = int(row[0] if row else 0) + 1
            dep = replace(dep, details={**dep.details, "sequence": sequence})
            event_details = {**event_details, "sequence": sequence}
            self.db.execute(
                f"INSERT INTO deployments ({_DEPLOYMENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dep.id,
                    dep.state.value,
                    dep.description,
                    dep.created_by,
                    dep.created_at,
                    dep.updated_at,
                    dep.reason,
                    _dumps(dep.details),
                ),
            )
            if take_lease:
                tier, owner, expires_at = take_lease
                self._acquire_lease(tier, dep.id, owner, dep.created_at, expires_at)
            self.append_event(event_kind, dep.created_by, dep.created_at, event_details, dep.id)
        return self.require(dep.id)

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
    ) -> Deployment:
        """Compare-and-set ``expected -> target`` with its event, atomically.

        Raises :class:`Conflict` when the deployment is no longer in ``expected`` (another
        actor moved it first) and :class:`LeaseHeld` when the lease cannot be taken.
        """
        with self.db.transaction():
            current = self.require(update_id)
            details = dict(current.details)
            if details_update:
                details.update(details_update)
            changed = self.db.execute(
                "UPDATE deployments SET state = ?, updated_at = ?, reason = ?, details = ? "
                "WHERE id = ? AND state = ?",
                (target.value, at, reason, _dumps(details), update_id, expected.value),
            )
            if changed != 1:
                raise Conflict(
                    f"{update_id} changed while this request ran: it is now "
                    f"{current.state.value}, not {expected.value}; re-read it with "
                    f"'deploy status {update_id}' and try again",
                    update_id=update_id,
                    state=current.state.value,
                )
            if take_lease:
                tier, owner, expires_at = take_lease
                self._acquire_lease(tier, update_id, owner, at, expires_at)
            if release_lease:
                self.db.execute(
                    "DELETE FROM leases WHERE tier = ? AND deployment_id = ?",
                    (release_lease, update_id),
                )
            body = {"from": expected.value, "to": target.value, **(event_details or {})}
            if reason:
                body["reason"] = reason
            self.append_event(event_kind, actor, at, body, update_id)
        return self.require(update_id)

    def update_details(self, update_id: str, details_update: dict[str, Any], at: str) -> None:
        """Merge facts (bytes sent, release ids) into a deployment without changing state."""
        with self.db.transaction():
            current = self.require(update_id)
            details = {**current.details, **details_update}
            self.db.execute(
                "UPDATE deployments SET details = ?, updated_at = ? WHERE id = ?",
                (_dumps(details), at, update_id),
            )

    # -- leases ----------------------------------------------------------------------------

    def lease(self, tier: str) -> Lease | None:
        row = self.db.query_one(
            "SELECT tier, deployment_id, owner, acquired_at, expires_at FROM leases WHERE tier = ?",
            (tier,),
        )
        return Lease(*row) if row else None

    def leases(self) -> builtins.list[Lease]:
        rows = self.db.query(
            "SELECT tier, deployment_id, owner, acquired_at, expires_at FROM leases ORDER BY tier"
        )
        return [Lease(*r) for r in rows]

    def _acquire_lease(
        self, tier: str, update_id: str, owner: str, now: str, expires_at: str
    ) -> None:
        held = self.db.query_one(
            "SELECT tier, deployment_id, owner, acquired_at, expires_at FROM leases "
            "WHERE tier = ?" + self.db.lock_clause(),
            (tier,),
        )
        if held:
            lease = Lease(*held)
            if lease.deployment_id != update_id and lease.expires_at > now:
                row = self.db.query_one(
                    "SELECT state FROM deployments WHERE id = ?", (lease.deployment_id,)
                )
                state = row[0] if row is not None else None
                advice = (  # a push or a verify cut short cannot be cancelled: it is resumed
                    f"wait for it to end, or finish it with 'deploy push {lease.deployment_id} "
                    "DESCRIPTION' (a push resumes where it stopped; 'deploy configure' first "
                    "if the server was wrong)"
                    if state == "pushing"
                    else f"wait for it to end, or finish it with 'deploy verify "
                    f"{lease.deployment_id}' (a verify cut short runs again)"
                    if state == "verifying"
                    else "wait for it to end, or cancel it with "
                    f"'deploy cancel {lease.deployment_id}'"
                )
                raise LeaseHeld(
                    f"{tier.upper()} is held by deployment {lease.deployment_id!r} "
                    f"(owner {lease.owner}) until {lease.expires_at}; {advice}",
                    tier=tier,
                    holder=lease.deployment_id,
                    expires_at=lease.expires_at,
                )
            self.db.execute("DELETE FROM leases WHERE tier = ?", (tier,))
            if lease.deployment_id != update_id:
                self.append_event(
                    "lease.takeover",
                    owner,
                    now,
                    {
                        "tier": tier,
                        "from": lease.deployment_id,
                        "from_owner": lease.owner,
                        "expired_at": lease.expires_at,
                    },
                    update_id,
                )
        self.db.execute(
            "INSERT INTO leases (tier, deployment_id, owner, acquired_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (tier, update_id, owner, now, expires_at),
        )

    def renew_lease(self, tier: str, update_id: str, expires_at: str) -> bool:
        return (
            self.db.execute(
                "UPDATE leases SET expires_at = ? WHERE tier = ? AND deployment_id = ?",
                (expires_at, tier, update_id),
            )
            == 1
        )

    # -- servers ---------------------------------------------------------------------------

    def server(self, tier: str) -> Server | None:
        row = self.db.query_one(
            "SELECT tier, name, url, token_path, ca_cert, updated_at, updated_by FROM servers "
            "WHERE tier = ?",
            (tier,),
        )
        return Server(*row) if row else None

    def servers(self) -> builtins.list[Server]:
        rows = self.db.query(
            "SELECT tier, name, url, token_path, ca_cert, updated_at, updated_by FROM servers "
            "ORDER BY tier"
        )
        return [Server(*r) for r in rows]

    def set_server(self, server: Server, event_details: dict[str, Any]) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM servers WHERE tier = ?", (server.tier,))
            self.db.execute(
                "INSERT INTO servers (tier, name, url, token_path, ca_cert, updated_at, updated_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    server.tier,
                    server.name,
                    server.url,
                    server.token_path,
                    server.ca_cert,
                    server.updated_at,
                    server.updated_by,
                ),
            )
            self.append_event(
                "server.configured", server.updated_by, server.updated_at, event_details
            )

    # -- verification ----------------------------------------------------------------------

    def record_checks(
        self, update_id: str, results: builtins.list[dict[str, Any]], actor: str, at: str
    ) -> int:
        """Store one verify run's results, each with its ``check.<name>`` event; return the run."""
        with self.db.transaction():
            row = self.db.query_one(
                "SELECT MAX(run) FROM check_results WHERE deployment_id = ?", (update_id,)
            )
            run = int(row[0] or 0) + 1 if row else 1
            for r in results:
                self.db.execute(
                    "INSERT INTO check_results (deployment_id, run, name, title, status, summary,"
                    " details, duration_s, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        update_id,
                        run,
                        r["name"],
                        r["title"],
                        r["status"],
                        r["summary"],
                        _dumps(r.get("details") or {}),
                        float(r["duration_s"]),
                        at,
                    ),
                )
                self.append_event(
                    f"check.{r['name']}",
                    actor,
                    at,
                    {
                        "run": run,
                        "status": r["status"],
                        "summary": r["summary"],
                        "duration_s": r["duration_s"],
                    },
                    update_id,
                )
        return run

    def latest_checks(self, update_id: str) -> builtins.list[dict[str, Any]]:
        """The most recent result of each check of ``update_id`` (any run), in run order."""
        rows = self.db.query(
            "SELECT c.name, c.title, c.status, c.summary, c.details, c.duration_s, c.run, c.at "
            "FROM check_results c JOIN (SELECT name, MAX(run) AS run FROM check_results "
            "WHERE deployment_id = ? GROUP BY name) m ON c.name = m.name AND c.run = m.run "
            "WHERE c.deployment_id = ? ORDER BY c.run, c.name",
            (update_id, update_id),
        )
        return [
            {
                "name": r[0],
                "title": r[1],
                "status": r[2],
                "summary": r[3],
                "details": _loads(r[4]),
                "duration_s": float(r[5]),
                "run": int(r[6]),
                "at": r[7],
            }
            for r in rows
        ]

    def baselines(self, tier: str, runs: int = BASELINE_RUNS) -> dict[str, builtins.list[float]]:
        """The p95 of the last ``runs`` passed Performance Baseline runs, newest first, by
        path: what the next run is judged against (their median) and their spread."""
        rows = self.db.query(
            "SELECT path, p95_ms FROM baseline_runs WHERE tier = ? ORDER BY at DESC, "
            "deployment_id DESC",
            (tier,),
        )
        out: dict[str, builtins.list[float]] = {}
        for path, p95 in rows:
            kept = out.setdefault(str(path), [])
            if len(kept) < runs:
                kept.append(float(p95))
        return out

    def set_baseline(
        self, tier: str, path: str, p95_ms: float, update_id: str, actor: str, at: str
    ) -> None:
        """Add a passed run's p95 to the path's history (the oldest beyond what is judged
        against are kept: the audit trail names each)."""
        with self.db.transaction():
            old = self.baselines(tier).get(path)
            self.db.execute(
                "INSERT INTO baseline_runs (tier, path, p95_ms, deployment_id, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (tier, path, p95_ms, update_id, at),
            )
            self.append_event(
                "baseline.updated",
                actor,
                at,
                {
                    "tier": tier,
                    "path": path,
                    "p95_ms": p95_ms,
                    "previous_p95_ms": statistics.median(old) if old else None,
                    "median_p95_ms": statistics.median([p95_ms, *(old or [])][:BASELINE_RUNS]),
                },
                update_id,
            )

    # -- approvals -------------------------------------------------------------------------

    def add_approval(
        self,
        update_id: str,
        approver: str,
        at: str,
        comment: str | None,
        statement: dict[str, Any] | None = None,
    ) -> bool:
        """Record ``approver``'s approval (with its signed ``statement``, if any) and its
        event; ``False`` if they had approved. A new signed statement from one who had (of
        a newer verification, say: the old one no longer holds) replaces theirs, with an
        ``approval.renewed`` event."""
        with self.db.transaction():
            row = self.db.query_one(
                "SELECT statement FROM approvals WHERE deployment_id = ? AND approver = ?"
                + self.db.lock_clause(),
                (update_id, approver),
            )
            if row and (statement is None or row[0] == _dumps(statement)):
                return False
            if row:
                assert statement is not None  # else returned above
                self.db.execute(
                    "UPDATE approvals SET at = ?, comment = ?, statement = ? "
                    "WHERE deployment_id = ? AND approver = ?",
                    (at, comment, _dumps(statement), update_id, approver),
                )
            else:
                self.db.execute(
                    "INSERT INTO approvals (deployment_id, approver, at, comment, statement) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (update_id, approver, at, comment, _dumps(statement) if statement else None),
                )
            details: dict[str, Any] = {"comment": comment}
            if statement is not None:
                details["signed_by"] = [s.get("keyid") for s in statement.get("signatures", [])]
                details["statement_digest"] = sha256_hex(canonical_json(statement["signed"]))
            kind = "approval.renewed" if row else "approval.recorded"
            self.append_event(kind, approver, at, details, update_id)
        return True

    def atomic(self) -> AbstractContextManager[object]:
        """One write transaction; the store's own writes inside it join it."""
        return self.db.transaction()

    def approvals(self, update_id: str) -> builtins.list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT approver, at, comment FROM approvals WHERE deployment_id = ? ORDER BY at",
            (update_id,),
        )
        return [{"user": r[0], "at": r[1], "comment": r[2]} for r in rows]

    def signed_approvals(self) -> builtins.list[dict[str, Any]]:
        """Every signed approval statement in the store, oldest first."""
        rows = self.db.query(
            "SELECT statement FROM approvals WHERE statement IS NOT NULL ORDER BY at", ()
        )
        return [_loads(r[0]) for r in rows]

    def approval_statements(self, update_id: str) -> builtins.list[dict[str, Any]]:
        """The signed approval statements of ``update_id``, in the order they came."""
        rows = self.db.query(
            "SELECT statement FROM approvals WHERE deployment_id = ? AND statement IS NOT NULL "
            "ORDER BY at",
            (update_id,),
        )
        return [_loads(r[0]) for r in rows]
