"""The service's SQLite database: where it lives, its schema, and the item queries.

The file is ``$HELLO_DB`` when set, else ``$ASHAT_SHARED_DIR/hello.db`` when ashat runs it,
else ``data/hello.db`` under the current directory.
It is created on first use with a ``schema_version`` table (one row: ``1``) and an
``items`` table seeded with two items. Creation runs inside ``BEGIN IMMEDIATE``, so two
processes opening a new file at once (an old and a new release during a switch) seed it
exactly once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_DB",
    "MAX_NAME_LENGTH",
    "SCHEMA_VERSION",
    "SEED_ITEMS",
    "Database",
    "Item",
    "SchemaError",
    "db_path_from_env",
]

SCHEMA_VERSION = 1
DEFAULT_DB = Path("data") / "hello.db"
SEED_ITEMS = ("hello", "world")
MAX_NAME_LENGTH = 200
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200)
);
"""


class SchemaError(RuntimeError):
    """The database file exists but holds a schema this code does not know."""


@dataclass(frozen=True)
class Item:
    id: int
    name: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name}


def db_path_from_env(environ: dict[str, str] | None = None) -> Path:
    """``$HELLO_DB`` if set and non-empty; else ``hello.db`` in ``$ASHAT_SHARED_DIR`` (under
    ashat, whose release directory is read-only); else ``data/hello.db`` in the current
    directory."""
    env = os.environ if environ is None else environ
    value = env.get("HELLO_DB", "").strip()
    shared = env.get("ASHAT_SHARED_DIR", "").strip()
    if value:
        return Path(value)
    return Path(shared) / "hello.db" if shared else Path.cwd() / DEFAULT_DB


class Database:
    """A SQLite file, one connection per thread, the schema ensured on first use."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).absolute()
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._ready = False

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # explicit BEGIN/COMMIT below
            check_same_thread=True,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        self.ensure_schema()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema ----------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the file, tables and seed rows if missing; refuse an unknown version."""
        if self._ready:
            return
        with self._init_lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    rows = conn.execute("SELECT version FROM schema_version").fetchall()
                    if not rows:
                        conn.execute(
                            "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                        )
                        conn.executemany(
                            "INSERT INTO items (name) VALUES (?)", [(n,) for n in SEED_ITEMS]
                        )
                    elif len(rows) != 1 or rows[0][0] != SCHEMA_VERSION:
                        found = ", ".join(str(r[0]) for r in rows)
                        raise SchemaError(
                            f"{self.path}: schema_version is {found}, "
                            f"this hello-service knows only {SCHEMA_VERSION}"
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                conn.close()
            self._ready = True

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT version FROM schema_version").fetchone()
        return int(row[0])

    # -- items -----------------------------------------------------------------------

    def list_items(self) -> list[Item]:
        rows = self._conn().execute("SELECT id, name FROM items ORDER BY id").fetchall()
        return [Item(int(r[0]), str(r[1])) for r in rows]

    def get_item(self, item_id: int) -> Item | None:
        row = self._conn().execute("SELECT id, name FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else Item(int(row[0]), str(row[1]))

    def add_item(self, name: str) -> Item:
        if not name or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"name must be 1 to {MAX_NAME_LENGTH} characters")
        cur = self._conn().execute("INSERT INTO items (name) VALUES (?)", (name,))
        item_id = cur.lastrowid
        assert item_id is not None
        return Item(int(item_id), name)
