"""Errors of the transport layer; httpx's never pass this boundary.

::

    RemoteError (exit 4)
    └── TransportError
        ├── Unreachable      connection refused, DNS, timeout       (transient)
        ├── TLSFailure       certificate or handshake
        ├── Unauthorized     401/403: missing or wrong token
        └── BadResponse      5xx after retries, non-JSON, over the size limit  (transient)
    OperationFailed (exit 1)
    └── AgentRejected        the agent understood and refused (4xx with a JSON reason)
"""

from __future__ import annotations

from typing import Any

from ashat.errors import OperationFailed, RemoteError


class TransportError(RemoteError):
    kind = "remote"


class Unreachable(TransportError):
    kind = "unreachable"
    transient = True


class TLSFailure(TransportError):
    kind = "tls"


class Unauthorized(TransportError):
    kind = "unauthorized"


class BadResponse(TransportError):
    kind = "bad_response"
    transient = True


class AgentRejected(OperationFailed):
    kind = "rejected"

    def __init__(self, message: str, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(message, status=status, **({"agent": body} if body else {}))
        self.status = status
        self.body = body or {}
