"""The one small ``Database`` interface, and the only module that knows SQL dialects.

SQL elsewhere is written once, portable, with ``?`` placeholders. This module opens the
connection, rewrites placeholders for PostgreSQL, runs numbered migrations on first use
(``migrations/NNNN_name.sql``, recorded in ``schema_version``), and gives write
transactions that serialize writers the same way on both: ``BEGIN IMMEDIATE`` on SQLite,
and on PostgreSQL a transaction-scoped advisory lock taken right after ``BEGIN``. So every
read-then-write in a transaction (a compare-and-set of a state, the sequence a push is
given, the head of the audit chain) sees the last writer's result, whoever runs it.

Driver errors never leave this module: :class:`StoreBusy` (exit 3) when another process
holds the write lock past ``ASHAT_STORE_BUSY_TIMEOUT`` seconds (default 10), else
:class:`StoreError` (exit 2: the store named is unusable, or failed a statement).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ashat.errors import InvalidInput, Refused

Row = tuple[Any, ...]
BUSY_TIMEOUT_S = 10.0  # seconds a writer waits for another writer (ASHAT_STORE_BUSY_TIMEOUT)
# The advisory lock key of the control store's writers on PostgreSQL ("ashat" in ASCII).
WRITE_LOCK_KEY = 0x6173686174


class StoreError(InvalidInput):
    kind = "store"


class StoreBusy(Refused):
    """Another process held the store's write lock for longer than we wait."""

    kind = "store_busy"


def busy_timeout_s() -> float:
    """``ASHAT_STORE_BUSY_TIMEOUT`` (seconds, > 0), else :data:`BUSY_TIMEOUT_S`."""
    text = os.environ.get("ASHAT_STORE_BUSY_TIMEOUT", "")
    try:
        value = float(text) if text else BUSY_TIMEOUT_S
    except ValueError:
        raise InvalidInput(f"ASHAT_STORE_BUSY_TIMEOUT={text!r}: expected seconds") from None
    if not 0 < value <= 3600:
        raise InvalidInput(f"ASHAT_STORE_BUSY_TIMEOUT={text!r}: expected 0-3600 seconds")
    return value


_BUSY_WORDS = ("database is locked", "database is busy", "lock timeout", "locknotavailable")


@contextlib.contextmanager
def driver_errors(url: str) -> Iterator[None]:
    """Turn what the driver raises into :class:`StoreBusy` or :class:`StoreError`."""
    try:
        yield
    except sqlite3.Error as e:
        raise _translate(e, url) from e
    except Exception as e:
        if type(e).__module__.split(".")[0] != "psycopg":
            raise
        raise _translate(e, url) from e


def _translate(e: Exception, url: str) -> StoreError | StoreBusy:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = scrub_password(text, url)
    name = type(e).__name__.lower()
    if any(w in text.lower() or w in name for w in _BUSY_WORDS):
        return StoreBusy(
            f"another process is writing to the store at {redact_url(url)} and held it "
            f"longer than {busy_timeout_s():g} s; try again (ASHAT_STORE_BUSY_TIMEOUT "
            "waits longer)"
        )
    return StoreError(f"the store at {redact_url(url)} failed: {text}")


def _wal(conn: sqlite3.Connection) -> None:
    """Put the store in WAL mode. Switching takes an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, while another process is
    switching or migrating a new store: so retry, with jitter, for the busy timeout."""
    deadline = time.monotonic() + busy_timeout_s()
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            busy = any(w in str(e).lower() for w in _BUSY_WORDS)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(pause * (1 + random.random()))
        pause = min(pause * 2, 0.2)


def read_migrations(package: str) -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of ``package``'s ``migrations/NNNN_name.sql``, in order:
    the control store's and the fleet's are kept the same way."""
    out = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def _migrations() -> list[tuple[int, str, str]]:
    return read_migrations("ashat.store")


class Database:
    """A connection to the control store, SQLite or PostgreSQL.

    Not shared between threads: each thread or process opens its own.
    """

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url
        self._tx_depth = 0
        self._lock = threading.RLock()
        if url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self._conn: Any = self._open_postgres(url)
        elif url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self._conn = self._open_sqlite(Path(url[len("sqlite:///") :]))
        else:
            raise StoreError(
                f"unsupported database URL {redact_url(url)!r}: use sqlite:///PATH or postgresql://..."
            )
        self._migrate()

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def _open_sqlite(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # the store holds tokens' hashes and the audit trail: 0600
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(
                str(path), timeout=busy_timeout_s(), isolation_level=None, check_same_thread=False
            )
            _wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise _translate(e, f"sqlite:///{path}") from e
        except OSError as e:
            raise StoreError(f"cannot open the store at {path}: {e}") from e
        return conn

    @staticmethod
    def _open_postgres(url: str) -> Any:
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - depends on the install
            raise StoreError("PostgreSQL needs psycopg: pip install 'ashat[postgres]'") from e
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:  # libpq quotes the URL it could not read, password too
            text = scrub_password(str(e).strip(), url)
            raise StoreError(f"cannot connect to {redact_url(url)}: {text}") from e

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    # -- statements ------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgresql":
            return sql.replace("?", "%s")
        return sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with self._lock, driver_errors(self.url):
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return int(cur.rowcount if cur.rowcount is not None else 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock, driver_errors(self.url):
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def lock_clause(self) -> str:
        """Suffix for a SELECT whose row the transaction must own (no-op on SQLite)."""
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction; nested calls join the outer one.

        SQLite takes the write lock at BEGIN (IMMEDIATE) so two writers never both read a
        stale row and then both write: the second waits, then sees the first's result.
        """
        with self._lock:
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield self
                finally:
                    self._tx_depth -= 1
                return
            with driver_errors(self.url):
                if self.dialect == "sqlite":
                    self._conn.execute("BEGIN IMMEDIATE")
                else:
                    self._conn.execute("BEGIN")
                    try:
                        self._conn.execute(
                            "SELECT set_config('lock_timeout', %s, true)",
                            (f"{int(busy_timeout_s() * 1000)}ms",),
                        )
                        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
            self._tx_depth = 1
            try:
                yield self
            except BaseException:
                self._tx_depth = 0
                with contextlib.suppress(Exception):  # the error that got us here is the news
                    self._conn.execute("ROLLBACK")
                raise
            self._tx_depth = 0
            with driver_errors(self.url):
                self._conn.execute("COMMIT")

    # -- migrations ------------------------------------------------------------------------

    def _migrate(self) -> None:
        try:
            if self.dialect == "postgresql":
                if self._pg_current():
                    return
                # Racing first opens: the write lock makes one migrate and the rest wait,
                # then find it done (CREATE TABLE IF NOT EXISTS alone races on PostgreSQL).
                with self.transaction():
                    self._apply_migrations()
            else:
                self._apply_migrations()
        except (StoreError, StoreBusy):
            raise
        except Exception as e:
            raise StoreError(f"cannot migrate the store at {redact_url(self.url)}: {e}") from e

    def _pg_current(self) -> bool:
        """Whether the PostgreSQL store is already at the newest version (no lock taken)."""
        exists = self.query_one("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists or not exists[0]:
            return False
        return self.schema_version() >= max(v for v, _, _ in _migrations())

    def _apply_migrations(self) -> None:
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = self.schema_version()
        for version, name, sql in [m for m in _migrations() if m[0] > current]:
            with self.transaction():
                again = self.query_one(
                    "SELECT version FROM schema_version WHERE version = ?", (version,)
                )
                if again:  # another process applied it while we waited for the lock
                    continue
                self._executescript(sql)
                self.execute(
                    "INSERT INTO schema_version (version, name, applied_at) "
                    "VALUES (?, ?, CURRENT_TIMESTAMP)",
                    (version, name),
                )

    def _executescript(self, sql: str) -> None:
        # Statements are split on ';' at line ends: migration files keep one statement per
        # ';'-terminated block and no ';' inside string literals.
        for stmt in sql.split(";\n"):
            body = "\n".join(
                line for line in stmt.splitlines() if not line.strip().startswith("--")
            ).strip()
            if body:
                self._conn.execute(body.rstrip(";"))

    def schema_version(self) -> int:
        row = self.query_one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0


def redact_url(url: str) -> str:
    """Hide the passwords in a database URL: the userinfo's (``postgresql://u:secret@h/db``
    -> ``u:***@``, up to the last ``@``: a password pasted with ``/``, ``?`` or ``#`` in it
    unescaped is hidden whole) and any ``password=`` value of its query or of a
    ``key=value`` string (``?password=secret``, ``sslpassword=``) -> ``password=***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _PASSWORD_PARAM.sub(r"\1***", url)
    creds, at, after = rest.rpartition("@")
    if at:
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        rest = f"{creds}@{after}"
    path, qmark, query = rest.partition("?")
    query = _PASSWORD_PARAM.sub(r"\1***", query)
    return f"{scheme}://{path}{qmark}{query}"


_PASSWORD_PARAM = re.compile(r"(?i)((?:^|[&;\s])[a-z_]*password=)[^&;\s]*")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(.*)@")  # to the last @


def scrub_password(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with ``url``'s password masked wherever it
    appears, as given and percent-decoded, even where the URL is too broken to parse (a
    driver quotes what it could not read), and any ``password=`` value masked."""
    from urllib.parse import unquote

    found = _USERINFO.match(url)
    if found and ":" in found.group(1):
        given = found.group(1).split(":", 1)[1]
        for secret in sorted({given, unquote(given)}, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
    return _PASSWORD_PARAM.sub(r"\1***", text)


def default_sqlite_url(project_root: Path) -> str:
    return f"sqlite:///{project_root / '.ashat' / 'ashat.db'}"


def database_url(project_root: Path) -> str:
    return os.environ.get("ASHAT_DB") or default_sqlite_url(project_root)
