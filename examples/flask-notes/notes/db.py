"""The connection, from ``DATABASE_URL`` (the agent's ``--app-env`` file sets it)."""

from __future__ import annotations

import os

import psycopg


def connect() -> psycopg.Connection:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: put it in the agent's --app-env file")
    return psycopg.connect(url, autocommit=True, connect_timeout=10)
