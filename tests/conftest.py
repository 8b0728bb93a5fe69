"""Fixtures shared by every test directory: a real store (on a temp SQLite file, and again
on the real PostgreSQL server of this machine), a settable clock, and a project directory
for driving the CLI; and, from ``process_fixtures.py``, the real processes on loopback
(agents, mainframes, ``ashat serve``, a whole hello fleet) that the integration, fault and
browser tests start. Plain helpers are in ``support.py``.

PostgreSQL: one database per test run (``ashat_test_<random>``, dropped at the end), one
schema per test in it. ``ASHAT_TEST_PG`` names the server (default: the local one, as user
postgres). Where none answers, the PostgreSQL variants skip, saying why.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ashat.store.db import Database
from ashat.store.store import Store

# An agent running as root must name the user its app runs as (ashat.agent.confine); every
# agent the tests start, in a process or in this one, takes it from here.
if os.geteuid() == 0:
    os.environ.setdefault("ASHAT_APP_USER", "nobody")

# A warm helper the person running the tests may have started (deploy helper start) must not
# run the commands the tests start: they look for one where none listens, and the helper's
# own tests (tests/integration/test_helper.py) name theirs.
os.environ["ASHAT_HELPER_SOCKET"] = os.path.join(
    tempfile.gettempdir(), f"ashat-tests-{os.getpid()}-no-helper", "deploy.sock"
)
# Nor may a push the tests run start one there (a push run without a helper leaves one for
# the next command, outside CI): the tests that want one start it, or say ASHAT_HELPER=auto.
os.environ["ASHAT_HELPER"] = "manual"

pytest_plugins = ["process_fixtures", "alone"]  # tests/process_fixtures.py, tests/alone.py


class FakeClock:
    """A :class:`ashat.workflow.ports.Clock` that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


PG_SERVER = os.environ.get("ASHAT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


def _pg_unavailable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]' brings it)"
    try:
        psycopg.connect(PG_SERVER, connect_timeout=3).close()
    except psycopg.Error as e:
        return f"no PostgreSQL answers at {PG_SERVER} ({str(e).strip()[:120]})"
    return None


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a database made for this test run (dropped afterwards)."""
    reason = _pg_unavailable()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"ashat_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A control store URL on PostgreSQL, in a schema of this test's own."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A control store URL: a temp SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ashat.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(Database(db_url))
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    """An empty project (``ashat.toml``) as the cwd, acting as ``alice``, without colour;
    its store is ``ASHAT_DB=db_url`` (so every test using it runs on both backends)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.setenv("ASHAT_USER", "alice")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("ASHAT_DB", db_url)
    return root
