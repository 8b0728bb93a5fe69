"""The agent (DESIGN §5): the server run on PUBLIC and OMEGA.

It receives bundles by difference, stages verified releases, activates them atomically,
supervises the release's app, and rolls back. The flow, and the module for each part:

- :mod:`ashat.cli.agent_cmd` — ``ashat agent``; :mod:`.config` — its options as an
  :class:`~.config.AgentConfig`; :mod:`.runner` — uvicorn, signals, the ready line;
  :mod:`ashat.roles` — each role assembled (OMEGA's fleet routes, a mainframe's pull loop:
  the agent never imports :mod:`ashat.fleet`).
- :mod:`.confine` — where the app runs (its own user, a bubblewrap sandbox); :mod:`.fsck`
  — ``ashat agent fsck``.
- :mod:`.server` — the Starlette app (routes, bearer auth, JSON errors, metrics middleware)
  over :class:`~.core.Agent` (:mod:`.core`), which does each operation under one lock.
- :mod:`.receive` — request bodies under limits, streamed blobs and packs, into
  :mod:`.blobs`, the content-addressed store.
- :mod:`.releases` — materialized trees and the ``current``/``previous`` symlinks, in the
  data directory laid out by :mod:`.layout`; :mod:`.state` — ``state.json`` and the pure
  rollback and pruning decisions.
- :mod:`.supervisor` — the app's ``prepare`` hook and ``run`` process, health, stop.
- :mod:`.errors` — what the agent answers with, and the HTTP status of each error.
"""
