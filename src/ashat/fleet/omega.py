"""OMEGA's fleet service: what OMEGA does in docs/fleet-protocol.md, behind one lock.

Over an :class:`~ashat.agent.core.Agent` (which stages and activates releases as on
PUBLIC) and the fleet database (:class:`~.omega_store.FleetStore`: ``DIR/fleet.db``, or
the PostgreSQL database of ``--db`` that several replicas share), :class:`Omega` puts
together the approvals (:mod:`.approvals`), the licensed fleet, and the rollout controller
(:mod:`.controller`, deciding with :mod:`.rollout`):

- :meth:`Omega.admit` checks a license (by a ``--license-trust`` key, not expired, not
  revoked, covering the channel OMEGA serves — that of its newest rollout) and registers
  the mainframe; :meth:`Omega.directive` answers its poll with a signed directive when a
  running rollout waits for it; :meth:`Omega.report` records what it did;
- :meth:`Omega.start_rollout` and :meth:`Omega.rollback` start rollouts; :meth:`Omega.tick`
  moves the running one on (timeouts, waves, budget, automatic rollback).

Every method is blocking and thread-safe; those that can target mainframes return the ids
of the mainframes that now have something to fetch, for the routes to wake their pollers.
Whatever changes rollouts runs under this process's lock and inside
:meth:`~.omega_store.FleetStore.exclusive`, so that replicas take turns: each wave starts
once and each rollout ends once, whichever replica's controller or report gets there first.

Replicas learn of each other's changes through the database: :meth:`Omega.tick` notices a
rollout started, or a wave begun, elsewhere (and the routes then wake every poll held
here), and refreshes the revoked licenses and the channel served. A license's signature is
checked once per token and remembered (:class:`~.license_cache.TokenCache`); expiry,
revocation and channel are judged on every request. Its metrics, counted as it goes and
read from the database at each scrape, are :mod:`.omega_metrics`'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from ashat.agent.config import S3Mirror
from ashat.agent.core import Agent
from ashat.agent.errors import NoSuchBlob
from ashat.bake import NO_BAKE, BakePolicy
from ashat.bundle.delta import DeltaError, apply_delta, make_delta
from ashat.bundle.keys import PublicKey, SigningKey
from ashat.canonical import canonical_json
from ashat.clock import Clock, SystemClock
from ashat.clock import iso_from_timestamp as iso
from ashat.clock import parse as parse_time
from ashat.errors import AshatError
from ashat.faults import crash_point
from ashat.fleet import packs
from ashat.fleet.approvals import Approvals
from ashat.fleet.controller import HOLD_FRESH_S, TIMED_OUT, Controller
from ashat.fleet.directive import NO_DIRECTIVE_KIND
from ashat.fleet.envelope import seal
from ashat.fleet.license import License, LicenseRefused, judge_license, read_license
from ashat.fleet.license_cache import TokenCache
from ashat.fleet.omega_errors import FleetConflict, LicenseDenied, NoSuchPack
from ashat.fleet.omega_metrics import FleetCollector, FleetMetrics
from ashat.fleet.omega_requests import (
    DEFAULT_WAVE_TIMEOUT_S,
    Report,
    RollbackRequest,
    RolloutRequest,
)
from ashat.fleet.omega_store import FleetStore, RegisteredMainframe, Rollout, Spec, TargetRow
from ashat.fleet.rollout import Kind, RolloutState, TargetStatus
from ashat.fleet.s3_copy import S3Copy
from ashat.fleet.tickets import check_live, issue_ticket, read_ticket
from ashat.fleet.windows import holds
from ashat.labels import flat, labels_of, parse_selector
from ashat.trust.held import held_root

log = logging.getLogger("ashat.omega")
MAX_DELTAS = 256  # manifest deltas kept, by (base, new): a wave asks the same ones
MAX_REMEMBERED = 200_000  # mainframes whose last facts are remembered here
TICKET_MINTED_S = 60  # a license asking for blob tickets gets one new ticket a minute at most
NO_LABELS: Mapping[str, str] = {}  # one object, never changed: a cache can tell it is the same
FACTS_REWRITE_S = 600.0  # unchanged facts are written again after this long
ALIVE_EVERY_S = 1.0  # while rollouts run, each replica says so this often (omega_alive)
ABSENT_S = 5.0  # no replica said so for this long: OMEGA was down (waves resume from then)

DIRECTIVE_KIND = "directive"
DIRECTIVE_TTL_S = 300  # a directive is refused by mainframes after this many seconds


@dataclass(frozen=True)
class PollAnswer:
    directive: str  # the envelope token
    manifest: str  # the doubly signed manifest, as JSON text
    manifest_delta: dict[str, Any] | None = None  # the same, as a delta from the current one

    def to_json(self) -> dict[str, Any]:
        """The poll answer's directive and manifest: the delta when there is one."""
        if self.manifest_delta is not None:
            return {"directive": self.directive, "manifest_delta": self.manifest_delta}
        return {"directive": self.directive, "manifest": self.manifest}


def _servable(mf: RegisteredMainframe, now: float, revoked: set[str]) -> bool:
    """Whether a registered mainframe's license is still good: not revoked or expired, and
    not refused at its last poll (``wrong_region``: a license of another region's OMEGA,
    which would be targeted, never answered, and fail the wave at its timeout)."""
    try:
        expires = parse_time(mf.expires_at).timestamp()
    except ValueError:
        return False
    return mf.license_id not in revoked and expires > now and mf.license_status == "ok"


def _seen_within(mf: RegisteredMainframe, now: float, seconds: float) -> bool:
    """Whether ``mf`` polled in the last ``seconds``."""
    try:
        return parse_time(mf.last_seen).timestamp() >= now - seconds
    except ValueError:
        return False


def _timed_out(status: TargetStatus, reason: str | None) -> bool:
    """Whether a target failed only because its wave timed out (it never reported)."""
    return status is TargetStatus.FAILED and (reason or "").startswith(TIMED_OUT)


class Omega:
    def __init__(
        self,
        agent: Agent,
        key: SigningKey,
        license_trusted: Mapping[str, PublicKey],
        clock: Clock | None = None,
    ) -> None:
        """Open the fleet database (``--db``, else ``DIR/fleet.db``). Raises
        :class:`~ashat.store.db.StoreError`."""
        self.agent = agent
        self.key = key
        self._clock: Clock = clock or SystemClock()
        url = agent.config.fleet_db or f"sqlite:///{agent.config.data / 'fleet.db'}"
        self.store = FleetStore(url, replica=f"{socket.gethostname()}:{os.getpid()}")
        self.license_trusted = dict(license_trusted)
        self.licenses = TokenCache(partial(read_license, trusted=self.license_trusted))
        # blob tickets (fleet/tickets.py): the license each stands for, and its expiry
        self.tickets = TokenCache(partial(read_ticket, trusted={key.keyid: key.public}))
        self.metrics = FleetMetrics(agent.metrics.registry)
        self.root = held_root(agent.config.root_file, agent.config.data)
        self.approvals = Approvals(agent, key, self.store, self._clock, self.root)
        self.controller = Controller(self.store, self.approvals, self.metrics.rollouts, self.now)
        self._going_back: threading.Thread | None = None  # OMEGA's app following its fleet
        self._not_going_back: set[str] = set()  # releases it could not leave (logged once)
        mirror = agent.config.blob_mirror
        self.s3 = (  # the S3 mirror OMEGA keeps in step (fleet/s3_copy.py)
            S3Copy(mirror, self.store, agent.blobs, built_packs=self.built_packs)
            if isinstance(mirror, S3Mirror)
            else None
        )
        self.lock = threading.Lock()
        self._deltas: dict[tuple[str, str], dict[str, Any] | None] = {}  # (base, new) digests
        self._approved_blobs: set[str] = set()  # known approved: approvals are never undone
        self._packs: dict[str, tuple[str, Path]] = {}  # digest -> (update id, its pack)
        self._revoked: set[str] = set()
        self._serving: str | None = None  # the channel of the newest rollout
        # what each mainframe's last poll here said of itself (its facts are written to the
        # store only when they change) and its inventory, for its labels
        self._facts_seen: dict[str, tuple[dict[str, Any], dict[str, Any], float]] = {}
        # each polling mainframe's labels, while its facts and the set labels are the same
        self._labels_seen: dict[str, tuple[Any, Any, dict[str, frozenset[str]]]] = {}
        # the pins and labels set here, reloaded by refresh() when their version changed
        self._rules_version = -1
        self._alive_at = 0.0  # when this replica last said it runs (omega_alive)
        self._pins: dict[str, str] = {}
        self._set_labels: Mapping[str, Mapping[str, str]] = {}
        self._resume_rollouts()
        self._seen = self.refresh()  # the running rollouts and their current waves
        agent.metrics.registry.register(FleetCollector(self))

    def now(self) -> float:
        """The clock's time as seconds since the epoch: rollouts keep deadlines in them."""
        return self._clock.now().timestamp()

    def _resume_rollouts(self) -> None:
        """OMEGA (re)starts after an outage: the current wave of a running rollout gets its
        whole timeout again, from now. Its mainframes could not poll or report while OMEGA
        was down; the old deadline would count them failed for OMEGA's own absence, and
        break the budget.

        Only after an outage: no replica said it was alive (:data:`ALIVE_EVERY_S`) in the
        last :data:`ABSENT_S` seconds, nor since the wave began. A replica starting beside
        running ones, or one restarting at once (a crash loop), leaves the clock alone, so a
        silent mainframe still times its wave out."""
        now = self.now()
        last = self.store.last_alive()
        for r in self.store.rollouts(RolloutState.RUNNING):
            absent = now - max(last or 0.0, r.wave_started_at)
            if absent <= ABSENT_S:
                continue
            self.store.restart_wave_clock(r.rollout_id, now)
            log.info(
                "%s: resumed at wave %d of %s (OMEGA was away %.0f s)",
                r.rollout_id, r.current_wave, r.update_id, absent,
            )  # fmt: skip

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.stop.set()
        self.store.close()

    def approve(self, update_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """See :meth:`.approvals.Approvals.approve` (one replica at a time: the first
        approval stands)."""
        with self.lock, self.store.exclusive():
            return self.approvals.approve(update_id, record)

    def pinned(self) -> set[str]:
        """Releases OMEGA must not prune: the two approved last, those rollouts send or
        may roll back to, and those mainframes run."""
        keep = {a.update_id for a in self.store.approvals()[-2:]}
        for r in self.store.rollouts(RolloutState.RUNNING):
            keep.add(r.update_id)
            if r.from_update_id:
                keep.add(r.from_update_id)
        latest = self.store.latest_rollout()
        if latest is not None and latest.from_update_id:
            keep.add(latest.from_update_id)
        keep.update(m.current for m in self.store.mainframes() if m.current)
        keep.update(self.store.pins().values())  # a pinned machine may join it any time
        return keep

    # -- licenses and polls --------------------------------------------------------------------

    def refresh(self) -> tuple[tuple[str, int], ...]:
        """Re-read what other replicas may have changed: revoked licenses, the channel
        served, the running-rollouts gauge; the running rollouts and their current waves."""
        self._revoked = self.store.revoked_ids()
        self._load_rules()
        latest = self.store.latest_rollout()
        self._serving = latest.channel if latest is not None else None
        running = self.store.rollouts(RolloutState.RUNNING)
        self.metrics.running.set(len(running))
        return tuple((r.rollout_id, r.current_wave) for r in running)

    def _load_rules(self) -> None:
        """The pins and labels into memory, if they changed since last read (any replica's
        change bumps their version): a poll does not read them from the database."""
        version = self.store.rules_version()
        if version != self._rules_version:
            self._pins, self._set_labels = self.store.pins(), self.store.labels()
            self._rules_version = version

    def _check(self, token: str, now: float) -> License:
        """The license if it may be served now, else :class:`LicenseDenied`; a refused
        license that is authentic has its refusal noted on its mainframe."""
        lic: License | None = None
        try:
            lic = self.licenses.read(token)
            return self._judge(lic, now)
        except LicenseRefused as e:
            self.metrics.license_refusals.labels(reason=e.reason).inc()
            if lic is not None:
                known = self.store.mainframe(lic.mainframe_id)
                current = known.current if known else None
                sequence = known.sequence if known else None
                self.store.register(lic, current, sequence, iso(now), e.reason)
            raise LicenseDenied.of(e) from e

    def admit(
        self,
        token: str,
        current: str | None = None,
        sequence: int | None = None,
        *,
        poll: bool,
        app: tuple[str | None, int | None] = (None, None),
        hold: str | None = None,
        inventory: Mapping[str, str] | None = None,
    ) -> License:
        """Check a license; on a poll, register (or refresh) its mainframe, what it runs,
        what it says of its app, whether it holds switching (``hold``), and its facts: its
        license's labels and region, and the ``inventory`` it reported (ashat/labels.py).

        Raises :class:`LicenseDenied`.
        """
        now = self.now()
        lic = self._check(token, now)
        if poll:
            facts = {
                "license_labels": dict(lic.labels),
                "region": lic.region,
                "inventory": dict(inventory or {}),
            }
            seen = self._facts_seen.get(lic.mainframe_id)
            steady = _steady(facts)
            # written when they change (free disk aside, which changes all the time), and
            # now and then (another replica may have written others meanwhile): a poll's
            # facts are otherwise what the store has already
            fresh = seen is not None and seen[1] == steady and now - seen[2] < FACTS_REWRITE_S
            if not fresh:
                if len(self._facts_seen) > MAX_REMEMBERED:
                    self._facts_seen.clear()
                    self._labels_seen.clear()
                self._facts_seen[lic.mainframe_id] = (facts, steady, now)
            self.store.register(
                lic, current, sequence, iso(now), "ok", app, hold, now, None if fresh else facts
            )
        return lic

    def app_seen(
        self, lic: License, current: str | None, app: str | None, restarts: int | None
    ) -> set[str]:
        """A mainframe whose app crash-loops on the release a running rollout installed
        there: that install counts as failed (the budget may break: an install that cannot
        stay up is not a success). The mainframes woken. (What every poll says of the app
        is recorded by :meth:`admit`.)"""
        if app != "crash_loop" or current is None:
            return set()  # recorded with the poll (admit)
        mid = lic.mainframe_id
        woken: set[str] = set()
        if self.store.installed_in_running(mid, current) is None:
            return woken  # nothing to fail: no lock taken
        with self.lock, self.store.exclusive():
            r = self.store.installed_in_running(mid, current)
            if r is None:
                return woken
            now = self.now()
            why = f"the app crash-loops after the install ({restarts or 0} restarts)"
            self.store.set_target(r.rollout_id, mid, TargetStatus.FAILED, why, iso(now))
            log.warning("%s: %s: %s", r.rollout_id, mid, why)
            woken |= self.controller.drive(r, now)
            self._refresh_gauges()
        return woken

    def blob_allowed(self, token: str, sha256: str, *, ticket: bool = False) -> License:
        """A licensed download: only blobs of approved releases; the license that asked
        (``token`` is a license, or with ``ticket`` a blob ticket). Raises
        :class:`LicenseDenied` or :class:`NoSuchBlob`."""
        lic = self.licensed(token, ticket=ticket)
        if sha256 in self._approved_blobs:
            return lic
        if not self.store.blob_approved(sha256):
            raise NoSuchBlob(f"blob {sha256} is not part of an approved release", sha256=sha256)
        self._approved_blobs.add(sha256)
        return lic

    def blob_allowed_now(self, token: str, sha256: str, *, ticket: bool = False) -> License | None:
        """:meth:`blob_allowed` from memory alone, for the event loop: the license if its
        token was authenticated before, it may be served now and the blob is known
        approved; None where that needs the database or a signature check (then call
        :meth:`blob_allowed` in a worker thread, which also records a refusal)."""
        if sha256 not in self._approved_blobs:
            return None
        return self.licensed_now(token, ticket=ticket)

    def licensed(self, token: str, *, ticket: bool = False) -> License:
        """The license of ``token`` (with ``ticket``, of the blob ticket ``token``) if it
        may be served now. Raises :class:`LicenseDenied`."""
        if not ticket:
            return self._check(token, self.now())
        try:
            return self._ticket(self.tickets.read(token), self.now())
        except LicenseRefused as e:
            self.metrics.license_refusals.labels(reason=e.reason).inc()
            raise LicenseDenied.of(e) from e

    def licensed_now(self, token: str, *, ticket: bool = False) -> License | None:
        """:meth:`licensed` from memory alone (see :meth:`blob_allowed_now`)."""
        now = self.now()
        try:
            if ticket:
                got = self.tickets.known(token)
                return None if got is None else self._ticket(got, now)
            lic = self.licenses.known(token)
            return None if lic is None else self._judge(lic, now)
        except LicenseRefused:
            return None

    def _ticket(self, got: tuple[License, dt.datetime], now: float) -> License:
        """The license an authenticated blob ticket stands for (``got``: it and the
        ticket's expiry), if both may be served now. Raises :class:`LicenseRefused`."""
        lic, expires = got
        if lic.keyid not in self.license_trusted:
            raise LicenseRefused(
                "forged", f"license {lic.license_id} is signed by a key OMEGA no longer trusts"
            )
        return self._judge(check_live(lic, expires, _utc(now)), now)

    def blob_ticket(self, token: str) -> dict[str, Any]:
        """A blob ticket for the license ``token`` (checked now), which a mainframe shows
        its site cache instead of the license (:mod:`.tickets`): ``{"ticket",
        "expires_at", "expires_in"}``. Issued as of the minute's start: within a minute a
        license is given the same ticket (Ed25519 signs alike), so asking over and over
        neither signs anew nor fills the tickets OMEGA remembers. Raises
        :class:`LicenseDenied`."""
        now = self.now()
        lic = self._check(token, now)
        ticket, expires = issue_ticket(self.key, lic, _utc(now - now % TICKET_MINTED_S))
        return {
            "ticket": ticket,
            "expires_at": iso(expires.timestamp()),
            "expires_in": max(0, int(expires.timestamp() - now)),
        }

    def pack(self, update_id: str, digest: str) -> Path:
        """The pack of ``update_id``, one of the :data:`~.packs.KEPT` releases approved
        last, whose manifest digest is ``digest``; built if it is not there (:mod:`.packs`).
        Raises :class:`NoSuchPack`."""
        latest = self.store.latest_approvals(packs.KEPT)
        if (update_id, digest) not in latest:
            raise NoSuchPack(
                f"no pack of {update_id} with manifest digest {digest}: OMEGA packs the "
                f"{packs.KEPT} releases approved last; fetch its blobs one by one",
                update_id=update_id,
            )
        with self.lock:
            approved = self.approvals.get(update_id)
        if approved is None or approved[0].digest() != digest:  # cannot be: the store said
            raise NoSuchPack(f"no approved release {update_id}", update_id=update_id)
        try:
            path = packs.build(self.agent.blobs, approved[0], keep=[d for _, d in latest])
        except NoSuchBlob as e:  # a blob lost from the store: one by one, each says so
            raise NoSuchPack(f"cannot pack {update_id}: {e.message}", update_id=update_id) from e
        except OSError as e:  # a disk full, say: the mainframes fetch blob by blob
            log.warning("cannot pack %s: %s; its blobs go one by one", update_id, e)
            raise NoSuchPack(
                f"cannot pack {update_id} here ({e.strerror or e}): fetch its blobs one by one",
                update_id=update_id,
            ) from e
        self._packs[digest] = (update_id, path)
        return path

    def pack_approved(self, update_id: str) -> None:
        """Build the pack of a release just approved, before its mainframes ask (logged,
        never raised: they would fetch its blobs one by one)."""
        with self.lock:
            approved = self.approvals.get(update_id)
        if approved is None:
            return
        try:
            self.pack(update_id, approved[0].digest())
        except NoSuchPack as e:
            log.warning("%s", e.message)

    def built_packs(self) -> list[tuple[str, Path]]:
        """(manifest digest, file) of the pack of each release :meth:`pack` keeps that is
        built (at approval, or on a first request), for the S3 mirror's copy; nothing is
        built here, so a pass that cannot build (a full disk, a replica without the blobs)
        does not try again every 30 s."""
        out = []
        for _, digest in self.store.latest_approvals(packs.KEPT):
            path = packs.pack_path(self.agent.blobs, digest)
            if path.is_file():
                out.append((digest, path))
        return out

    def pack_built(self, update_id: str, digest: str) -> Path | None:
        """The pack of ``update_id`` with ``digest`` if this process built it and it is still
        there (for the event loop; else :meth:`pack`)."""
        known = self._packs.get(digest)
        if known is None or known[0] != update_id or not os.path.exists(known[1]):
            return None
        return known[1]

    def _judge(self, lic: License, now: float) -> License:
        """What may change about an authentic license, judged afresh on every request:
        expiry, revocation, channel and region. Raises :class:`LicenseRefused`."""
        return judge_license(
            lic,
            now=_utc(now),
            revoked=self._revoked,
            channel=self._serving,
            region=self.agent.config.region,
        )

    def directive(
        self,
        lic: License,
        current: str | None,
        delta: bool = False,
        hold: str | None = None,
        nonce: str | None = None,
    ) -> PollAnswer | None:
        """A signed directive if a running rollout waits for this mainframe, else None.
        With ``delta`` (the mainframe can rebuild one), the manifest comes as its difference
        from the approved manifest of ``current`` when that is smaller (``bundle/delta.py``).

        A mainframe that already runs what the rollout sends counts as installed.
        Raises :class:`LicenseDenied` if the license was revoked, or expired, since
        :meth:`admit` (a poll may wait a minute).
        """
        now = self.now()
        with self.lock:
            if lic.license_id in self._revoked:
                raise LicenseDenied("revoked", f"license {lic.license_id} has been revoked")
            expires = parse_time(lic.expires_at)
            if expires.timestamp() <= now:
                raise LicenseDenied(
                    "expired", f"license {lic.license_id} expired at {lic.expires_at}"
                )
            r = self._waiting_for(lic, current, now)
            if r is None:
                return None
            approved = self.approvals.get(r.update_id)
            if approved is None:  # cannot happen: a rollout starts only for approved releases
                log.error("%s sends %s, which has no approved manifest", r.rollout_id, r.update_id)
                return None
            m, text = approved
            if current == r.update_id:
                with self.store.exclusive():
                    self.store.set_target(
                        r.rollout_id, lic.mainframe_id, TargetStatus.INSTALLED, None, iso(now)
                    )
                    self.store.set_running(lic.mainframe_id, m.update_id, m.sequence)
                return None
        if holds(hold, rollback=r.kind is Kind.ROLLBACK):  # outside its window, or locked
            return None
        action = "rollback" if r.kind is Kind.ROLLBACK else "install"
        payload = {
            "mainframe_id": lic.mainframe_id,
            "rollout_id": r.rollout_id,
            "action": action,
            "update_id": m.update_id,
            "sequence": m.sequence,
            "manifest_digest": m.digest(),
            "issued_at": iso(now),
            "expires_at": iso(now + DIRECTIVE_TTL_S),
        }
        if action == "rollback":  # for this poll, from what runs there: no replay moves it
            payload.update({"from": current, "nonce": nonce})
        self.metrics.directives.labels(action=action).inc()
        answer = PollAnswer(seal(DIRECTIVE_KIND, payload, self.key), text)
        if delta and current is not None:
            return replace(answer, manifest_delta=self._delta(current, text))
        return answer

    def _delta(self, current: str, text: str) -> dict[str, Any] | None:
        """``text`` as a delta from the approved manifest of ``current``, if that is known,
        rebuilds ``text`` exactly, and is smaller; else None (the whole manifest goes)."""
        held = self.approvals.get(current)
        if held is None:
            return None
        base, new = held[1].encode("utf-8"), text.encode("utf-8")
        key = (hashlib.sha256(base).hexdigest(), hashlib.sha256(new).hexdigest())
        if key in self._deltas:
            return self._deltas[key]
        try:
            delta: dict[str, Any] | None = make_delta(base, new)
            apply_delta(base, delta)  # only what rebuilds byte for byte (DeltaError if not)
        except (DeltaError, ValueError):
            delta = None
        if delta is not None and len(canonical_json(delta)) >= len(new):
            delta = None
        if len(self._deltas) >= MAX_DELTAS:
            self._deltas.clear()
        self._deltas[key] = delta
        return delta

    def no_directive(
        self, lic: License, nonce: str, current: str | None, sequence: int | None
    ) -> str:
        """ "Nothing for you now", signed for the poll that sent ``nonce``, ``current`` and
        ``sequence``: a mainframe can tell it from an answer withheld, replayed or given to
        an altered poll by someone else (the freeze attack)."""
        payload = {
            "mainframe_id": lic.mainframe_id,
            "nonce": nonce,
            "current": current,
            "sequence": sequence,
            "issued_at": iso(self.now()),
        }
        return seal(NO_DIRECTIVE_KIND, payload, self.key)

    def _waiting_for(self, lic: License, current: str | None, now: float) -> Rollout | None:
        """The rollout whose release this mainframe should install now: where the fleet is
        going, whenever the mainframe joins it.

        - A running rollout that waits for it (its wave started);
        - else the rollout the fleet converges to (:meth:`_converging_to`), on a channel
          its license covers, when it does not run that release and
          - its wave timed out on it (offline then): catching up, its report counts late;
          - it was never a target (licensed or started later): it joins the rollout, a
            running one in its last wave, a finished one at once;
          - it installed the release and runs something else now (re-imaged, its data
            directory lost): it is offered it again.

        A mainframe whose install failed is not offered the release again by itself, nor
        one that says it runs a newer sequence.
        """
        mainframe_id = lic.mainframe_id
        found = self.store.pending_for(mainframe_id)
        if found is not None:
            return None if self.store.paused(found[0].rollout_id) else found[0]
        decided = self._convergence(lic, current)
        if decided is None or isinstance(decided, Rollout):
            return decided
        # It joins (or is offered again): decided again under the fleet-wide lock, since
        # another replica may have moved the rollout on meanwhile.
        with self.store.exclusive():
            decided = self._convergence(lic, current, fresh=True)
            if decided is None or isinstance(decided, Rollout):
                return decided
            r, target = decided
            last = len(r.waves) - 1
            waiting = r.state is RolloutState.RUNNING and r.current_wave < last
            status = TargetStatus.WAITING if waiting else TargetStatus.PENDING
            if target is None:
                self.store.add_target(r.rollout_id, mainframe_id, last, status)
            else:
                self.store.set_target(r.rollout_id, mainframe_id, status, None, iso(now))
        log.info(
            "%s: %s %s; it gets %s%s",
            r.rollout_id,
            mainframe_id,
            "joined the fleet" if target is None else f"no longer runs {r.update_id}",
            r.update_id,
            " with the last wave" if waiting else "",
        )
        return None if waiting else r

    def _convergence(
        self, lic: License, current: str | None, fresh: bool = False
    ) -> Rollout | tuple[Rollout, TargetRow | None] | None:
        """What :meth:`_waiting_for` does for a mainframe no running wave waits for: None
        (nothing), the rollout whose release it gets now, or (rollout, its target row or
        None) when it must join, or be offered the release again, first."""
        mainframe_id = lic.mainframe_id
        # as of the last tick (or set here since); read afresh before a target is added
        set_labels: Mapping[str, str]
        if fresh:
            pin, set_labels = self.store.rules_for(mainframe_id)
        else:
            pin = self._pins.get(mainframe_id)
            set_labels = self._set_labels.get(mainframe_id, NO_LABELS)
        if pin is not None:
            r = self._pinned_rollout(lic, pin)
        else:
            r = self._converging_to(lic, set_labels)
        if r is None or current == r.update_id or r.channel not in lic.channels:
            return None
        if r.state is RolloutState.RUNNING and self.store.paused(r.rollout_id):
            return None
        if self._ahead_of(mainframe_id, r.update_id):
            return None  # it runs a newer release: only a signed rollback takes it back
        target = self.store.target(r.rollout_id, mainframe_id)
        if target is not None:
            if _timed_out(target.status, target.reason) or target.status is TargetStatus.PENDING:
                return r
            if target.status is not TargetStatus.INSTALLED:
                return None  # waiting for its wave, or failed: not again by itself
        return r, target

    def _ahead_of(self, mainframe_id: str, update_id: str) -> bool:
        """Whether the mainframe says it runs a sequence at or past ``update_id``'s."""
        approved = self.approvals.get(update_id)
        mf = self.store.mainframe(mainframe_id)
        if approved is None or mf is None or mf.sequence is None:
            return False
        return mf.sequence >= approved[0].sequence

    def _converging_to(
        self, lic: License | None = None, set_labels: Mapping[str, str] | None = None
    ) -> Rollout | None:
        """The install rollout whose release the fleet runs or is going to: the newest
        rollout if it is an install, running or completed; after a completed rollback, the
        completed install of the release it went back to. For one mainframe (``lic``):
        among the rollouts for it only, those on a channel of its license whose selector
        matches its labels, so two groups may run two releases (A/B)."""
        if lic is None:
            latest = self.store.latest_rollout()
            rollouts = [latest] if latest is not None else []
        else:  # the newest rollout on its channels is almost always for it: one row
            rollouts = self.store.rollouts_on(lic.channels, limit=1)
            if rollouts and rollouts[0].selector is not None:
                labels = self._labels(lic, set_labels or {})
                if not parse_selector(rollouts[0].selector).matches(labels):
                    rollouts = [
                        r
                        for r in self.store.rollouts_on(lic.channels)
                        if r.selector is None or parse_selector(r.selector).matches(labels)
                    ]
        if not rollouts:
            return None
        r = rollouts[0]
        if r.kind is Kind.INSTALL:
            return r if r.state in (RolloutState.RUNNING, RolloutState.COMPLETED) else None
        if r.state is not RolloutState.COMPLETED:
            return None
        back_to = [
            i
            for i in self.store.rollouts(RolloutState.COMPLETED)
            if i.kind is Kind.INSTALL and i.update_id == r.update_id and i.selector == r.selector
        ]
        return back_to[-1] if back_to else None

    def _pinned_rollout(self, lic: License, pin: str) -> Rollout | None:
        """For a mainframe pinned to ``pin``: the newest install rollout of that release,
        running or completed, on a channel of its license (it joins it); None if there is
        none, and a pin never sends a mainframe back (only a rollback does)."""
        for r in self.store.rollouts_on(lic.channels):
            running = r.state in (RolloutState.RUNNING, RolloutState.COMPLETED)
            if r.kind is Kind.INSTALL and r.update_id == pin and running:
                return r
        return None

    def _labels(self, lic: License, set_labels: Mapping[str, str]) -> dict[str, frozenset[str]]:
        """A polling mainframe's labels: from its license, the labels set on OMEGA, and the
        inventory its poll reported here (else the one its last poll left in the store)."""
        seen = self._facts_seen.get(lic.mainframe_id)
        if seen is None:
            mf = self.store.mainframe(lic.mainframe_id)
            return _labels_of(_as_registered(lic, mf.facts if mf else {}), set_labels)
        known = self._labels_seen.get(lic.mainframe_id)
        if known is not None and known[0] is seen[1] and known[1] is set_labels:
            return known[2]  # the very same facts and labels set (held here): same labels
        labels = _labels_of(_as_registered(lic, seen[0]), set_labels)
        self._labels_seen[lic.mainframe_id] = (seen[1], set_labels, labels)
        return labels

    def report(self, lic: License, report: Report) -> set[str]:
        """Record a mainframe's ``installed``/``failed``; the mainframes woken.

        A late ``installed`` (after a timeout counted it failed) is recorded as such, and
        after its rollout was halted joins that rollout's running rollback. Raises
        :class:`~.omega_errors.NoSuchRollout` or :class:`FleetConflict`.
        """
        mid = lic.mainframe_id
        now = self.now()
        woken: set[str] = set()
        with self.lock, self.store.exclusive():
            r = self.controller.get(report.rollout_id)
            if report.update_id != r.update_id:
                raise FleetConflict(
                    f"rollout {r.rollout_id} sends {r.update_id}, not {report.update_id}",
                    rollout_id=r.rollout_id,
                )
            target = self.store.target(r.rollout_id, mid)
            if target is None:
                raise FleetConflict(
                    f"mainframe {mid} is not a target of rollout {r.rollout_id}",
                    rollout_id=r.rollout_id,
                )
            if report.installed:
                if target.status is not TargetStatus.INSTALLED:
                    self.store.set_target(r.rollout_id, mid, TargetStatus.INSTALLED, None, iso(now))
                approved = self.approvals.get(r.update_id)
                if approved is not None:
                    self.store.set_running(mid, r.update_id, approved[0].sequence)
                if r.state is not RolloutState.RUNNING:
                    woken |= self.controller.join_rollback(r, mid, now)
            elif target.status in (TargetStatus.PENDING, TargetStatus.WAITING) or _timed_out(
                target.status, target.reason
            ):  # a timed-out mainframe that caught up and failed: not to be sent it again
                why = report.reason or "the mainframe reported a failure without a reason"
                self.store.set_target(r.rollout_id, mid, TargetStatus.FAILED, why, iso(now))
                log.warning("%s: %s failed to install %s: %s", r.rollout_id, mid, r.update_id, why)
            crash_point("omega.report")
            if r.state is RolloutState.RUNNING:
                woken |= self.controller.drive(r, now)  # the budget may break now
            self._refresh_gauges()
        self.metrics.reports.labels(status=report.status).inc()
        return woken

    # -- rollouts ------------------------------------------------------------------------------

    def status(self, rollout_id: str) -> dict[str, Any]:
        """Raises :class:`~.omega_errors.NoSuchRollout`."""
        return self.controller.status(rollout_id)

    def control(
        self, rollout_id: str, action: str, reason: str | None
    ) -> tuple[dict[str, Any], set[str]]:
        """``pause``, ``resume`` or ``abort`` a running rollout, or ``retry`` the mainframes
        that failed in a running or completed one; its status and the mainframes woken.

        Pause: no wave starts, no directive goes out, no wave times out (a mainframe
        already installing still reports). Resume: the current wave's timeout starts
        again, and it moves on. Abort: the rollout ends ``cancelled`` with the reason;
        whoever installed keeps it (``deploy rollback`` sends them back). Retry: each
        failed mainframe is pending again and gets the release at its next poll.
        Idempotent. Raises NoSuchRollout or FleetConflict (it is not running, or failed).
        """
        now = self.now()
        woken: set[str] = set()
        with self.lock, self.store.exclusive():
            r = self.controller.get(rollout_id)
            running = r.state is RolloutState.RUNNING
            if action == "retry":
                if r.state not in (RolloutState.RUNNING, RolloutState.COMPLETED):
                    raise FleetConflict(
                        f"rollout {rollout_id} is {r.state.value}: only a running or completed "
                        "one is retried (a failed one is rolled back, or a fix pushed)",
                        rollout_id=rollout_id,
                    )
                # where its channel (its group, with a selector) is going
                latest = self._converging_to() if r.selector is None else None
                if r.selector is not None:
                    latest = self._last_rollout(r.channel, r.selector)
                if not running and (latest is None or latest.rollout_id != rollout_id):
                    raise FleetConflict(
                        f"rollout {rollout_id} is no longer where the fleet is going "
                        f"({latest.rollout_id if latest else 'nothing'} is): a retry would "
                        "offer its release to nobody",
                        rollout_id=rollout_id,
                    )
                woken = set(self.store.retry(rollout_id))
                self.store.add_event(rollout_id, "retried", r.current_wave, iso(now))
                if running:
                    woken |= self.controller.drive(r, now)
            elif not running:
                if action == "abort" and r.state is RolloutState.CANCELLED:
                    return self.status(rollout_id), woken  # aborted already
                raise FleetConflict(
                    f"rollout {rollout_id} is {r.state.value}, not running: nothing to {action}",
                    rollout_id=rollout_id,
                )
            elif action == "pause":
                self.store.pause(rollout_id, iso(now), reason)
            elif action == "resume":
                if self.store.resume(rollout_id, iso(now)):
                    self.store.restart_wave_clock(rollout_id, now)
                    woken = self.controller.drive(r, now)
                    found = self.store.targets(rollout_id)
                    woken |= {t.mainframe_id for t in found if t.status is TargetStatus.PENDING}
            else:  # abort
                self.store.resume(rollout_id, iso(now), event=False)
                why = f"aborted: {reason}" if reason else "aborted by the operator"
                self.controller.abort(r, why, now)
            self._refresh_gauges()
        log.warning("%s: %s (%s)", rollout_id, action, reason or "no reason given")
        return self.status(rollout_id), woken

    def rollouts_of(self, update_id: str) -> list[dict[str, Any]]:
        """Every rollout of a release, oldest first: those that installed it and those that
        rolled it back (each as :meth:`status` tells it)."""
        return [
            self.status(r.rollout_id)
            for r in self.store.rollouts()
            if (r.kind is Kind.INSTALL and r.update_id == update_id)
            or (r.kind is Kind.ROLLBACK and r.from_update_id == update_id)
        ]

    def start_rollout(self, req: RolloutRequest) -> tuple[dict[str, Any], set[str], bool]:
        """Start an install rollout to the licensed fleet of ``req.channel``, superseding a
        running one; the status, the mainframes woken, and whether it is new (the same
        request as the channel's last rollout returns that one while it runs or once it
        completed: a resumed ``deploy approve``).

        Raises :class:`FleetConflict` (not approved or current, lower sequence).
        """
        now = self.now()
        with self.lock, self.store.exclusive():
            last = self._last_rollout(req.channel, req.selector)
            if last and _same(
                req,
                last,
                self.store.gates(last.rollout_id),
                self.store.bake_policy(last.rollout_id) or NO_BAKE,
            ):
                return self.status(last.rollout_id), set(), False
            if self.store.withdrawn(req.update_id):
                raise FleetConflict(  # withdrawn: a rollout of it would undo the rollback
                    f"release {req.update_id} was rolled back on this OMEGA: it is not "
                    "released again (push a new release with the fix)",
                    update_id=req.update_id,
                )
            approved = self.approvals.get(req.update_id)
            if approved is None:
                raise FleetConflict(
                    f"release {req.update_id} is not approved on OMEGA "
                    f"(POST /v1/releases/{req.update_id}/approve first)",
                    update_id=req.update_id,
                )
            current = self.agent.links()[0]
            if current != req.update_id:
                raise FleetConflict(
                    f"release {req.update_id} is not OMEGA's current release "
                    f"(current: {current or 'none'}); activate it first",
                    update_id=req.update_id,
                )
            revoked = self.store.revoked_ids()
            fleet, considered = self._fleet_for(req, now, revoked)
            if req.selector is not None and not fleet:
                raise FleetConflict(
                    f"selector {req.selector!r} matches none of the {considered} licensed "
                    f"mainframes on channel {req.channel}; nothing started "
                    "(ashat fleet list shows their labels)",
                    selector=req.selector,
                    mainframes=considered,
                )
            sequence = approved[0].sequence
            newest = self.store.max_sequence() if req.selector is None else self._newest_of(fleet)
            if newest is not None and sequence < newest:
                raise FleetConflict(
                    f"release {req.update_id} has sequence {sequence}, lower than the "
                    f"{newest} the fleet already runs; use a rollback to go back",
                    update_id=req.update_id,
                    fleet_sequence=newest,
                )
            ahead = len(req.rings)  # the rings are the first waves, the percentages after
            spec = Spec(
                kind=Kind.INSTALL,
                update_id=req.update_id,
                from_update_id=self.controller.fleet_previous(req.update_id),
                channel=req.channel,
                waves=(0,) * ahead + req.waves,
                max_failure_ratio=req.max_failure_ratio,
                wave_timeout_s=req.wave_timeout_s,
                auto_rollback=req.auto_rollback,
                pause_after=tuple(g + ahead for g in req.pause_after),
                bake=req.bake,
                selector=req.selector,
                rings=req.rings,
            )
            r, woken = self.controller.create(spec, fleet, now, self._rings_of(req, fleet))
            crash_point("omega.rollout")
            self._refresh_gauges()
            self._serving = r.channel
        log.info(
            "%s: rolling out %s to %d mainframes%s", r.rollout_id, r.update_id, len(fleet),
            f" ({req.selector})" if req.selector else "",
        )  # fmt: skip
        return self.status(r.rollout_id), woken, True

    def _fleet_for(
        self, req: RolloutRequest, now: float, revoked: set[str]
    ) -> tuple[list[str], int]:
        """The mainframes a rollout of ``req`` targets (licensed on its channel, matching
        its selector, not pinned to another release), and how many were licensed."""
        selector = parse_selector(req.selector)
        pins = self.store.pins()
        labels = self.store.labels() if req.selector else {}
        licensed = [
            mf
            for mf in self.store.mainframes()
            if req.channel in mf.channels and _servable(mf, now, revoked)
        ]
        fleet = [
            mf.mainframe_id
            for mf in licensed
            if pins.get(mf.mainframe_id, req.update_id) == req.update_id
            and (
                selector.everyone
                or selector.matches(_labels_of(mf, labels.get(mf.mainframe_id, {})))
            )
        ]
        return fleet, len(licensed)

    def _rings_of(self, req: RolloutRequest, fleet: Collection[str]) -> dict[str, int]:
        """Each mainframe of ``fleet`` in one of ``req.rings``: the index of the first ring
        whose selector matches it (its wave)."""
        if not req.rings:
            return {}
        rings = [parse_selector(r) for r in req.rings]
        labels = self.store.labels()
        fleet = set(fleet)
        out = {}
        for mf in self.store.mainframes():
            if mf.mainframe_id not in fleet:
                continue
            have = _labels_of(mf, labels.get(mf.mainframe_id, {}))
            for k, ring in enumerate(rings):
                if ring.matches(have):
                    out[mf.mainframe_id] = k
                    break
        return out

    def _newest_of(self, fleet: Collection[str]) -> int | None:
        """The highest sequence of the releases approved here that ``fleet`` runs."""
        sequences = {a.update_id: a.sequence for a in self.store.approvals()}
        fleet = set(fleet)
        running = [
            sequences.get(mf.current)
            for mf in self.store.mainframes()
            if mf.mainframe_id in fleet and mf.current
        ]
        return max((n for n in running if n is not None), default=None)

    def _last_rollout(self, channel: str, selector: str | None = None) -> Rollout | None:
        """The newest rollout of the channel (and group: ``selector``) if it is an install
        that runs or completed: the one a re-sent request names (a ``deploy approve`` killed
        after starting it may be re-run after it completed). A failed or superseded one is
        not: the same request again is a new attempt."""
        on_channel = [
            r for r in self.store.rollouts() if r.channel == channel and r.selector == selector
        ]
        last = on_channel[-1] if on_channel else None
        if last is None or last.kind is not Kind.INSTALL:
            return None
        return last if last.state in (RolloutState.RUNNING, RolloutState.COMPLETED) else None

    def rollback(self, req: RollbackRequest) -> tuple[dict[str, Any], set[str]]:
        """A rollback rollout sending ``to`` (default: what the fleet ran before ``from``) to
        every mainframe that runs ``from``. Raises :class:`FleetConflict` (nothing to roll
        back to, or ``to`` is not approved here)."""
        now = self.now()
        with self.lock, self.store.exclusive():
            installs = [
                r
                for r in self.store.rollouts()
                if r.kind is Kind.INSTALL and r.update_id == req.from_id
            ]
            to_id = req.to_id
            if to_id is None:
                before = installs[-1].from_update_id if installs else None
                has = self.approvals.has(before) and not self.store.withdrawn(before)
                to_id = before if has else self.controller.fleet_previous(req.from_id)
            if to_id is None:
                raise FleetConflict(
                    f"nothing to roll back to: OMEGA holds no approved release before "
                    f"{req.from_id}",
                    update_id=req.from_id,
                )
            if to_id == req.from_id or not self.approvals.has(to_id):
                why = "it is the same release" if to_id == req.from_id else "it is not approved"
                raise FleetConflict(
                    f"cannot roll back {req.from_id} to {to_id}: {why}", update_id=req.from_id
                )
            if self.store.withdrawn(to_id):  # not sent again, this way either
                raise FleetConflict(
                    f"cannot roll back {req.from_id} to {to_id}: {to_id} was rolled back on "
                    "this OMEGA (name an earlier release, or leave the target to OMEGA)",
                    update_id=req.from_id,
                )
            revoked = self.store.revoked_ids()
            fleet = [
                mf.mainframe_id
                for mf in self.store.mainframes()
                if mf.current == req.from_id and _servable(mf, now, revoked)
            ]
            runs_here = self.agent.links()[0]
            if (
                not fleet
                and runs_here != req.from_id
                and not any(r.state is RolloutState.RUNNING for r in installs)
            ):  # a typo, or a release long replaced: "rolled back" would mean nothing
                raise FleetConflict(
                    f"nothing runs {req.from_id}: not this OMEGA (it runs "
                    f"{runs_here or 'nothing'}), no mainframe, no rollout of it; a rollback goes "
                    "back from the release that runs",
                    update_id=req.from_id,
                )
            spec = Spec(
                kind=Kind.ROLLBACK,
                update_id=to_id,
                from_update_id=req.from_id,
                channel=installs[-1].channel if installs else "stable",
                waves=(100,),
                max_failure_ratio=0.0,
                wave_timeout_s=_rollback_timeout(req, installs),
                auto_rollback=False,
                selector=installs[-1].selector if installs else None,  # its group's
            )
            r, woken = self.controller.create(spec, fleet, now)
            unpinned = self.store.unpin_release(req.from_id)  # withdrawn: no pin holds it
            if unpinned:
                log.warning("%s: unpinned from %s (rolled back): %s", r.rollout_id,
                            req.from_id, ", ".join(unpinned))  # fmt: skip
                self._load_rules()
            self._refresh_gauges()
            self._serving = r.channel
        log.warning(
            "%s: rolling %d mainframes back from %s to %s (%s)",
            r.rollout_id,
            len(fleet),
            req.from_id,
            to_id,
            req.reason,
        )
        return self.status(r.rollout_id), woken

    def analyze(self) -> None:
        """Evaluate the analysis queries of each wave that bakes (``ashat/bake.py``) and keep
        the result for the controller; runs outside any lock (Prometheus is a network away)."""
        from ashat.fleet.analysis import evaluate

        for rollout_id, wave, policy in self.store.baking():
            last = self.store.bake(rollout_id, wave)[2]
            if last is not None and last.failed is not None:
                continue  # a broken bound stands (paused or not): the controller halts it
            evaluation = evaluate(policy, self.now())
            if evaluation.failed or evaluation.error:
                log.warning(
                    "%s: wave %d analysis: %s", rollout_id, wave + 1,
                    evaluation.failed or evaluation.error,
                )  # fmt: skip
            self.store.note_evaluation(rollout_id, wave, evaluation)

    def tick(self) -> tuple[set[str], bool]:
        """Move every running rollout on (timeouts, waves, budget) and :meth:`refresh`; the
        mainframes woken, and whether the running rollouts or their waves changed since
        the last tick (by another replica, maybe): every poll held here should look again.
        """
        now = self.now()
        woken: set[str] = set()
        with self.lock:
            if self.store.running_count():
                if now - self._alive_at >= ALIVE_EVERY_S:
                    self.store.mark_alive(now)
                    self._alive_at = now
                with self.store.exclusive():
                    for r in self.store.rollouts(RolloutState.RUNNING):
                        woken |= self.controller.drive(r, now)
            seen = self.refresh()
        changed, self._seen = seen != self._seen, seen
        self._follow_the_fleet_back()
        return woken, changed

    def _follow_the_fleet_back(self) -> None:
        """Once an automatic rollback brought the fleet back from the release OMEGA runs,
        OMEGA's own app goes back too, by itself: a rolled-back release serves nowhere,
        whether or not anyone runs ``deploy`` (an approval made with ``--no-wait``). Each
        replica for its own app; in a thread of its own (the switch waits for the app)."""
        current = self.agent.links()[0]
        if current is None or (self._going_back is not None and self._going_back.is_alive()):
            return
        if current in self._not_going_back:
            return
        back = next(
            (
                r
                for r in self.store.rollbacks_from(current)
                if r.parent_rollout_id is not None and r.state is RolloutState.COMPLETED
            ),
            None,
        )  # an automatic one (a halted rollout's), done
        if back is None:
            return

        def go() -> None:
            try:
                self.agent.rollback(current, back.update_id)
                log.warning(
                    "%s: went back from %s to %s with the fleet (%s)",
                    back.rollout_id, current, back.update_id, "automatic rollback",
                )  # fmt: skip
            except AshatError as e:  # the control side, or an operator, may have done it
                if self.agent.links()[0] == current:
                    log.error("could not go back from %s with the fleet: %s", current, e.message)
                    self._not_going_back.add(current)  # said once; deploy status shows it

        self._going_back = threading.Thread(target=go, name="ashat-follow-fleet", daemon=True)
        self._going_back.start()

    # -- the registry and revocations ----------------------------------------------------------

    def label(
        self, mainframe_id: str, labels: Mapping[str, str], remove: Collection[str]
    ) -> dict[str, Any]:
        """Set and remove labels of a mainframe (known yet or not); what it has now."""
        with self.lock:
            self.store.set_labels(mainframe_id, labels, remove)
            self._load_rules()
        log.info("labels of %s: set %s, removed %s", mainframe_id, dict(labels), list(remove))
        return {
            "mainframe_id": mainframe_id,
            "labels": self.store.labels_of(mainframe_id),
            "registered": self.store.mainframe(mainframe_id) is not None,
        }

    def pin(self, mainframe_id: str, update_id: str | None) -> dict[str, Any]:
        """Hold a mainframe on ``update_id`` (approved here), or release it (None): no
        rollout of another release takes it, and a running one stops waiting for it."""
        now = self.now()
        with self.lock, self.store.exclusive():
            approved = self.approvals.get(update_id) if update_id is not None else None
            if update_id is not None and approved is None:
                raise FleetConflict(
                    f"release {update_id} is not approved on OMEGA: a mainframe is pinned to "
                    "an approved release",
                    update_id=update_id,
                )
            if self.store.withdrawn(update_id):
                # withdrawn: no rollout of it comes again, and a pin to it never converges
                raise FleetConflict(
                    f"release {update_id} was rolled back on this OMEGA: a mainframe is pinned "
                    "to a release that may still be installed",
                    update_id=update_id,
                )
            mf = self.store.mainframe(mainframe_id)
            if (
                approved is not None
                and mf is not None
                and mf.sequence is not None
                and approved[0].sequence < mf.sequence
            ):  # it would be "should run" for ever: a mainframe goes back only on a rollback
                raise FleetConflict(
                    f"{mainframe_id} runs {mf.current} (sequence {mf.sequence}), newer than "
                    f"{update_id} (sequence {approved[0].sequence}): a pin never takes a "
                    f"mainframe back (only 'deploy rollback' does); pin it to {mf.current} or "
                    "a newer approved release",
                    update_id=update_id,
                    mainframe_id=mainframe_id,
                )
            self.store.pin(mainframe_id, update_id, iso(now))
            self._load_rules()
            left = self.store.drop_unfinished_targets(mainframe_id, update_id) if update_id else []
        log.info("%s %s%s", mainframe_id, f"pinned to {update_id}" if update_id else "unpinned",
                 f"; left {', '.join(left)}" if left else "")  # fmt: skip
        return {"mainframe_id": mainframe_id, "pinned": update_id, "left_rollouts": left}

    def mainframes(self, where: str | None = None) -> dict[str, Any]:
        """The registry, each with its labels and what it should run (``desired``) and
        which rule says so; with ``where``, those its selector matches."""
        now = self.now()
        revoked = self.store.revoked_ids()
        selector = parse_selector(where)
        set_labels, pins = self.store.labels(), self.store.pins()
        desired = Desired(self.store)
        out = []
        for mf in self.store.mainframes():
            labels = _labels_of(mf, set_labels.get(mf.mainframe_id, {}))
            if not selector.matches(labels):
                continue
            status = mf.license_status
            if mf.license_id in revoked:
                status = "revoked"
            elif status == "ok" and not _servable(mf, now, revoked):
                status = "expired"
            out.append(
                {
                    "mainframe_id": mf.mainframe_id,
                    "license_id": mf.license_id,
                    "customer": mf.customer,
                    "channels": list(mf.channels),
                    "license_expires_at": mf.expires_at,
                    "current": mf.current,
                    "sequence": mf.sequence,
                    "last_seen": mf.last_seen,
                    "license_status": status,
                    "app": mf.app_status,
                    "app_restarts": mf.app_restarts,
                    "labels": flat(labels),
                    "inventory": mf.facts.get("inventory") or {},
                    "pinned": pins.get(mf.mainframe_id),
                    # its last poll's, while it polls: it installs nothing until it may
                    "hold": mf.hold if _seen_within(mf, now, HOLD_FRESH_S) else None,
                    **desired.of(mf, labels, pins.get(mf.mainframe_id)),
                }
            )
        return {"mainframes": out}

    def revoke(self, license_id: str) -> dict[str, Any]:
        with self.lock:  # not between a tick's read of the revocations and its update
            if self.store.revoke(license_id, iso(self.now())):
                log.warning("revoked license %s", license_id)
            self._revoked.add(license_id)
        return {"revoked": license_id}

    def revocations(self) -> dict[str, Any]:
        return {"revoked": self.store.revocations()}

    def _refresh_gauges(self) -> None:
        self.metrics.running.set(self.store.running_count())


def _labels_of(mf: RegisteredMainframe, set_labels: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """A registered mainframe's labels: its license's, those set on OMEGA, its facts."""
    inventory = mf.facts.get("inventory") or {}
    facts: dict[str, str | tuple[str, ...]] = {
        "id": mf.mainframe_id, "customer": mf.customer, "channel": mf.channels,
        **{k: str(inventory[k]) for k in ("os", "arch", "python", "ashat") if inventory.get(k)},
    }  # fmt: skip
    if mf.facts.get("region"):
        facts["region"] = str(mf.facts["region"])
    return labels_of(facts, mf.facts.get("license_labels") or {}, set_labels)


def _steady(facts: dict[str, Any]) -> dict[str, Any]:
    """Facts but the free disk, which changes on nearly every poll."""
    inventory = {k: v for k, v in (facts.get("inventory") or {}).items() if k != "free_disk"}
    return {**facts, "inventory": inventory}


def _as_registered(lic: License, facts: dict[str, Any]) -> RegisteredMainframe:
    """A polling mainframe as the registry would show it, for its labels."""
    return RegisteredMainframe(
        mainframe_id=lic.mainframe_id, license_id=lic.license_id, customer=lic.customer,
        channels=lic.channels, expires_at=lic.expires_at, current=None, sequence=None,
        last_seen="", license_status="ok", facts=facts,
    )  # fmt: skip


class Desired:
    """What each mainframe should run, and the rule that says so, for the registry: read
    once from the store (every rollout and its unfinished targets), then per mainframe."""

    def __init__(self, store: FleetStore) -> None:
        self.rollouts = list(reversed(store.rollouts()))  # newest first
        self.pending: dict[str, Rollout] = {}
        for r in self.rollouts:
            if r.state is RolloutState.RUNNING:
                for t in store.targets(r.rollout_id):
                    if t.status in (TargetStatus.PENDING, TargetStatus.WAITING):
                        self.pending.setdefault(t.mainframe_id, r)

    def of(
        self, mf: RegisteredMainframe, labels: Mapping[str, frozenset[str]], pin: str | None
    ) -> dict[str, Any]:
        r = self.pending.get(mf.mainframe_id)
        if r is not None:
            return _rule(r.update_id, f"rollout {r.rollout_id} ({r.kind.value}), waiting for it")
        if pin is not None:
            return _rule(pin, "pinned (ashat fleet pin)")
        for r in self.rollouts:
            if r.channel not in mf.channels:
                continue
            if r.selector is not None and not parse_selector(r.selector).matches(labels):
                continue
            if r.state not in (RolloutState.RUNNING, RolloutState.COMPLETED):
                return _rule(mf.current, f"rollout {r.rollout_id} {r.state.value}: no change")
            to = f" to {r.selector}" if r.selector else ""
            return _rule(r.update_id, f"channel {r.channel}: {r.rollout_id}{to}")
        return _rule(mf.current, "no rollout for it")


def _rollback_timeout(req: RollbackRequest, installs: Sequence[Rollout]) -> float:
    """A rollback's wave timeout: the one asked for, else that of the release's own rollout
    (the project's ``wave_timeout_s``, as an automatic rollback keeps it), else the
    default."""
    if req.wave_timeout_s is not None:
        return req.wave_timeout_s
    return installs[-1].wave_timeout_s if installs else DEFAULT_WAVE_TIMEOUT_S


def _rule(update_id: str | None, rule: str) -> dict[str, Any]:
    return {"desired": update_id, "rule": rule}


def _same(req: RolloutRequest, r: Rollout, gates: Collection[int], bake: BakePolicy) -> bool:
    """Whether ``r`` (with its ``gates`` and ``bake``) is ``req``'s rollout (same release
    and policy)."""
    return (
        tuple(sorted(gates)) == tuple(g + len(req.rings) for g in req.pause_after)
        and r.update_id == req.update_id
        and r.channel == req.channel
        and r.waves == (0,) * len(req.rings) + req.waves
        and r.rings == req.rings
        and r.max_failure_ratio == req.max_failure_ratio
        and r.wave_timeout_s == req.wave_timeout_s
        and r.auto_rollback == req.auto_rollback
        and bake == req.bake
        and r.selector == req.selector
    )


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
