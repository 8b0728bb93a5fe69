"""Named crash points, for the fault suite (tests/faults/) to kill a process at a real step.

``crash_point(name)`` marks a step boundary in the agent, a mainframe or OMEGA (the blob
write, the pack's commit, staging, the symlink switch, …). It does nothing unless the
environment variable ``ASHAT_CRASH_AT`` names that point when the process starts::

    ASHAT_CRASH_AT=<point>:<n>[:<action>][,<point>:<n>[:<action>]…]

At the ``n``-th hit of ``point`` (counting from 1) the process takes ``action``; a point may
be named more than once, for different hits (``blob.write:1:slow,blob.write:2:slow``):

- ``kill`` (the default): ``SIGKILL`` to itself — no handler, no ``finally``, no flush,
  exactly what a power cut or the OOM killer leaves behind;
- ``enospc``: raise ``OSError(ENOSPC)``, as a full disk would at that write;
- ``slow``: sleep :data:`SLOW_S` seconds and go on, as a slow disk (or a big release) would.

Unset (always, outside the tests) the check is one truth test of an empty dict. The points
and where they sit are listed in tests/faults/README.md.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "ASHAT_CRASH_AT"
ACTIONS = ("kill", "enospc", "slow")
SLOW_S = 3.0  # how long ``slow`` sleeps


def _parse(spec: str) -> dict[str, dict[int, str]]:
    """``{point: {hit: action}}``."""
    plan: dict[str, dict[int, str]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition(":")
        count, _, action = rest.partition(":")
        action = action or "kill"
        if not name or not count.isdigit() or int(count) < 1 or action not in ACTIONS:
            raise ValueError(
                f"{ENV}: bad entry {item!r}; expected <point>:<n>[:kill|enospc|slow] with n >= 1"
            )
        hits = plan.setdefault(name, {})
        if int(count) in hits:
            raise ValueError(f"{ENV}: hit {count} of {name!r} is named twice")
        hits[int(count)] = action
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}


def reload() -> None:
    """Read ``ASHAT_CRASH_AT`` again: a warm helper's child (:mod:`ashat.cli.helper`) takes
    its client's environment after this module was imported."""
    global _PLAN
    _PLAN = _parse(os.environ.get(ENV, ""))
    _HITS.clear()


def crash_point(name: str) -> None:
    """Die (or fail with ENOSPC, or wait) here if ``ASHAT_CRASH_AT`` says so; see the module
    docstring."""
    if not _PLAN:
        return
    _hit(name)


def _hit(name: str) -> None:
    planned = _PLAN.get(name)
    if planned is None:
        return
    hits = _HITS[name] = _HITS.get(name, 0) + 1
    action = planned.get(hits)
    if action is None:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "slow":
        time.sleep(SLOW_S)
        return
    os.kill(os.getpid(), signal.SIGKILL)
