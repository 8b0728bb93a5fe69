"""The services behind the verbs that only touch the control store.

``Workflow.move`` is the one way a deployment changes state: it checks the transition table
(pure), works out which tier lease to take or give back, and asks the store for a
compare-and-set with its audit event. Verbs that talk to servers (push, verify, approve,
rollback) build on it in their own modules.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ashat.errors import AshatError, InvalidInput, log_tail_of
from ashat.ids import check_text, validate_tier, validate_update_id
from ashat.workflow.models import ChainReport, Change, Deployment, Event, Lease, Server
from ashat.workflow.ports import Clock, StorePort, SystemClock, iso, iso_after
from ashat.workflow.states import LEASED_STATES, SETTLED, State, check_transition
from ashat.workflow.urls import validate_server_url

DEFAULT_LEASE_S = 15 * 60  # seconds a tier lease lasts unless renewed
MAX_HISTORY = 10_000  # deployments one history request may list

# Told of every state change once it is committed (the ops layer sends notifications from
# it). It must not raise: the change has happened whatever the observer does.
Observer = Callable[[Change], None]


def lease_changes(current: State, target: State) -> tuple[str | None, str | None]:
    """Which tier lease a move ``current -> target`` takes, and which it gives back."""
    take = release = None
    for tier, states in LEASED_STATES.items():
        if target in states and current not in states:
            take = tier
        if current in states and target not in states:
            release = tier
    return take, release


def validate_server_name(name: str) -> str:
    """Return ``name`` stripped, or raise :class:`InvalidInput` (1-100 printable characters)."""
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput(f"invalid server name {name!r}: 1-100 printable characters")
    return name


@dataclass(frozen=True)
class Overview:
    active: list[Deployment]
    recent: list[Deployment]
    leases: list[Lease]


class Workflow:
    """Services shared by the CLI and the HTTP API. ``actor`` is who is asking.

    ``observer``, when given, is called after each committed state change (creation
    included), in the caller's thread.
    """

    def __init__(
        self,
        store: StorePort,
        actor: str,
        clock: Clock | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        observer: Observer | None = None,
    ) -> None:
        if not actor:
            raise InvalidInput("no actor: set ASHAT_USER or pass --as")
        self.store = store
        self.actor = actor
        self.clock = clock or SystemClock()
        self.lease_s = lease_s
        self.observer = observer
        self.owner = f"{actor}@{socket.gethostname()}:{os.getpid()}"

    def now(self) -> str:
        return iso(self.clock.now())

    # -- the one way state changes ---------------------------------------------------------

    def move(
        self,
        update_id: str,
        target: State,
        *,
        event_kind: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        details_update: dict[str, Any] | None = None,
        caused_by: str | None = None,
    ) -> Deployment:
        """Move ``update_id`` to ``target`` through the table, as one compare-and-set.

        ``caused_by`` names who caused a change that this actor only observed (a rollout
        bob started, completing while alice looks at its status): the event is bob's, with
        ``observed_by: alice`` in its details.

        Raises TransitionRefused, Conflict, LeaseHeld (exit 3) or DeploymentNotFound (2).
        """
        dep = self.store.require(update_id)
        check_transition(update_id, dep.state, target)
        take, release = lease_changes(dep.state, target)
        now = self.clock.now()
        actor = caused_by or self.actor
        if actor != self.actor:
            details = {**(details or {}), "observed_by": self.actor}
        moved = self.store.transition(
            update_id,
            dep.state,
            target,
            actor=actor,
            at=iso(now),
            event_kind=event_kind or f"deployment.{target.value}",
            event_details=details,
            reason=reason,
            details_update=details_update,
            take_lease=(take, self.owner, iso_after(now, self.lease_s)) if take else None,
            release_lease=release,
        )
        self._changed(moved, dep.state, iso(now), actor)
        return moved

    def create(
        self, update_id: str, description: str, details: dict[str, Any] | None = None
    ) -> Deployment:
        """Record a new deployment in ``pushing``, taking the PUBLIC lease."""
        validate_update_id(update_id)
        now = self.clock.now()
        at = iso(now)
        dep = Deployment(
            id=update_id,
            state=State.PUSHING,
            description=description,
            created_by=self.actor,
            created_at=at,
            updated_at=at,
            details=dict(details or {}),
        )
        created = self.store.create(
            dep,
            "deployment.pushing",
            {"description": description, **(details or {})},
            take_lease=("public", self.owner, iso_after(now, self.lease_s)),
        )
        self._changed(created, None, at)
        return created

    def _changed(
        self, dep: Deployment, previous: State | None, at: str, actor: str | None = None
    ) -> None:
        if self.observer is not None:
            self.observer(Change(dep, previous, actor or self.actor, at))

    def renew(self, tier: str, update_id: str) -> bool:
        return self.store.renew_lease(tier, update_id, iso_after(self.clock.now(), self.lease_s))

    def remember(self, dep: Deployment, key: str, ask: Callable[[], Any]) -> str | None:
        """``dep.details[key]`` as an earlier attempt of a verb recorded it, else ``ask()``
        now, recorded in the details for the attempts after this one (a resumed verb may
        find the world already changed by the attempt that was interrupted)."""
        if key in dep.details:
            recorded = dep.details[key]
        else:
            recorded = ask()
            self.store.update_details(dep.id, {key: recorded}, self.now())
        return str(recorded) if recorded is not None else None

    def note(
        self,
        update_id: str | None,
        kind: str,
        details: dict[str, Any],
        caused_by: str | None = None,
    ) -> Event:
        """Record an event that does not change state (a step, a check result); with
        ``caused_by`` as :meth:`move` does."""
        actor = caused_by or self.actor
        if actor != self.actor:
            details = {**details, "observed_by": self.actor}
        return self.store.append_event(kind, actor, self.now(), details, update_id)

    def fail(self, update_id: str, error: AshatError) -> None:
        """Move to ``failed`` with ``error``'s message, its kind and the tail of the
        server's log it carries (a hook's or the app's own words: ``deploy status`` shows
        them). Never hides ``error``: if someone else moved the deployment meanwhile (a
        cancel), that move stands and nothing is raised here."""
        tail = log_tail_of(error)
        said: dict[str, Any] = {"log_tail": tail} if tail else {}
        with contextlib.suppress(AshatError):
            self.move(
                update_id,
                State.FAILED,
                reason=error.message[:500],
                details={"kind": error.kind, **said},
                details_update=said,
            )

    # -- verbs -----------------------------------------------------------------------------

    def cancel(self, update_id: str, reason: str | None = None) -> Deployment:
        validate_update_id(update_id)
        if reason is not None:
            check_text(reason, "--reason")
        return self.move(update_id, State.CANCELLED, reason=reason or "cancelled by operator")

    def configure(
        self,
        tier: str,
        url: str,
        name: str,
        token_path: str | None = None,
        ca_cert: str | None = None,
    ) -> tuple[Server, Server | None]:
        """Store the server of ``tier``; return it and the one it replaced (if any)."""
        validate_tier(tier)
        url = validate_server_url(url)
        name = validate_server_name(name)
        old = self.store.server(tier)
        server = Server(tier, name, url, token_path, ca_cert, self.now(), self.actor)
        details: dict[str, Any] = {
            "tier": tier,
            "name": name,
            "url": url,
            "token": "configured" if token_path else None,
            "ca_cert": ca_cert,
        }
        if old:
            details["replaced"] = {"name": old.name, "url": old.url}
        self.store.set_server(server, details)
        return server, old

    def status(self, update_id: str) -> tuple[Deployment, list[Event]]:
        validate_update_id(update_id)
        dep = self.store.require(update_id)
        return dep, self.store.events(update_id, limit=10)

    def overview(self, recent: int = 5) -> Overview:
        ended = sorted(SETTLED)
        return Overview(
            active=self.store.list(limit=1000, exclude_states=ended),
            recent=self.store.list(limit=recent, states=ended),
            leases=self.store.leases(),
        )

    def history(self, limit: int = 20, state: str | None = None) -> list[Deployment]:
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidInput(f"--limit must be 1-{MAX_HISTORY}, not {limit}")
        states = None
        if state is not None:
            try:
                states = [State(state)]
            except ValueError as e:
                raise InvalidInput(
                    f"unknown state {state!r}: expected one of {', '.join(s.value for s in State)}"
                ) from e
        return self.store.list(limit=limit, states=states)

    def log(self, update_id: str) -> list[Event]:
        validate_update_id(update_id)
        self.store.require(update_id)
        return self.store.events(update_id)

    def audit_verify(self, at: str | None = None) -> ChainReport:
        """The chain walked; ``at``, ``SEQ:HASH`` of an event recorded elsewhere, checked
        too (see :func:`ashat.store.audit.verify_chain`). Raises InvalidInput for a bad
        ``at``."""
        from ashat.workflow.audit_anchor import parse_anchor

        return self.store.verify_audit(parse_anchor(at) if at is not None else None)
