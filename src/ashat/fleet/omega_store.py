"""OMEGA's fleet state: who polls, what was approved, which licenses are revoked, and every
rollout with its targets — in ``DIR/fleet.db`` (SQLite, WAL) or in PostgreSQL (``--db``),
which several OMEGA replicas then share.

::

    mainframes       one row per mainframe that polled with a readable license
    approvals        releases OMEGA counter-signed, in order, with the manifest it signed
    approved_blobs   the blobs those releases name: all a license may download
    mirrored_blobs   those copied to an S3 mirror (fleet/s3_copy.py)
    mirrored_packs   release packs copied there too
    revocations      revoked license ids
    rollouts         install and rollback rollouts, their policy and progress
    rollout_targets  each rollout's fixed fleet: wave, status, failure reason
    rollout_events   what the controller did: each wave started, each end, and by whom

A thin layer of reads and writes in portable SQL over :class:`~.fleet_db.FleetDatabase`
(which holds the schema and the dialect differences); the decisions are :mod:`.rollout`'s
and the sequencing is :mod:`.omega`'s, which wraps several calls in
:meth:`FleetStore.exclusive` so that of all replicas one at a time changes rollouts. One
connection per process, used from worker threads under its lock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ashat.bake import NO_BAKE, BakePolicy, Evaluation
from ashat.fleet.fleet_db import FleetDatabase
from ashat.fleet.license import License
from ashat.fleet.rollout import Kind, RolloutState, Target, TargetStatus


@dataclass(frozen=True)
class RegisteredMainframe:
    mainframe_id: str
    license_id: str
    customer: str
    channels: tuple[str, ...]
    expires_at: str
    current: str | None
    sequence: int | None
    last_seen: str
    license_status: str
    app_status: str | None = None  # none, healthy, unhealthy, restarting, crash_loop
    app_restarts: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # license labels, inventory (a poll's)
    hold: str | None = None  # why its last poll said it may not switch now (window, lock)


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
    pause_after: tuple[int, ...] = ()  # waves after which it waits for an operator
    bake: BakePolicy = NO_BAKE  # bake time and analysis after each wave (install only)
    selector: str | None = None  # the mainframes it is for (ashat/labels.py); None: all
    rings: tuple[str, ...] = ()  # selectors of its leading waves, one each, in order


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


Row = Mapping[str, Any]

MAINFRAME_COLUMNS = (
    "mainframe_id", "license_id", "customer", "channels", "expires_at", "current", "sequence",
    "last_seen", "license_status", "app_status", "app_restarts", "facts", "hold",
)  # fmt: skip
ROLLOUT_COLUMNS = (
    "rollout_id", "kind", "update_id", "from_update_id", "channel", "waves",
    "max_failure_ratio", "wave_timeout_s", "auto_rollback", "state", "reason", "current_wave",
    "wave_started_at", "rollback_rollout_id", "parent_rollout_id", "created_at", "finished_at",
    "selector", "rings",
)  # fmt: skip
TARGET_COLUMNS = ("mainframe_id", "wave", "status", "reason")
INSERT_CHUNK = 200  # rows per multi-row INSERT


def _select(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + c for c in columns)


def _mainframe(r: Row) -> RegisteredMainframe:
    return RegisteredMainframe(
        mainframe_id=r["mainframe_id"],
        license_id=r["license_id"],
        customer=r["customer"],
        channels=tuple(json.loads(r["channels"])),
        expires_at=r["expires_at"],
        current=r["current"],
        sequence=r["sequence"],
        last_seen=r["last_seen"],
        license_status=r["license_status"],
        app_status=r["app_status"],
        app_restarts=r["app_restarts"],
        facts=json.loads(r["facts"]) if r["facts"] else {},
        hold=r["hold"],
    )


def _rollout(r: Row) -> Rollout:
    return Rollout(
        rollout_id=r["rollout_id"],
        kind=Kind(r["kind"]),
        update_id=r["update_id"],
        from_update_id=r["from_update_id"],
        channel=r["channel"],
        waves=tuple(json.loads(r["waves"])),
        max_failure_ratio=float(r["max_failure_ratio"]),
        wave_timeout_s=float(r["wave_timeout_s"]),
        auto_rollback=bool(r["auto_rollback"]),
        state=RolloutState(r["state"]),
        reason=r["reason"],
        current_wave=r["current_wave"],
        wave_started_at=float(r["wave_started_at"]),
        rollback_rollout_id=r["rollback_rollout_id"],
        parent_rollout_id=r["parent_rollout_id"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
        selector=r["selector"],
        rings=tuple(json.loads(r["rings"])) if r["rings"] else (),
    )


def _target(r: Row) -> TargetRow:
    return TargetRow(r["mainframe_id"], r["wave"], TargetStatus(r["status"]), r["reason"])


_ROLLOUTS = f"SELECT {_select(ROLLOUT_COLUMNS)} FROM rollouts"
_TARGETS = f"SELECT {_select(TARGET_COLUMNS)} FROM rollout_targets"


class FleetStore:
    def __init__(self, url: str, replica: str = "omega") -> None:
        """Open (creating) the fleet database at ``url`` (``sqlite:///PATH`` or
        ``postgresql://…``); ``replica`` names this process in ``rollout_events``.

        Raises :class:`~ashat.store.db.StoreError` (exit 2, kind ``store``).
        """
        self.replica = replica
        self.db = FleetDatabase(url)

    def close(self) -> None:
        self.db.close()

    @property
    def statements(self) -> int:
        """Statements sent to the database so far (round-trips)."""
        return self.db.statements

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together (or not at all); nests as one transaction."""
        with self.db.transaction():
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A transaction that no other process (replica) changing rollouts runs beside:
        what it reads stays true until it commits."""
        with self.db.transaction():
            self.db.lock_fleet()
            yield

    def _all(self, sql: str, args: Sequence[Any] = (), columns: Sequence[str] = ()) -> list[Row]:
        return [dict(zip(columns, r, strict=True)) for r in self.db.query(sql, args)]

    def _one(self, sql: str, args: Sequence[Any] = (), columns: Sequence[str] = ()) -> Row | None:
        rows = self._all(sql, args, columns)
        return rows[0] if rows else None

    def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.db.query_one(sql, args)
        return None if row is None else row[0]

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, args)

    def _insert_many(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
        """``head VALUES (…), (…) tail`` in chunks, inside one transaction."""
        if not rows:
            return
        width = len(rows[0])
        one = "(" + ",".join("?" * width) + ")"
        with self.transaction():
            for i in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[i : i + INSERT_CHUNK]
                values = ",".join([one] * len(chunk))
                self._run(f"{head} VALUES {values}{tail}", [v for r in chunk for v in r])

    # -- mainframes ----------------------------------------------------------------------------

    def register(
        self,
        lic: License,
        current: str | None,
        sequence: int | None,
        seen: str,
        status: str,
        app: tuple[str | None, int | None] = (None, None),
        hold: str | None = None,
        now: float | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert or refresh a mainframe from a poll with a readable license (``app``: what
        it said of its app, kept when it says nothing; ``hold``: why it may not switch now,
        fleet/windows.py; ``facts``: its license's labels and its inventory, kept when it
        says nothing)."""
        self._run(
            "INSERT INTO mainframes (mainframe_id, license_id, customer, channels, expires_at,"
            " current, sequence, last_seen, license_status, app_status, app_restarts, hold,"
            " facts, hold_released_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)"
            " ON CONFLICT (mainframe_id) DO UPDATE SET license_id=excluded.license_id,"
            " customer=excluded.customer, channels=excluded.channels,"
            " expires_at=excluded.expires_at, current=excluded.current,"
            " sequence=excluded.sequence, last_seen=excluded.last_seen,"
            " license_status=excluded.license_status,"
            " app_status=COALESCE(excluded.app_status, mainframes.app_status),"
            " app_restarts=COALESCE(excluded.app_restarts, mainframes.app_restarts),"
            " hold_released_at=CASE WHEN excluded.hold IS NULL AND mainframes.hold IS NOT NULL"
            " THEN ? ELSE mainframes.hold_released_at END,"
            " hold=excluded.hold, facts=COALESCE(excluded.facts, mainframes.facts)",
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
                *app,
                hold,
                json.dumps(dict(facts), sort_keys=True) if facts is not None else None,
                now,
            ),
        )

    # -- labels and pins (ashat/labels.py) ---------------------------------------------------

    def set_labels(
        self, mainframe_id: str, labels: Mapping[str, str], remove: Iterable[str]
    ) -> None:
        with self.transaction():
            for key in remove:
                self._run(
                    "DELETE FROM mainframe_labels WHERE mainframe_id=? AND label=?",
                    (mainframe_id, key),
                )
            for key, value in labels.items():
                self._run(
                    "INSERT INTO mainframe_labels (mainframe_id, label, value) VALUES (?,?,?)"
                    " ON CONFLICT (mainframe_id, label) DO UPDATE SET value=excluded.value",
                    (mainframe_id, key, value),
                )
            self.bump_rules()

    def labels(self) -> dict[str, dict[str, str]]:
        """The labels set on OMEGA: mainframe id -> key -> value."""
        out: dict[str, dict[str, str]] = {}
        for mid, key, value in self.db.query(
            "SELECT mainframe_id, label, value FROM mainframe_labels ORDER BY mainframe_id, label"
        ):
            out.setdefault(str(mid), {})[str(key)] = str(value)
        return out

    def pin(self, mainframe_id: str, update_id: str | None, at: str) -> None:
        """Hold ``mainframe_id`` on ``update_id`` (None: unpin)."""
        self.bump_rules()
        if update_id is None:
            self._run("DELETE FROM mainframe_pins WHERE mainframe_id=?", (mainframe_id,))
            return
        self._run(
            "INSERT INTO mainframe_pins (mainframe_id, update_id, pinned_at) VALUES (?,?,?)"
            " ON CONFLICT (mainframe_id) DO UPDATE SET update_id=excluded.update_id,"
            " pinned_at=excluded.pinned_at",
            (mainframe_id, update_id, at),
        )

    def unpin_release(self, update_id: str) -> list[str]:
        """Release every mainframe pinned to ``update_id``; which they were."""
        rows = self.db.query(
            "SELECT mainframe_id FROM mainframe_pins WHERE update_id=?", (update_id,)
        )
        if rows:
            self._run("DELETE FROM mainframe_pins WHERE update_id=?", (update_id,))
            self.bump_rules()
        return sorted(str(r[0]) for r in rows)

    def pins(self) -> dict[str, str]:
        """Mainframe id -> the release it is pinned to."""
        rows = self.db.query("SELECT mainframe_id, update_id FROM mainframe_pins")
        return {str(mid): str(update_id) for mid, update_id in rows}

    def held_pending(
        self,
        rollout_id: str,
        up_to_wave: int,
        seen_since: str,
        released_since: float | None = None,
    ) -> dict[str, str]:
        """Pending targets (waves up to ``up_to_wave``) whose mainframe holds, as its last
        poll (at ``seen_since`` or later: one gone silent holds nothing) said: id -> why;
        with ``released_since``, also those released from a hold since then ("released":
        their own timeout runs from their release)."""
        rows = self.db.query(
            "SELECT t.mainframe_id, COALESCE(m.hold, 'released') FROM rollout_targets t"
            " JOIN mainframes m ON m.mainframe_id = t.mainframe_id"
            " WHERE t.rollout_id=? AND t.wave<=? AND t.status=?"
            " AND ((m.hold IS NOT NULL AND m.last_seen >= ?) OR m.hold_released_at >= ?)",
            (
                rollout_id, up_to_wave, TargetStatus.PENDING.value, seen_since,
                float("inf") if released_since is None else released_since,
            ),
        )  # fmt: skip
        return {str(mid): str(why) for mid, why in rows}

    def installed_in_running(self, mainframe_id: str, update_id: str) -> Rollout | None:
        """The running install rollout of ``update_id`` this mainframe counts as installed
        in, if any."""
        row = self._one(
            f"SELECT {_select(ROLLOUT_COLUMNS, 'r.')} FROM rollouts r JOIN rollout_targets t"
            " ON t.rollout_id = r.rollout_id WHERE t.mainframe_id=? AND t.status=?"
            " AND r.state=? AND r.kind=? AND r.update_id=? ORDER BY r.n DESC LIMIT 1",
            (
                mainframe_id,
                TargetStatus.INSTALLED.value,
                RolloutState.RUNNING.value,
                Kind.INSTALL.value,
                update_id,
            ),
            ROLLOUT_COLUMNS,
        )
        return _rollout(row) if row else None

    def set_running(self, mainframe_id: str, update_id: str, sequence: int) -> None:
        self._run(
            "UPDATE mainframes SET current=?, sequence=? WHERE mainframe_id=?",
            (update_id, sequence, mainframe_id),
        )

    def mainframe(self, mainframe_id: str) -> RegisteredMainframe | None:
        row = self._one(
            f"SELECT {_select(MAINFRAME_COLUMNS)} FROM mainframes WHERE mainframe_id=?",
            (mainframe_id,),
            MAINFRAME_COLUMNS,
        )
        return _mainframe(row) if row else None

    def mainframes(self) -> list[RegisteredMainframe]:
        rows = self._all(
            f"SELECT {_select(MAINFRAME_COLUMNS)} FROM mainframes ORDER BY mainframe_id",
            (),
            MAINFRAME_COLUMNS,
        )
        return [_mainframe(r) for r in rows]

    def running_count(self) -> int:
        """How many rollouts run."""
        n = self._scalar(
            "SELECT COUNT(*) FROM rollouts WHERE state=?", (RolloutState.RUNNING.value,)
        )
        return int(n or 0)

    def max_sequence(self) -> int | None:
        """The fleet's sequence: the highest of the releases approved here that a registered
        mainframe says it runs. The ``sequence`` a mainframe claims is not believed: one
        license could otherwise claim 2**53 and block every later rollout (fast-forward)."""
        n = self._scalar(
            "SELECT MAX(a.sequence) FROM mainframes m JOIN approvals a ON a.update_id = m.current"
        )
        return None if n is None else int(n)

    # -- revocations ---------------------------------------------------------------------------

    def revoke(self, license_id: str, at: str) -> bool:
        """Record a revocation; False if it was revoked already."""
        return (
            self._run(
                "INSERT INTO revocations (license_id, at) VALUES (?,?) ON CONFLICT DO NOTHING",
                (license_id, at),
            )
            == 1
        )

    def revocations(self) -> list[dict[str, str]]:
        cols = ("license_id", "at")
        rows = self._all("SELECT license_id, at FROM revocations ORDER BY at, license_id", (), cols)
        return [{"license_id": r["license_id"], "at": r["at"]} for r in rows]

    def revoked_ids(self) -> set[str]:
        return {r[0] for r in self.db.query("SELECT license_id FROM revocations")}

    def is_revoked(self, license_id: str) -> bool:
        return (
            self._scalar("SELECT 1 FROM revocations WHERE license_id=?", (license_id,)) is not None
        )

    # -- approvals -----------------------------------------------------------------------------

    def add_approval(self, a: Approval, manifest: str) -> None:
        """Record an approval and the doubly signed manifest text every replica serves."""
        self._run(
            "INSERT INTO approvals (update_id, sequence, manifest_digest, approval_keyid, record,"
            " signed_at, manifest) VALUES (?,?,?,?,?,?,?) ON CONFLICT (update_id) DO UPDATE SET"
            " sequence=excluded.sequence, manifest_digest=excluded.manifest_digest,"
            " approval_keyid=excluded.approval_keyid, record=excluded.record,"
            " signed_at=excluded.signed_at, manifest=excluded.manifest",
            (
                a.update_id,
                a.sequence,
                a.manifest_digest,
                a.approval_keyid,
                json.dumps(a.record, sort_keys=True),
                a.signed_at,
                manifest,
            ),
        )

    def approved_manifest(self, update_id: str) -> str | None:
        """The doubly signed manifest of an approval; None if none (or recorded before the
        database kept it: see :mod:`.approvals`)."""
        text = self._scalar("SELECT manifest FROM approvals WHERE update_id=?", (update_id,))
        return None if text is None else str(text)

    def add_approved_blobs(self, digests: Iterable[str]) -> None:
        self._insert_many(
            "INSERT INTO approved_blobs (sha256)",
            [(d,) for d in digests],
            " ON CONFLICT DO NOTHING",
        )

    def blob_approved(self, sha256: str) -> bool:
        return self._scalar("SELECT 1 FROM approved_blobs WHERE sha256=?", (sha256,)) is not None

    def unmirrored_blobs(self, mirror: str, after: str, limit: int) -> list[str]:
        """Approved blobs not yet copied to ``mirror``, in digest order after ``after`` (at
        most ``limit``: a pass pages through them)."""
        rows = self.db.query(
            "SELECT a.sha256 FROM approved_blobs a LEFT JOIN mirrored_blobs m"
            " ON m.mirror=? AND m.sha256=a.sha256 WHERE m.sha256 IS NULL AND a.sha256 > ?"
            " ORDER BY a.sha256 LIMIT ?",
            (mirror, after, limit),
        )
        return [str(r[0]) for r in rows]

    def add_mirrored_blobs(self, mirror: str, digests: Iterable[str]) -> None:
        self._insert_many(
            "INSERT INTO mirrored_blobs (mirror, sha256)",
            [(mirror, d) for d in digests],
            " ON CONFLICT DO NOTHING",
        )

    def forget_mirrored_blob(self, mirror: str, sha256: str) -> None:
        self._run("DELETE FROM mirrored_blobs WHERE mirror=? AND sha256=?", (mirror, sha256))

    def blob_mirrored(self, mirror: str, sha256: str) -> bool:
        return (
            self._scalar(
                "SELECT 1 FROM mirrored_blobs WHERE mirror=? AND sha256=?", (mirror, sha256)
            )
            is not None
        )

    def add_mirrored_pack(self, mirror: str, digest: str) -> None:
        self._run(
            "INSERT INTO mirrored_packs (mirror, digest) VALUES (?,?) ON CONFLICT DO NOTHING",
            (mirror, digest),
        )

    def forget_mirrored_pack(self, mirror: str, digest: str) -> None:
        self._run("DELETE FROM mirrored_packs WHERE mirror=? AND digest=?", (mirror, digest))

    def pack_mirrored(self, mirror: str, digest: str) -> bool:
        return (
            self._scalar(
                "SELECT 1 FROM mirrored_packs WHERE mirror=? AND digest=?", (mirror, digest)
            )
            is not None
        )

    def approvals(self) -> list[Approval]:
        """Every approval, oldest first."""
        cols = ("update_id", "sequence", "manifest_digest", "approval_keyid", "record", "signed_at")
        return [
            Approval(
                r["update_id"],
                r["sequence"],
                r["manifest_digest"],
                r["approval_keyid"],
                json.loads(r["record"]),
                r["signed_at"],
            )
            for r in self._all(f"SELECT {_select(cols)} FROM approvals ORDER BY n", (), cols)
        ]

    def latest_approvals(self, count: int) -> list[tuple[str, str]]:
        """(update id, manifest digest) of the ``count`` releases approved last, newest first."""
        rows = self._all(
            "SELECT update_id, manifest_digest FROM approvals ORDER BY n DESC LIMIT ?",
            (count,),
            ("update_id", "manifest_digest"),
        )
        return [(r["update_id"], r["manifest_digest"]) for r in rows]

    # -- rollouts ------------------------------------------------------------------------------

    def add_rollout(self, r: Rollout, targets: Mapping[str, tuple[int, TargetStatus]]) -> None:
        """Insert a rollout and its fleet (mainframe id -> (wave, status))."""
        with self.transaction():
            self._run(
                f"INSERT INTO rollouts ({_select(ROLLOUT_COLUMNS)})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    r.selector,
                    json.dumps(list(r.rings)) if r.rings else None,
                ),
            )
            self._insert_many(
                "INSERT INTO rollout_targets (rollout_id, mainframe_id, wave, status)",
                [(r.rollout_id, mid, w, s.value) for mid, (w, s) in sorted(targets.items())],
            )

    def rollout(self, rollout_id: str) -> Rollout | None:
        row = self._one(f"{_ROLLOUTS} WHERE rollout_id=?", (rollout_id,), ROLLOUT_COLUMNS)
        return _rollout(row) if row else None

    def rollouts(self, state: RolloutState | None = None) -> list[Rollout]:
        """Rollouts (of ``state``), oldest first."""
        if state is None:
            rows = self._all(f"{_ROLLOUTS} ORDER BY n", (), ROLLOUT_COLUMNS)
        else:
            rows = self._all(
                f"{_ROLLOUTS} WHERE state=? ORDER BY n", (state.value,), ROLLOUT_COLUMNS
            )
        return [_rollout(r) for r in rows]

    def rollbacks_from(self, update_id: str) -> list[Rollout]:
        """The rollback rollouts away from ``update_id``, newest first: a release withdrawn
        (no pin may hold it), and the automatic one OMEGA's own app follows."""
        rows = self._all(
            f"{_ROLLOUTS} WHERE kind=? AND from_update_id=? ORDER BY n DESC",
            ("rollback", update_id),
            ROLLOUT_COLUMNS,
        )
        return [_rollout(r) for r in rows]

    def withdrawn(self, update_id: str | None) -> bool:
        """Whether a rollback rollout went away from ``update_id`` here: a release no
        rollout, rollback or pin sends again."""
        return update_id is not None and bool(
            self.db.query_one(
                "SELECT 1 FROM rollouts WHERE kind=? AND from_update_id=? LIMIT 1",
                ("rollback", update_id),
            )
        )

    def rollouts_on(self, channels: Collection[str], limit: int = 200) -> list[Rollout]:
        """The newest ``limit`` rollouts on any of ``channels``, newest first."""
        if not channels:
            return []
        marks = ",".join("?" * len(channels))
        rows = self._all(
            f"{_ROLLOUTS} WHERE channel IN ({marks}) ORDER BY n DESC LIMIT ?",
            (*sorted(channels), limit),
            ROLLOUT_COLUMNS,
        )
        return [_rollout(r) for r in rows]

    def labels_of(self, mainframe_id: str) -> dict[str, str]:
        """The labels set on OMEGA for one mainframe."""
        rows = self.db.query(
            "SELECT label, value FROM mainframe_labels WHERE mainframe_id=?", (mainframe_id,)
        )
        return {str(k): str(v) for k, v in rows}

    def rules_version(self) -> int:
        """Bumped by every change of labels and pins (:meth:`bump_rules`)."""
        value = self._scalar("SELECT version FROM fleet_rules WHERE id=1")
        return int(value or 0)

    def bump_rules(self) -> None:
        self._run(
            "INSERT INTO fleet_rules (id, version) VALUES (1, 1)"
            " ON CONFLICT (id) DO UPDATE SET version = fleet_rules.version + 1"
        )

    def rules_for(self, mainframe_id: str) -> tuple[str | None, dict[str, str]]:
        """A mainframe's pin (or None) and the labels set on OMEGA for it: one query."""
        rows = self.db.query(
            "SELECT 'pin', update_id, NULL FROM mainframe_pins WHERE mainframe_id=?"
            " UNION ALL SELECT 'label', label, value FROM mainframe_labels WHERE mainframe_id=?",
            (mainframe_id, mainframe_id),
        )
        pin, labels = None, {}
        for kind, key, value in rows:
            if kind == "pin":
                pin = str(key)
            else:
                labels[str(key)] = str(value)
        return pin, labels

    def drop_unfinished_targets(self, mainframe_id: str, keep_update_id: str) -> list[str]:
        """Take ``mainframe_id`` out of the running rollouts of other releases than
        ``keep_update_id`` that still wait for it (a pin); the rollouts it left."""
        rows = self.db.query(
            "SELECT r.rollout_id FROM rollouts r JOIN rollout_targets t"
            " ON t.rollout_id = r.rollout_id WHERE t.mainframe_id=? AND r.state=?"
            " AND r.update_id<>? AND t.status IN (?,?)",
            (
                mainframe_id, RolloutState.RUNNING.value, keep_update_id,
                TargetStatus.WAITING.value, TargetStatus.PENDING.value,
            ),
        )  # fmt: skip
        left = [str(r[0]) for r in rows]
        for rollout_id in left:
            self._run(
                "DELETE FROM rollout_targets WHERE rollout_id=? AND mainframe_id=?",
                (rollout_id, mainframe_id),
            )
        return left

    def recent_rollouts(self, finished: int) -> list[Rollout]:
        """The running rollouts and the ``finished`` newest of the others, oldest first."""
        rows = self._all(
            f"{_ROLLOUTS} WHERE state=? OR n IN (SELECT n FROM rollouts"
            " WHERE state!=? ORDER BY n DESC LIMIT ?) ORDER BY n",
            (RolloutState.RUNNING.value, RolloutState.RUNNING.value, finished),
            ROLLOUT_COLUMNS,
        )
        return [_rollout(r) for r in rows]

    def latest_rollout(self) -> Rollout | None:
        row = self._one(f"{_ROLLOUTS} ORDER BY n DESC LIMIT 1", (), ROLLOUT_COLUMNS)
        return _rollout(row) if row else None

    def finish(self, rollout_id: str, state: RolloutState, reason: str | None, at: str) -> None:
        with self.transaction():
            self._run(
                "UPDATE rollouts SET state=?, reason=?, finished_at=? WHERE rollout_id=?",
                (state.value, reason, at, rollout_id),
            )
            self.add_event(rollout_id, state.value, None, at)

    def set_rollback(self, rollout_id: str, rollback_rollout_id: str) -> None:
        self._run(
            "UPDATE rollouts SET rollback_rollout_id=? WHERE rollout_id=?",
            (rollback_rollout_id, rollout_id),
        )

    def start_wave(self, rollout_id: str, wave: int, at: float, at_iso: str) -> list[str]:
        """Make ``wave`` current and its waiting targets pending; return those."""
        with self.transaction():
            self._run(
                "UPDATE rollouts SET current_wave=?, wave_started_at=? WHERE rollout_id=?",
                (wave, at, rollout_id),
            )
            rows = self.db.query(
                "SELECT mainframe_id FROM rollout_targets WHERE rollout_id=? AND status=?"
                " AND wave<=?",
                (rollout_id, TargetStatus.WAITING.value, wave),
            )
            self._run(
                "UPDATE rollout_targets SET status=? WHERE rollout_id=? AND status=? AND wave<=?",
                (TargetStatus.PENDING.value, rollout_id, TargetStatus.WAITING.value, wave),
            )
            self.add_event(rollout_id, "wave_started", wave, at_iso)
        return [r[0] for r in rows]

    def pause(self, rollout_id: str, at: str, reason: str | None) -> bool:
        """Mark a rollout paused; False if it already was."""
        if self.paused(rollout_id) is not None:
            return False
        self._run(
            "INSERT INTO rollout_pauses (rollout_id, paused_at, reason) VALUES (?,?,?)",
            (rollout_id, at, reason),
        )
        self.add_event(rollout_id, "paused", None, at)
        return True

    def resume(self, rollout_id: str, at: str, event: bool = True) -> bool:
        """Unmark it (with a ``resumed`` event, unless ``event`` is False: an abort);
        False if it was not paused."""
        done = self._run("DELETE FROM rollout_pauses WHERE rollout_id=?", (rollout_id,)) > 0
        if done and event:
            self.add_event(rollout_id, "resumed", None, at)
        return done

    def paused(self, rollout_id: str) -> dict[str, Any] | None:
        """``{"paused_at", "reason"}`` while the rollout is paused, else None."""
        row = self._one(
            "SELECT paused_at, reason FROM rollout_pauses WHERE rollout_id=?",
            (rollout_id,),
            ("paused_at", "reason"),
        )
        return dict(row) if row else None

    # -- bakes (ashat/bake.py) ---------------------------------------------------------------

    def add_bake_policy(self, rollout_id: str, policy: BakePolicy) -> None:
        if policy.active:
            self._run(
                "INSERT INTO rollout_bake_policies (rollout_id, policy) VALUES (?,?)",
                (rollout_id, json.dumps(policy.to_json(), sort_keys=True)),
            )

    def bake_policy(self, rollout_id: str) -> BakePolicy | None:
        rows = self.db.query(
            "SELECT policy FROM rollout_bake_policies WHERE rollout_id=?", (rollout_id,)
        )
        if not rows:
            return None
        return BakePolicy.parse(json.loads(rows[0][0]), "the stored bake policy")

    def bake(self, rollout_id: str, wave: int) -> tuple[float, float | None, Evaluation | None]:
        """A wave's bake: (started_at, passed_at, last evaluation); KeyError if not started."""
        rows = self.db.query(
            "SELECT started_at, passed_at, last FROM rollout_bakes WHERE rollout_id=? AND wave=?",
            (rollout_id, wave),
        )
        if not rows:
            raise KeyError((rollout_id, wave))
        started, passed, last = rows[0]
        evaluation = Evaluation.from_json(json.loads(last)) if last else None
        return float(started), None if passed is None else float(passed), evaluation

    def start_bake(self, rollout_id: str, wave: int, now: float, at: str) -> None:
        self._run(
            "INSERT INTO rollout_bakes (rollout_id, wave, started_at) VALUES (?,?,?)",
            (rollout_id, wave, now),
        )
        self.add_event(rollout_id, "bake_started", wave, at)

    def pass_bake(self, rollout_id: str, wave: int, now: float, at: str) -> None:
        self._run(
            "UPDATE rollout_bakes SET passed_at=? WHERE rollout_id=? AND wave=?",
            (now, rollout_id, wave),
        )
        self.add_event(rollout_id, "bake_passed", wave, at)

    def note_evaluation(self, rollout_id: str, wave: int, evaluation: Evaluation) -> None:
        self._run(
            "UPDATE rollout_bakes SET last=? WHERE rollout_id=? AND wave=? AND passed_at IS NULL",
            (json.dumps(evaluation.to_json()), rollout_id, wave),
        )

    def baking(self) -> list[tuple[str, int, BakePolicy]]:
        """Running rollouts whose current wave bakes with analysis queries to evaluate."""
        rows = self.db.query(
            "SELECT r.rollout_id, r.current_wave, p.policy FROM rollouts r "
            "JOIN rollout_bake_policies p ON p.rollout_id = r.rollout_id "
            "JOIN rollout_bakes b ON b.rollout_id = r.rollout_id AND b.wave = r.current_wave "
            "WHERE r.state=? AND b.passed_at IS NULL",
            (RolloutState.RUNNING.value,),
        )
        out = []
        for rid, wave, policy in rows:
            parsed = BakePolicy.parse(json.loads(policy), "the stored bake policy")
            if parsed.queries:
                out.append((str(rid), int(wave), parsed))
        return out

    def add_gates(self, rollout_id: str, waves: Sequence[int]) -> None:
        self._insert_many(
            "INSERT INTO rollout_gates (rollout_id, wave)", [(rollout_id, w) for w in waves]
        )

    def gates(self, rollout_id: str) -> dict[int, bool]:
        """The rollout's gates: wave -> passed."""
        rows = self.db.query(
            "SELECT wave, passed FROM rollout_gates WHERE rollout_id=? ORDER BY wave",
            (rollout_id,),
        )
        return {int(w): bool(p) for w, p in rows}

    def pass_gate(self, rollout_id: str, wave: int) -> None:
        self._run(
            "UPDATE rollout_gates SET passed=1 WHERE rollout_id=? AND wave=?", (rollout_id, wave)
        )

    def retry(self, rollout_id: str) -> list[str]:
        """Failed targets pending again (reason cleared); the mainframes."""
        rows = self.db.query(
            "SELECT mainframe_id FROM rollout_targets WHERE rollout_id=? AND status=?",
            (rollout_id, TargetStatus.FAILED.value),
        )
        self._run(
            "UPDATE rollout_targets SET status=?, reason=NULL, reported_at=NULL"
            " WHERE rollout_id=? AND status=?",
            (TargetStatus.PENDING.value, rollout_id, TargetStatus.FAILED.value),
        )
        return [r[0] for r in rows]

    def mark_alive(self, at: float) -> None:
        """Say that an OMEGA replica runs, at ``at`` (seconds since the epoch)."""
        self._run(
            "INSERT INTO omega_alive (id, at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET at=excluded.at",
            (at,),
        )

    def last_alive(self) -> float | None:
        """When a replica last said it ran (:meth:`mark_alive`), or None if none ever did."""
        at = self._scalar("SELECT at FROM omega_alive WHERE id=1")
        return None if at is None else float(at)

    def restart_wave_clock(self, rollout_id: str, at: float) -> None:
        """Count the current wave's timeout from ``at`` (OMEGA restarted; no event: the
        wave did not start again, it only waited for OMEGA)."""
        self._run("UPDATE rollouts SET wave_started_at=? WHERE rollout_id=?", (at, rollout_id))

    # -- events --------------------------------------------------------------------------------

    def add_event(self, rollout_id: str, event: str, wave: int | None, at: str) -> None:
        self._run(
            "INSERT INTO rollout_events (rollout_id, event, wave, at, replica) VALUES (?,?,?,?,?)",
            (rollout_id, event, wave, at, self.replica),
        )

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        """What the controller did to a rollout, in order: ``event`` (``wave_started`` or
        the end state), ``wave``, ``at``, and the ``replica`` that did it."""
        cols = ("event", "wave", "at", "replica")
        return [
            dict(r)
            for r in self._all(
                f"SELECT {_select(cols)} FROM rollout_events WHERE rollout_id=? ORDER BY n",
                (rollout_id,),
                cols,
            )
        ]

    # -- targets -------------------------------------------------------------------------------

    def targets(self, rollout_id: str) -> list[TargetRow]:
        rows = self._all(
            f"{_TARGETS} WHERE rollout_id=? ORDER BY mainframe_id", (rollout_id,), TARGET_COLUMNS
        )
        return [_target(r) for r in rows]

    def status_counts(self, rollout_id: str, up_to_wave: int) -> dict[TargetStatus, int]:
        """How many targets of waves up to ``up_to_wave`` are in each status."""
        rows = self.db.query(
            "SELECT status, COUNT(*) FROM rollout_targets WHERE rollout_id=? AND wave<=?"
            " GROUP BY status",
            (rollout_id, up_to_wave),
        )
        return {TargetStatus(status): int(n) for status, n in rows}

    def target(self, rollout_id: str, mainframe_id: str) -> TargetRow | None:
        row = self._one(
            f"{_TARGETS} WHERE rollout_id=? AND mainframe_id=?",
            (rollout_id, mainframe_id),
            TARGET_COLUMNS,
        )
        return _target(row) if row else None

    def add_target(
        self, rollout_id: str, mainframe_id: str, wave: int, status: TargetStatus
    ) -> None:
        self._run(
            "INSERT INTO rollout_targets (rollout_id, mainframe_id, wave, status)"
            " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
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
        cols = (*ROLLOUT_COLUMNS, "t_mid", "t_wave", "t_status", "t_reason")
        row = self._one(
            f"SELECT {_select(ROLLOUT_COLUMNS, 'r.')}, t.mainframe_id, t.wave, t.status,"
            " t.reason FROM rollouts r JOIN rollout_targets t ON t.rollout_id = r.rollout_id"
            " WHERE t.mainframe_id=? AND t.status=? AND r.state=? ORDER BY r.n DESC LIMIT 1",
            (mainframe_id, TargetStatus.PENDING.value, RolloutState.RUNNING.value),
            cols,
        )
        if row is None:
            return None
        target = TargetRow(
            row["t_mid"], row["t_wave"], TargetStatus(row["t_status"]), row["t_reason"]
        )
        return _rollout(row), target
