"""Database Connection, agent side: connect from the server, ``SELECT 1``, the schema version.

The URL is ``body["url"]``, or the app-environment variable named by ``body["url_env"]``
(which wins when both are given and it is set). ``sqlite:///rel/path`` is relative to the
release if it ships that file, else to ``$ASHAT_SHARED_DIR`` (the app's writable
directory); ``sqlite:////abs/path`` is absolute; the file is opened read-only, so a missing one
is reported, never created. ``postgresql://`` and ``postgres://`` go through psycopg 3 (the
``[postgres]`` extra) in a read-only session with the check's time as connect and
statement timeout.

Credentials never leave this module: URLs are shown through :func:`display_url`, and every
driver message is scrubbed of the password (as written and decoded), ``PGPASSWORD`` and the
secret-looking values of the app's environment before it is put in a result.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from ashat.agent.checks.base import (
    BadBody,
    Deadline,
    elapsed_ms,
    env_secrets,
    guarded,
    optional_str,
    result,
    scrub,
    timeout_of,
    url_secrets,
)
from ashat.store.db import redact_url

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_PREFIX = "sqlite:///"
MAX_MESSAGE_CHARS = 400
PG_MIN_CONNECT_TIMEOUT_S = 2  # libpq treats anything lower as 2


class ProbeFailed(Exception):
    """The database answered badly or not at all; the message is already scrubbed."""


@dataclass(frozen=True)
class Request:
    url: str
    source: str  # "url" or "url_env"
    url_env: str | None
    query: str | None
    expect: Any  # None: no expectation
    timeout_s: float


def display_url(url: str) -> str:
    """``url`` fit to show: the userinfo password and any ``password=`` value hidden."""
    shown = redact_url(url)
    return scrub(shown, url_secrets(url))


def _request(body: Mapping[str, Any], env: Mapping[str, str]) -> Request | dict[str, Any]:
    """The validated request, or the result to answer at once (skipped, or url_env unset)."""
    timeout_s = timeout_of(body)
    url = optional_str(body, "url")
    url_env = optional_str(body, "url_env")
    query = optional_str(body, "schema_version_query")
    expect = body.get("expect_schema_version")
    if expect is not None and not isinstance(expect, str | int | float):
        raise BadBody("expect_schema_version must be a string or a number")
    if url_env is not None and env.get(url_env):
        return Request(env[url_env], "url_env", url_env, query, expect, timeout_s)
    if url is not None:
        return Request(url, "url", None, query, expect, timeout_s)
    if url_env is not None:
        return result(
            "failed",
            f"the database URL variable {url_env} is not set in the app's environment",
            url_env=url_env,
        )
    return result("skipped", "no [verify.database] url or url_env configured")


def _same_version(found: Any, expected: Any) -> bool:
    return bool(found == expected or str(found) == str(expected))


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _message(err: BaseException, secrets: list[str]) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = scrub(text, secrets)
    return text[:MAX_MESSAGE_CHARS]


def _run_probes(
    conn: Any,
    req: Request,
    started: float,
    errors: type[Exception],
    fail: Callable[[str, Exception], NoReturn],
    *,
    count_tables: bool = False,
) -> dict[str, Any]:
    """On an open connection (either driver): ``SELECT 1`` timed, the number of tables when
    ``count_tables`` (SQLite), then ``req.query``; what they found. One of ``errors`` goes
    to ``fail`` with the name of the step that raised it, for the driver's own message."""
    found: dict[str, Any] = {"connect_ms": elapsed_ms(started)}
    stage = "SELECT 1"
    try:
        t = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        found["latency_ms"] = elapsed_ms(t)
        if count_tables:
            # SELECT 1 never reads the file; this does, so a non-database file fails here.
            stage = "reading the schema"
            found["tables"] = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
        if req.query is not None:
            stage = "the schema version query"
            found["schema_row"] = conn.execute(req.query).fetchone()
    except errors as e:
        fail(stage, e)
    return found


# -- SQLite ----------------------------------------------------------------------------------


def sqlite_path(url: str, root: Path, shared: Path | None = None) -> Path:
    """The file a ``sqlite:///`` URL names: a relative path is the release's file if it
    ships one, else the app's in ``shared`` (``$ASHAT_SHARED_DIR``: the release is
    read-only to the app, so that is where an app's database lives)."""
    rest = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
    if not rest:
        raise BadBody("url: a sqlite URL needs a path (sqlite:///relative or sqlite:////absolute)")
    path = Path(rest)
    if path.is_absolute():
        return path
    if shared is not None and not (root / path).exists():
        return shared / path
    return root / path


def _refuse_agents_own(path: Path, data_dir: Path, root: Path, shared: str | None) -> None:
    """A SQLite file in the agent's data directory is the agent's (state, OMEGA's fleet
    database), not the app's, unless it is in the release or the shared directory: the
    check runs with the agent's rights, and a bearer token must not read the agent's files
    through it. Raises :class:`BadBody`."""
    real = path.resolve()
    mine = [root] + ([Path(shared).resolve()] if shared else [])
    if real.is_relative_to(data_dir.resolve()) and not any(real.is_relative_to(d) for d in mine):
        raise BadBody(
            f"url: {path} is a file of the agent's data directory, not the app's; the "
            "database check opens the app's own (in its release or $ASHAT_SHARED_DIR, or "
            "outside the agent's directory)"
        )


def probe_sqlite(path: Path, req: Request, deadline: Deadline) -> dict[str, Any]:
    """Open ``path`` read-only and run the probes; raises :class:`ProbeFailed`."""
    if not path.is_file():
        raise ProbeFailed(f"database file {path} does not exist")
    started = time.perf_counter()
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro",
            uri=True,
            timeout=deadline.remaining(),
            isolation_level=None,
        )
    except sqlite3.Error as e:
        raise ProbeFailed(f"cannot open {path}: {e}") from e

    def fail(stage: str, e: Exception) -> NoReturn:
        if deadline.expired():
            raise ProbeFailed(f"{stage} did not finish within {req.timeout_s:g} s") from e
        raise ProbeFailed(f"{stage} failed on {path}: {e}") from e

    # A query still running when time is up is interrupted (it then raises OperationalError).
    timer = threading.Timer(deadline.remaining(), conn.interrupt)
    timer.start()
    try:
        return _run_probes(conn, req, started, sqlite3.Error, fail, count_tables=True)
    finally:
        timer.cancel()
        conn.close()


# -- PostgreSQL ------------------------------------------------------------------------------


def probe_postgres(
    req: Request, env: Mapping[str, str], secrets: list[str], deadline: Deadline
) -> dict[str, Any]:
    """Connect with psycopg 3 in a read-only session and run the probes; raises
    :class:`ProbeFailed` (scrubbed) or :class:`ImportError` when psycopg is missing."""
    import psycopg

    remaining = deadline.remaining()
    options = (
        f"-c default_transaction_read_only=on -c statement_timeout={max(1, int(remaining * 1000))}"
    )
    kwargs: dict[str, Any] = {
        "connect_timeout": max(PG_MIN_CONNECT_TIMEOUT_S, math.ceil(remaining)),
        "options": options,
        "autocommit": True,
    }
    # libpq reads PG* variables from the agent's own environment only; the app's may hold one.
    if env.get("PGPASSWORD") and not url_secrets(req.url):
        kwargs["password"] = env["PGPASSWORD"]
    started = time.perf_counter()
    try:
        conn = psycopg.connect(req.url, **kwargs)
    except Exception as e:
        raise ProbeFailed(f"cannot connect: {_message(e, secrets)}") from None

    def fail(stage: str, e: Exception) -> NoReturn:
        raise ProbeFailed(f"{stage} failed: {_message(e, secrets)}") from None

    try:
        return _run_probes(conn, req, started, Exception, fail)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# -- the check -------------------------------------------------------------------------------


@guarded("database")
def check_database(
    release_dir: Path, body: dict[str, Any], env: Mapping[str, str], data_dir: Path | None = None
) -> dict[str, Any]:
    """Connect to the app's database, run ``SELECT 1`` and the schema version query.

    Details: ``backend`` ("sqlite" | "postgresql"), ``url`` (password hidden), ``source``
    ("url" | "url_env"), ``url_env`` (the variable's name, when used), ``path`` (SQLite),
    ``connect_ms``, ``latency_ms`` (the ``SELECT 1`` round trip), ``tables`` (SQLite),
    ``schema_version`` and ``expect_schema_version`` when asked, ``error`` on failure.
    """
    req = _request(body, env)
    if isinstance(req, dict):
        return req
    deadline = Deadline(req.timeout_s)
    secrets = url_secrets(req.url) + env_secrets(env)
    if env.get("PGPASSWORD"):
        secrets.append(env["PGPASSWORD"])
    details: dict[str, Any] = {"url": display_url(req.url), "source": req.source}
    if req.url_env is not None:
        details["url_env"] = req.url_env
    try:
        if req.url.startswith(SQLITE_PREFIX):
            shared = env.get("ASHAT_SHARED_DIR")
            root = Path(release_dir).resolve()
            path = sqlite_path(req.url, root, Path(shared) if shared else None)
            if data_dir is not None:
                _refuse_agents_own(path, data_dir, root, shared)
            details.update(backend="sqlite", path=str(path))
            found = probe_sqlite(path, req, deadline)
        elif req.url.startswith(POSTGRES_SCHEMES):
            details["backend"] = "postgresql"
            try:
                found = probe_postgres(req, env, secrets, deadline)
            except ImportError:
                return result(
                    "error",
                    "PostgreSQL needs psycopg on the agent: pip install 'ashat[postgres]'",
                    **details,
                )
        else:
            field = "url" if req.source == "url" else f"url_env ({req.url_env})"
            raise BadBody(
                f"{field}: unsupported database URL {details['url']!r}: "
                "use sqlite:///PATH or postgresql://..."
            )
    except ProbeFailed as e:
        return result("failed", str(e), **details, error=str(e))
    details.update({k: v for k, v in found.items() if k != "schema_row"})
    latency = f"{details['latency_ms']:g} ms"
    where = details["url"]
    if req.query is None:
        return result("passed", f"connected to {where}; SELECT 1 in {latency}", **details)

    row = found.get("schema_row")
    if row is None:
        msg = "the schema version query returned no rows"
        return result("failed", msg, **details, schema_version=None, error=msg)
    version = _json_value(row[0]) if len(row) else None
    details["schema_version"] = version
    if req.expect is not None:
        details["expect_schema_version"] = req.expect
        if not _same_version(version, req.expect):
            msg = f"schema version is {version!r}, expected {req.expect!r}"
            return result("failed", msg, **details, error=msg)
    return result(
        "passed",
        f"connected to {where}; SELECT 1 in {latency}; schema version {version}",
        **details,
    )
