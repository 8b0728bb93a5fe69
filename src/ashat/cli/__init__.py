"""The command-line front ends: ``deploy`` (the seed's verbs) and ``ashat`` (servers, keys, demo).

Heavy modules (httpx, starlette, cryptography, rich) are imported inside the verbs that need
them, so ``deploy status`` starts fast.
"""

import sys

UNUSED = ("httpx._main", "trio")  # modules no verb of ours runs (lean_start)


def lean_start() -> None:
    """Keep what no verb uses off the start-up path. ``import httpx`` also imports httpx's
    own command-line tool (``httpx._main``: rich, pygments) and httpcore probes for trio
    whenever they are installed; ashat runs neither, and here they cost every verb that
    talks HTTP ~60 ms of its start-up (docs/performance.md). Marked absent, the imports
    skip them, as they do where they are not installed. Called by the ``deploy`` entry point
    only (``ashat`` runs servers, which load check plug-ins); ``deploy verify`` takes the
    marks back before it imports httpx or loads plug-ins (:func:`unlean`), which may use
    anything installed."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def unlean() -> None:
    """Undo :func:`lean_start`: third-party code is about to run in this process."""
    for name in UNUSED:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
