"""The refusals any of our servers answers with, each with its HTTP status::

    AshatError                              (ashat.errors)
    └── HttpError                           status 500 unless a leaf says otherwise
        ├── RequestInvalid     InvalidInput 400  malformed JSON, digest, header or body
        ├── PayloadTooLarge    InvalidInput 413  a body over its limit
        ├── UploadTooSlow      InvalidInput 408  a body that fell behind the minimum pace
        └── Unauthenticated    InvalidInput 401  missing or wrong credentials

The agent's own refusals (:mod:`ashat.agent.errors`) are :class:`HttpError` too.
"""

from __future__ import annotations

from typing import Any

from ashat.errors import AshatError, InvalidInput


class HttpError(AshatError):
    """An error a server answers with ``status`` (and ``Retry-After`` when the same request
    may well succeed that many seconds later)."""

    status: int = 500
    kind = "http"
    retry_after_s: int | None = None


class RequestInvalid(HttpError, InvalidInput):
    status = 400
    kind = "invalid_request"


class PayloadTooLarge(HttpError, InvalidInput):
    status = 413
    kind = "too_large"


class UploadTooSlow(HttpError, InvalidInput):
    status = 408
    kind = "too_slow"


class Unauthenticated(HttpError, InvalidInput):
    status = 401
    kind = "unauthenticated"


def error_body(err: AshatError) -> dict[str, Any]:
    """The JSON answer for ``err``: its details, then ``error`` and ``kind`` (never overridden)."""
    body: dict[str, Any] = dict(err.details)
    body["error"] = err.message
    body["kind"] = err.kind
    return body
