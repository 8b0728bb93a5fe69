"""One clock, and one way to write and to read a time (issue 16).

Everything ashat writes is UTC, in one of two fixed-width shapes, so that text order is time
order wherever a time is compared as text:

- :func:`iso` — ``2026-12-05T12:09:35.123456Z``: the control store, the audit trail, leases,
  the agent's activation history;
- :func:`iso_seconds` — ``2026-12-05T12:09:35Z``: what is signed or sent (licenses, roots of
  trust, statements, directives, the fleet protocol) and logs.

:func:`parse` reads either back (and ``+00:00`` for ``Z``), always as an aware UTC time.
Code that decides by time takes a :class:`Clock` (tests pass a settable one).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

UTC = dt.UTC


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


def now() -> dt.datetime:
    """The system's time, aware, in UTC."""
    return dt.datetime.now(UTC)


def iso(t: dt.datetime) -> str:
    """Fixed-width UTC with microseconds: text order is time order."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_after(t: dt.datetime, seconds: float) -> str:
    return iso(t + dt.timedelta(seconds=seconds))


def iso_seconds(t: dt.datetime) -> str:
    """Fixed-width UTC to the second: what is signed, sent or logged."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_from_timestamp(seconds: float) -> str:
    """:func:`iso_seconds` of a POSIX timestamp."""
    return iso_seconds(dt.datetime.fromtimestamp(seconds, UTC))


def parse(text: str) -> dt.datetime:
    """A time written by :func:`iso`, :func:`iso_seconds` or any ISO 8601 form with an
    offset (``Z`` or ``+HH:MM``); a time without one is taken as UTC. Raises
    ``ValueError``."""
    t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def valid_through(text: str) -> str:
    """How an expiry reads to a person: ``through 2027-12-31`` when it is the end of a UTC
    day (``--expires 2027-12-31`` is stored as the instant ``2028-01-01T00:00:00Z``, when it
    stops counting), else ``until`` the time itself. Text that is not a time is returned."""
    try:
        t = parse(text)
    except ValueError:
        return text
    if t.time() == dt.time(0, 0):
        return f"through {(t - dt.timedelta(days=1)).date().isoformat()}"
    return f"until {iso_seconds(t)}"
