"""Schema migrations: ``python -m notes.migrate up`` applies what is missing, ``python -m
notes.migrate to N`` undoes those above N. Both are idempotent, so every server may run
them (ashat runs ``migrate`` once per release on each server, and ``rollback_migrate`` when a
rollback passes back over a release)."""

from __future__ import annotations

import sys

from notes.db import connect
from notes.migrations import MIGRATIONS


def current(conn) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "to") or (argv[0] == "to" and len(argv) != 2):
        print("usage: python -m notes.migrate up | to N", file=sys.stderr)
        return 2
    with connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4242)")  # one server migrates at a time
        have = current(conn)
        if argv[0] == "up":
            for version, up, _ in MIGRATIONS:
                if version > have:
                    conn.execute(up)
                    conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
                    print(f"applied migration {version}")
        else:
            target = int(argv[1])
            for version, _, down in reversed(MIGRATIONS):
                if target < version <= have:
                    conn.execute(down)
                    conn.execute("DELETE FROM schema_version WHERE version = %s", (version,))
                    print(f"undid migration {version}")
        print(f"schema version {current(conn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
