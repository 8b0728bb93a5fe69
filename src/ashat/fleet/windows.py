"""Maintenance windows and update locks: when a mainframe may switch releases (issue 19).

A mainframe given ``--maintenance-window`` installs only inside one of its windows, each a
weekly range in the machine's own time zone (``--maintenance-tz``, else the system's)::

    daily 02:00-04:00        every day
    Sat 01:00-05:00          one day
    Mon-Fri 22:00-06:00      weekdays, overnight (ends the next morning)
    Sat,Sun 00:00-24:00      whole days

and an app may ask it to wait: while ``$ASHAT_SHARED_DIR/update.lock`` exists (for at most
``--update-lock-max`` seconds from when the agent first saw it), nothing is switched.

Outside a window, or locked, the mainframe says so in each poll (``hold=window|lock``):
OMEGA then sends it no directive, and its rollout counts it as *held*: waiting, not
failed, whatever the wave's timeout (the status names those held). When the window opens
or the lock goes, the next poll gets the release.

Pure: the time is given.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_RE = re.compile(
    r"(?P<days>daily|[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})"
)
LOCK_FILE = "update.lock"  # in the app's $ASHAT_SHARED_DIR
HOLDS = ("window", "lock")  # what a poll's hold= may say


class WindowError(ValueError):
    """A window that does not parse, or can never open."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight; <= start: it ends the next day
    text: str

    def contains(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # overnight: from start on a listed day until end the next day
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def _minutes(text: str, what: str, allow_24: bool) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise WindowError(f"maintenance window {what}: {text} is not a time of day")
    return hours * 60 + minutes


def _days(spec: str, window: str) -> frozenset[int]:
    if spec == "daily":
        return frozenset(range(7))
    out: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise WindowError(
                f"maintenance window {window!r}: days are daily or Mon..Sun, e.g. Mon-Fri"
            )
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def parse_window(text: str) -> Window:
    """One ``DAYS HH:MM-HH:MM``. Raises :class:`WindowError`, naming the text."""
    m = _WINDOW_RE.fullmatch(text.strip().lower())
    if m is None:
        raise WindowError(
            f"maintenance window {text!r}: expected DAYS HH:MM-HH:MM, e.g. 'Sat 02:00-04:00' "
            "or 'daily 01:00-03:00'"
        )
    start = _minutes(m["start"], repr(text), allow_24=False)
    end = _minutes(m["end"], repr(text), allow_24=True)
    if start == end:
        raise WindowError(f"maintenance window {text!r} never opens (it starts as it ends)")
    return Window(_days(m["days"], text), start, end, text.strip())


def zone(name: str | None) -> dt.tzinfo | None:
    """The time zone ``name`` (IANA, e.g. Europe/Berlin); None for the system's. Raises
    :class:`WindowError`."""
    if name is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise WindowError(f"--maintenance-tz {name!r} is not a time zone name: {e}") from e


def in_window(windows: tuple[Window, ...], local: dt.datetime) -> bool:
    """Whether ``local`` (the machine's time) is inside a window (no windows: always)."""
    return not windows or any(w.contains(local) for w in windows)


def lock_holds(since: float | None, now: float, max_s: float) -> bool:
    """Whether an update lock first seen at ``since`` (None: no lock) still defers a switch."""
    return since is not None and 0 <= now - since < max_s


def holds(hold: str | None, rollback: bool) -> bool:
    """Whether a mainframe's ``hold`` keeps back a directive: a window holds any; the app's
    lock only an install (the app may be the very release a rollback removes)."""
    return hold is not None and not (rollback and hold == "lock")
