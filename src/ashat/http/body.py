"""Request bodies read under a size limit: refused by their declared ``Content-Length``
before any byte is read, and as soon as they pass the limit while streaming."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request

from ashat.http.errors import PayloadTooLarge, RequestInvalid

MAX_JSON_BYTES = 8 * 1024 * 1024  # bytes of a JSON request body
DECIMAL_RE = re.compile(r"[0-9]{1,20}")  # not str.isdigit(), which accepts "²"


def declared_length(headers: Mapping[str, str], limit: int, what: str) -> int | None:
    """The ``Content-Length`` of a request, refusing one over ``limit`` before any read."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not DECIMAL_RE.fullmatch(value):
        raise RequestInvalid(f"invalid Content-Length {value[:40]!r}")
    n = int(value)
    if n > limit:
        raise PayloadTooLarge(f"{what} is {n} bytes, over the limit of {limit}", limit=limit)
    return n


async def read_limited(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """The whole body, refusing it with :class:`PayloadTooLarge` as soon as it passes ``limit``."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes", limit=limit)
    return bytes(buf)


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The request's whole body, under ``limit`` bytes (declared or streamed)."""
    declared_length(request.headers, limit, what)
    return await read_limited(request.stream(), limit, what)


def parse_json_object(raw: bytes, *, allow_empty: bool = False) -> dict[str, Any] | None:
    """``raw`` as a JSON object; ``None`` for an empty body when ``allow_empty``."""
    if allow_empty and not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than we parse
        raise RequestInvalid(f"request body is not JSON ({e})") from e
    if not isinstance(obj, dict):
        raise RequestInvalid("request body must be a JSON object")
    return obj


async def json_object(
    request: Request, *, allow_empty: bool = False, limit: int = MAX_JSON_BYTES
) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` for an empty one when ``allow_empty``)."""
    obj = parse_json_object(await read_body(request, limit), allow_empty=allow_empty)
    return {} if obj is None else obj
