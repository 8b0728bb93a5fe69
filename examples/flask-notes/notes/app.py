"""The API: ``GET /healthz``, ``GET /api/notes``, ``POST /api/notes`` with ``{"body": ...}``."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, abort, jsonify, request

from notes.db import connect
from notes.migrate import current

VERSION = (Path(__file__).parents[1] / "VERSION").read_text().strip()
app = Flask(__name__)


@app.after_request
def headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


@app.get("/healthz")
def health():
    with connect() as conn:
        return jsonify(status="ok", version=VERSION, schema=current(conn))


@app.get("/api/notes")
def notes():
    with connect() as conn:
        rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    return jsonify(notes=[{"id": i, "body": b} for i, b in rows])


@app.post("/api/notes")
def add_note():
    body = (request.get_json(silent=True) or {}).get("body")
    if not isinstance(body, str) or not body.strip():
        abort(400, "a note needs a body")
    with connect() as conn:
        (note_id,) = conn.execute(
            "INSERT INTO notes (body) VALUES (%s) RETURNING id", (body,)
        ).fetchone()
    return jsonify(id=note_id, body=body), 201
