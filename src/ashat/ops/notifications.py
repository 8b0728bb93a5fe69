"""The workflow's observer that sends ``[[notify]]`` webhooks, one dispatcher per store.

:func:`observer_for` reads the targets from ``ashat.toml`` (a malformed table is refused
now, with the key that is wrong) and returns the callback :class:`Workflow` calls after each
committed change: it renders the message and hands it to the store's
:class:`~ashat.notify.delivery.Dispatcher`, which sends it in the background. A delivery
that fails becomes a ``notify.failed`` audit event of the deployment, written through a
connection of its own (the sending thread's).

A ``deploy`` verb calls :func:`flush_all` before its process exits: at most
:data:`FLUSH_S` seconds are spent waiting for deliveries in flight.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ashat.notify.config import Target, parse_targets

if TYPE_CHECKING:
    from ashat.notify.delivery import Dispatcher, RecordFailure
    from ashat.notify.messages import Message
    from ashat.ops.project import Project
    from ashat.workflow.models import Change
    from ashat.workflow.service import Observer

FLUSH_S = 3.0  # the longest a short-lived process waits for its notifications at exit

log = logging.getLogger("ashat.notify")
_lock = threading.Lock()
_dispatchers: dict[str, Dispatcher] = {}


def observer_for(project: Project) -> Observer | None:
    """The observer sending ``project``'s notifications, or None when it has none."""
    config = project.config()
    targets = parse_targets(config.tables.get("notify"))
    updates = tracker_targets(config.table("tasks").get("update"))
    if not targets and not updates:
        return None
    from ashat.notify.messages import Message, render
    from ashat.notify.trackers import encode, requests_for

    name = config.app.name or project.root.name
    dispatcher = dispatcher_for(project.url)

    def observe(change: Change) -> None:
        try:
            for target in targets:
                if target.wants(change.deployment.state.value):
                    dispatcher.submit(target, render(change, name, target.format))
            dep = change.deployment
            for target in updates:
                assert target.tracker is not None
                wanted = target.wants(dep.state.value)
                requests = requests_for(target.tracker, change, name) if wanted else []
                if requests:
                    body = encode(requests)
                    dispatcher.submit(target, Message(dep.state.value, dep.id, change.actor, body))
        except Exception:  # the change is committed; a notification must never undo it
            log.exception("could not queue notifications of %s", change.deployment.id)

    return observe


def tracker_targets(tables: object) -> list[Target]:
    """``[[tasks.update]]`` as dispatcher targets (:mod:`ashat.notify.trackers`)."""
    from ashat.notify.trackers import parse_updates

    return [
        Target(
            index=u.index,
            events=u.events,
            format="tracker",
            tracker=u,
            retries=u.retries,
            timeout_s=u.timeout_s,
        )
        for u in parse_updates(tables)
    ]


def dispatcher_for(db_url: str) -> Dispatcher:
    from ashat.notify.delivery import Dispatcher

    with _lock:
        found = _dispatchers.get(db_url)
        if found is None:
            found = _dispatchers[db_url] = Dispatcher(_recorder(db_url))
        return found


def flush_all(timeout_s: float = FLUSH_S) -> int:
    """Wait (bounded, shared by all) for deliveries in flight; return how many were given up."""
    import time

    deadline = time.monotonic() + timeout_s
    with _lock:
        dispatchers = list(_dispatchers.values())
    return sum(d.flush(max(0.0, deadline - time.monotonic())) for d in dispatchers)


def close_all() -> None:
    with _lock:
        dispatchers = list(_dispatchers.values())
    for d in dispatchers:
        d.close()


def _recorder(db_url: str) -> RecordFailure:
    def record(message: Message, target: Target, reason: str, attempts: int) -> None:
        from ashat.store.db import Database
        from ashat.store.store import Store
        from ashat.workflow.ports import SystemClock, iso

        store = Store(Database(db_url))
        try:
            store.append_event(
                "notify.failed",
                message.actor,
                iso(SystemClock().now()),
                {
                    "event": message.event,
                    "target": target.index + 1,
                    "to": target.label(),
                    "attempts": attempts,
                    "error": reason,
                },
                message.update_id,
            )
        finally:
            store.close()

    return record
