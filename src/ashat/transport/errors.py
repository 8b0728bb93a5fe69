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
        ├── AgentRefused     409: a conflict (same id, other content; blobs missing)  exit 3
        ├── AgentNotFound    404: no such release, blob or rollout                       exit 2
        └── AgentInvalid     400, 408, 413: what we sent was wrong                       exit 2

An agent's refusal keeps the agent's own ``kind`` (``conflict``, ``blobs_missing``, ...),
so ``--json`` shows what the server said, with the exit code of its class
(:func:`rejected`).
"""

from __future__ import annotations

from typing import Any

from ashat.errors import InvalidInput, NotFound, OperationFailed, Refused, RemoteError


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


class AgentRefused(AgentRejected, Refused):
    exit_code = 3


class AgentInvalid(AgentRejected, InvalidInput):
    exit_code = 2


class AgentNotFound(AgentRejected, NotFound):
    exit_code = 2


def rejected(message: str, status: int, body: dict[str, Any] | None = None) -> AgentRejected:
    """The error for an agent's 4xx answer: its class by status, the agent's kind kept."""
    cls: type[AgentRejected] = AgentRejected
    if status == 409:
        cls = AgentRefused
    elif status == 404:
        cls = AgentNotFound
    elif status in (400, 408, 413):
        cls = AgentInvalid
    err = cls(message, status, body)
    kind = (body or {}).get("kind")
    if isinstance(kind, str) and kind.replace("_", "").isalnum():
        err.kind = kind
    return err
