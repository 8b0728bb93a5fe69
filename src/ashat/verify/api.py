"""API Endpoint Test: each ``[[verify.api]]`` entry is one real request to the app.

An entry: ``method`` (GET), ``path``, optional ``json`` body and ``headers``,
``expect_status`` (200), and ``expect_keys`` (top-level JSON keys) or ``schema`` (a JSON
Schema inline, or ``schema_file`` relative to the project).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from ashat.transport import outgoing
from ashat.verify.base import CheckConfigError, CheckContext, Outcome

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _entry_schema(entry: dict[str, Any], root: Path) -> dict[str, Any] | None:
    if "schema" in entry:
        schema = entry["schema"]
        if not isinstance(schema, dict):
            raise CheckConfigError("schema must be a table (a JSON Schema)")
        return schema
    if "schema_file" in entry:
        path = root / str(entry["schema_file"])
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckConfigError(f"cannot read schema_file {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise CheckConfigError(f"schema_file {path} is not a JSON object")
        return loaded
    return None


def _validate_entry(entry: Any, i: int) -> tuple[str, str, int]:
    if not isinstance(entry, dict):
        raise CheckConfigError(f"[[verify.api]] #{i + 1} must be a table")
    method = str(entry.get("method", "GET")).upper()
    path = entry.get("path")
    status = entry.get("expect_status", 200)
    if method not in METHODS:
        raise CheckConfigError(f"[[verify.api]] #{i + 1}: unknown method {method!r}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise CheckConfigError(f"[[verify.api]] #{i + 1}: path must start with '/'")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise CheckConfigError(f"[[verify.api]] #{i + 1}: expect_status must be an HTTP status")
    keys = entry.get("expect_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise CheckConfigError(f"[[verify.api]] #{i + 1}: expect_keys must be a list of strings")
    return method, path, status


def _judge(entry: dict[str, Any], resp: httpx.Response, expect: int, root: Path) -> str | None:
    """``None`` when the answer is as expected, else why not."""
    if resp.status_code != expect:
        return f"answered {resp.status_code}, expected {expect}"
    keys = entry.get("expect_keys")
    schema = _entry_schema(entry, root)
    if keys is None and schema is None:
        return None
    try:
        body = resp.json()
    except ValueError:
        return "answer is not JSON"
    if keys is not None:
        if not isinstance(body, dict):
            return f"answer is a JSON {type(body).__name__}, expected an object"
        missing = [k for k in keys if k not in body]
        if missing:
            return f"answer lacks key(s) {', '.join(missing)}"
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(body, schema)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            return f"answer breaks the schema at {where}: {e.message[:200]}"
        except jsonschema.SchemaError as e:
            raise CheckConfigError(f"invalid JSON Schema: {e.message[:200]}") from e
    return None


class ApiCheck:
    name = "api"
    title = "API Endpoint Test"

    def run(self, ctx: CheckContext) -> Outcome:
        entries = ctx.verify.get("api") or []
        if not entries:
            return Outcome.skipped("no [[verify.api]] entries configured")
        if not isinstance(entries, list):
            raise CheckConfigError("[[verify.api]] must be an array of tables")
        if ctx.app_url is None:
            return Outcome.failed("the release runs no app ([app].run), so no API to test")
        root = Path(ctx.project_root)
        results: list[dict[str, Any]] = []
        with outgoing.client(base_url=ctx.app_url, timeout_s=ctx.timeout_s * 0.8) as http:
            for i, entry in enumerate(entries):
                method, path, expect = _validate_entry(entry, i)
                headers = entry.get("headers") or {}
                if not isinstance(headers, dict):
                    raise CheckConfigError(f"[[verify.api]] #{i + 1}: headers must be a table")
                t0 = time.monotonic()
                try:
                    resp = http.request(
                        method, path, json=entry.get("json"),
                        headers={str(k): str(v) for k, v in headers.items()},
                    )  # fmt: skip
                    problem = _judge(entry, resp, expect, root)
                    status: int | None = resp.status_code
                except httpx.HTTPError as e:
                    problem, status = outgoing.short(e), None
                results.append(
                    {
                        "method": method,
                        "path": path,
                        "status": status,
                        "ms": round((time.monotonic() - t0) * 1000, 1),
                        "ok": problem is None,
                        **({"problem": problem} if problem else {}),
                    }
                )
        bad = [r for r in results if not r["ok"]]
        if bad:
            first = bad[0]
            return Outcome.failed(
                f"{len(bad)} of {len(results)} endpoints wrong: "
                f"{first['method']} {first['path']} {first['problem']}",
                endpoints=results,
            )
        return Outcome.passed(
            f"all {len(results)} endpoints answered as expected", endpoints=results
        )
