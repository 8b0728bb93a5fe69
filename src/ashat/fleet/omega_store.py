"""OMEGA's fleet state in ``DIR/fleet.db`` (SQLite, WAL): who polls, what was approved,
which licenses are revoked, and every rollout with its targets.

::

    mainframes       one row per mainframe that polled with a readable license
    approvals        releases OMEGA counter-signed, in the order it did (the manifest is a file)
    approved_blobs   the blobs those releases name: all a license may download
    revocations      revoked license ids
    rollouts         install and rollback rollouts, their policy and progress
    rollout_targets  each rollout's fixed fleet: wave, status, failure reason

A thin layer of reads and writes; the decisions are :mod:`.rollout`'s and the sequencing is
:mod:`.omega`'s, which wraps several calls in :meth:`FleetStore.transaction`. One
connection, used from worker threads under a lock (calls are short: no fsync per commit in
WAL with ``synchronous=NORMAL``, and a crash loses at most the last commits, never the
database).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.fleet.license import License
from ashat.fleet.rollout import Kind, RolloutState, Target, TargetStatus

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mainframes (
    mainframe_id   TEXT PRIMARY KEY,
    license_id     TEXT NOT NULL,
    customer       TEXT NOT NULL,
    channels       TEXT NOT NULL,          -- JSON list
    expires_at     TEXT NOT NULL,          -- the license's, ISO 8601 UTC
    current        TEXT,                   -- the release it says it runs
    sequence       INTEGER,
    last_seen      TEXT NOT NULL,
    license_status TEXT NOT NULL           -- "ok" or the reason of the last refusal
);
CREATE TABLE IF NOT EXISTS approvals (
    n               INTEGER PRIMARY KEY AUTOINCREMENT,
    update_id       TEXT NOT NULL UNIQUE,
    sequence        INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    approval_keyid  TEXT NOT NULL,
    record          TEXT NOT NULL,         -- JSON: the approval record OMEGA signed
    signed_at       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approved_blobs (
    sha256 TEXT PRIMARY KEY                -- a blob of an approved release: mainframes may fetch it
);
CREATE TABLE IF NOT EXISTS revocations (
    license_id TEXT PRIMARY KEY,
    at         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    n                   INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id          TEXT NOT NULL UNIQUE,
    kind                TEXT NOT NULL,
    update_id           TEXT NOT NULL,
    from_update_id      TEXT,
    channel             TEXT NOT NULL,
    waves               TEXT NOT NULL,     -- JSON list of percents
    max_failure_ratio   REAL NOT NULL,
    wave_timeout_s      REAL NOT NULL,
    auto_rollback       INTEGER NOT NULL,
    state               TEXT NOT NULL,
    reason              TEXT,
    current_wave        INTEGER NOT NULL,
    wave_started_at     REAL NOT NULL,     -- seconds since the epoch
    rollback_rollout_id TEXT,
    parent_rollout_id   TEXT,
    created_at          TEXT NOT NULL,
    finished_at         TEXT
);
CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts (state);
CREATE TABLE IF NOT EXISTS rollout_targets (
    rollout_id   TEXT NOT NULL REFERENCES rollouts (rollout_id),
    mainframe_id TEXT NOT NULL,
    wave         INTEGER NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    reported_at  TEXT,
    PRIMARY KEY (rollout_id, mainframe_id)
);
CREATE INDEX IF NOT EXISTS targets_mainframe ON rollout_targets (mainframe_id, status);
"""


class FleetDbError(Exception):
    """``fleet.db`` cannot be opened or is of an unknown schema (raised at start-up)."""


@dataclass(frozen=True)
class Mainframe:
    mainframe_id: str
    license_id: str
    customer: str
    channels: tuple[str, ...]
    expires_at: str
    current: str | None
    sequence: int | None
    last_seen: str
    license_status: str


@dataclass(frozen=True)
class Approval:
    update_id: str
    sequence: int
    manifest_digest: str
    approval_keyid: str
    record: dict[str, Any]
    signed_at: str


@dataclass(frozen=True)
class Spec:
    """What a new rollout sends, to whom it may roll back, and its policy."""

    kind: Kind
    update_id: str
    from_update_id: str | None
    channel: str
    waves: tuple[int, ...]
    max_failure_ratio: float
    wave_timeout_s: float
    auto_rollback: bool
    parent_rollout_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Rollout(Spec):
    """A rollout OMEGA started: its :class:`Spec`, and how far it has gone."""

    rollout_id: str
    state: RolloutState
    reason: str | None
    current_wave: int
    wave_started_at: float
    rollback_rollout_id: str | None
    created_at: str
    finished_at: str | None


@dataclass(frozen=True)
class TargetRow:
    mainframe_id: str
    wave: int
    status: TargetStatus
    reason: str | None

    def target(self) -> Target:
        return Target(self.mainframe_id, self.wave, self.status)


def _mainframe(r: sqlite3.Row) -> Mainframe:
    return Mainframe(
        mainframe_id=r["mainframe_id"],
        license_id=r["license_id"],
        customer=r["customer"],
        channels=tuple(json.loads(r["channels"])),
        expires_at=r["expires_at"],
        current=r["current"],
        sequence=r["sequence"],
        last_seen=r["last_seen"],
        license_status=r["license_status"],
    )


def _rollout(r: sqlite3.Row) -> Rollout:
    return Rollout(
        rollout_id=r["rollout_id"],
        kind=Kind(r["kind"]),
        update_id=r["update_id"],
        from_update_id=r["from_update_id"],
        channel=r["channel"],
        waves=tuple(json.loads(r["waves"])),
        max_failure_ratio=r["max_failure_ratio"],
        wave_timeout_s=r["wave_timeout_s"],
        auto_rollback=bool(r["auto_rollback"]),
        state=RolloutState(r["state"]),
        reason=r["reason"],
        current_wave=r["current_wave"],
        wave_started_at=r["wave_started_at"],
        rollback_rollout_id=r["rollback_rollout_id"],
        parent_rollout_id=r["parent_rollout_id"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
    )


def _target(r: sqlite3.Row) -> TargetRow:
    return TargetRow(r["mainframe_id"], r["wave"], TargetStatus(r["status"]), r["reason"])


class FleetStore:
    def __init__(self, path: Path) -> None:
        """Open (creating) ``path``. Raises :class:`FleetDbError`."""
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise FleetDbError(f"{path} has fleet schema {version}, expected {SCHEMA_VERSION}")
            with self.transaction():
                self._create()
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise FleetDbError(f"cannot open fleet database {path}: {e}") from e

    def _create(self) -> None:
        # executescript() would COMMIT the transaction first; run the statements one by one.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together (or not at all); nests as one transaction."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
            return row

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- mainframes ----------------------------------------------------------------------------

    def register(
        self, lic: License, current: str | None, sequence: int | None, seen: str, status: str
    ) -> None:
        """Insert or refresh a mainframe from a poll with a readable license."""
        self._run(
            "INSERT INTO mainframes (mainframe_id, license_id, customer, channels, expires_at,"
            " current, sequence, last_seen, license_status) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (mainframe_id) DO UPDATE SET license_id=excluded.license_id,"
            " customer=excluded.customer, channels=excluded.channels,"
            " expires_at=excluded.expires_at, current=excluded.current,"
            " sequence=excluded.sequence, last_seen=excluded.last_seen,"
            " license_status=excluded.license_status",
            (
                lic.mainframe_id,
                lic.license_id,
                lic.customer,
                json.dumps(list(lic.channels)),
                lic.expires_at,
                current,
                sequence,
                seen,
                status,
            ),
        )

    def set_running(self, mainframe_id: str, update_id: str, sequence: int) -> None:
        self._run(
            "UPDATE mainframes SET current=?, sequence=? WHERE mainframe_id=?",
            (update_id, sequence, mainframe_id),
        )

    def mainframe(self, mainframe_id: str) -> Mainframe | None:
        row = self._one("SELECT * FROM mainframes WHERE mainframe_id=?", (mainframe_id,))
        return _mainframe(row) if row else None

    def mainframes(self) -> list[Mainframe]:
        return [_mainframe(r) for r in self._all("SELECT * FROM mainframes ORDER BY mainframe_id")]

    def running_count(self) -> int:
        """How many rollouts run."""
        row = self._one(
            "SELECT COUNT(*) FROM rollouts WHERE state=?", (RolloutState.RUNNING.value,)
        )
        return int(row[0]) if row else 0

    def max_sequence(self) -> int | None:
        """The fleet's sequence: the highest of the releases approved here that a registered
        mainframe says it runs. The ``sequence`` a mainframe claims is not believed: one
        license could otherwise claim 2**53 and block every later rollout (fast-forward)."""
        row = self._one(
            "SELECT MAX(a.sequence) FROM mainframes m JOIN approvals a ON a.update_id = m.current"
        )
        return None if row is None else row[0]

    # -- revocations ---------------------------------------------------------------------------

    def revoke(self, license_id: str, at: str) -> bool:
        """Record a revocation; False if it was revoked already."""
        return (
            self._run(
                "INSERT OR IGNORE INTO revocations (license_id, at) VALUES (?,?)", (license_id, at)
            )
            == 1
        )

    def revocations(self) -> list[dict[str, str]]:
        rows = self._all("SELECT license_id, at FROM revocations ORDER BY at, license_id")
        return [{"license_id": r["license_id"], "at": r["at"]} for r in rows]

    def revoked_ids(self) -> set[str]:
        return {r[0] for r in self._all("SELECT license_id FROM revocations")}

    def is_revoked(self, license_id: str) -> bool:
        return self._one("SELECT 1 FROM revocations WHERE license_id=?", (license_id,)) is not None

    # -- approvals -----------------------------------------------------------------------------

    def add_approval(self, a: Approval) -> None:
        self._run(
            "INSERT INTO approvals (update_id, sequence, manifest_digest, approval_keyid, record,"
            " signed_at) VALUES (?,?,?,?,?,?) ON CONFLICT (update_id) DO UPDATE SET"
            " sequence=excluded.sequence, manifest_digest=excluded.manifest_digest,"
            " approval_keyid=excluded.approval_keyid, record=excluded.record,"
            " signed_at=excluded.signed_at",
            (
                a.update_id,
                a.sequence,
                a.manifest_digest,
                a.approval_keyid,
                json.dumps(a.record, sort_keys=True),
                a.signed_at,
            ),
        )

    def add_approved_blobs(self, digests: Iterable[str]) -> None:
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO approved_blobs (sha256) VALUES (?)", [(d,) for d in digests]
            )

    def blob_approved(self, sha256: str) -> bool:
        return self._one("SELECT 1 FROM approved_blobs WHERE sha256=?", (sha256,)) is not None

    def approvals(self) -> list[Approval]:
        """Every approval, oldest first."""
        return [
            Approval(
                r["update_id"],
                r["sequence"],
                r["manifest_digest"],
                r["approval_keyid"],
                json.loads(r["record"]),
                r["signed_at"],
            )
            for r in self._all("SELECT * FROM approvals ORDER BY n")
        ]

    # -- rollouts ------------------------------------------------------------------------------

    def add_rollout(self, r: Rollout, targets: Mapping[str, tuple[int, TargetStatus]]) -> None:
        """Insert a rollout and its fleet (mainframe id -> (wave, status))."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO rollouts (rollout_id, kind, update_id, from_update_id, channel,"
                " waves, max_failure_ratio, wave_timeout_s, auto_rollback, state, reason,"
                " current_wave, wave_started_at, rollback_rollout_id, parent_rollout_id,"
                " created_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r.rollout_id,
                    r.kind.value,
                    r.update_id,
                    r.from_update_id,
                    r.channel,
                    json.dumps(list(r.waves)),
                    r.max_failure_ratio,
                    r.wave_timeout_s,
                    int(r.auto_rollback),
                    r.state.value,
                    r.reason,
                    r.current_wave,
                    r.wave_started_at,
                    r.rollback_rollout_id,
                    r.parent_rollout_id,
                    r.created_at,
                    r.finished_at,
                ),
            )
            self._db.executemany(
                "INSERT INTO rollout_targets (rollout_id, mainframe_id, wave, status)"
                " VALUES (?,?,?,?)",
                [(r.rollout_id, mid, w, s.value) for mid, (w, s) in sorted(targets.items())],
            )

    def rollout(self, rollout_id: str) -> Rollout | None:
        row = self._one("SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,))
        return _rollout(row) if row else None

    def rollouts(self, state: RolloutState | None = None) -> list[Rollout]:
        """Rollouts (of ``state``), oldest first."""
        if state is None:
            rows = self._all("SELECT * FROM rollouts ORDER BY n")
        else:
            rows = self._all("SELECT * FROM rollouts WHERE state=? ORDER BY n", (state.value,))
        return [_rollout(r) for r in rows]

    def recent_rollouts(self, finished: int) -> list[Rollout]:
        """The running rollouts and the ``finished`` newest of the others, oldest first."""
        rows = self._all(
            "SELECT * FROM rollouts WHERE state=? OR n IN (SELECT n FROM rollouts"
            " WHERE state!=? ORDER BY n DESC LIMIT ?) ORDER BY n",
            (RolloutState.RUNNING.value, RolloutState.RUNNING.value, finished),
        )
        return [_rollout(r) for r in rows]

    def latest_rollout(self) -> Rollout | None:
        row = self._one("SELECT * FROM rollouts ORDER BY n DESC LIMIT 1")
        return _rollout(row) if row else None

    def finish(self, rollout_id: str, state: RolloutState, reason: str | None, at: str) -> None:
        self._run(
            "UPDATE rollouts SET state=?, reason=?, finished_at=? WHERE rollout_id=?",
            (state.value, reason, at, rollout_id),
        )

    def set_rollback(self, rollout_id: str, rollback_rollout_id: str) -> None:
        self._run(
            "UPDATE rollouts SET rollback_rollout_id=? WHERE rollout_id=?",
            (rollback_rollout_id, rollout_id),
        )

    def start_wave(self, rollout_id: str, wave: int, at: float) -> list[str]:
        """Make ``wave`` current and its waiting targets pending; return those."""
        with self.transaction():
            self._db.execute(
                "UPDATE rollouts SET current_wave=?, wave_started_at=? WHERE rollout_id=?",
                (wave, at, rollout_id),
            )
            rows = self._db.execute(
                "SELECT mainframe_id FROM rollout_targets WHERE rollout_id=? AND status=?"
                " AND wave<=?",
                (rollout_id, TargetStatus.WAITING.value, wave),
            ).fetchall()
            self._db.execute(
                "UPDATE rollout_targets SET status=? WHERE rollout_id=? AND status=? AND wave<=?",
                (TargetStatus.PENDING.value, rollout_id, TargetStatus.WAITING.value, wave),
            )
        return [r[0] for r in rows]

    # -- targets -------------------------------------------------------------------------------

    def targets(self, rollout_id: str) -> list[TargetRow]:
        rows = self._all(
            "SELECT * FROM rollout_targets WHERE rollout_id=? ORDER BY mainframe_id", (rollout_id,)
        )
        return [_target(r) for r in rows]

    def target(self, rollout_id: str, mainframe_id: str) -> TargetRow | None:
        row = self._one(
            "SELECT * FROM rollout_targets WHERE rollout_id=? AND mainframe_id=?",
            (rollout_id, mainframe_id),
        )
        return _target(row) if row else None

    def add_target(
        self, rollout_id: str, mainframe_id: str, wave: int, status: TargetStatus
    ) -> None:
        self._run(
            "INSERT OR IGNORE INTO rollout_targets (rollout_id, mainframe_id, wave, status)"
            " VALUES (?,?,?,?)",
            (rollout_id, mainframe_id, wave, status.value),
        )

    def set_target(
        self,
        rollout_id: str,
        mainframe_id: str,
        status: TargetStatus,
        reason: str | None,
        at: str,
    ) -> None:
        self._run(
            "UPDATE rollout_targets SET status=?, reason=?, reported_at=?"
            " WHERE rollout_id=? AND mainframe_id=?",
            (status.value, reason, at, rollout_id, mainframe_id),
        )

    def pending_for(self, mainframe_id: str) -> tuple[Rollout, TargetRow] | None:
        """The running rollout waiting for ``mainframe_id``, and its target row, if any."""
        row = self._one(
            "SELECT r.*, t.mainframe_id AS t_mid, t.wave AS t_wave, t.status AS t_status,"
            " t.reason AS t_reason FROM rollouts r JOIN rollout_targets t USING (rollout_id)"
            " WHERE t.mainframe_id=? AND t.status=? AND r.state=? ORDER BY r.n DESC LIMIT 1",
            (mainframe_id, TargetStatus.PENDING.value, RolloutState.RUNNING.value),
        )
        if row is None:
            return None
        target = TargetRow(
            row["t_mid"], row["t_wave"], TargetStatus(row["t_status"]), row["t_reason"]
        )
        return _rollout(row), target
