"""The roots of ashat's exception tree, split by fault, each carrying its exit code.

Every layer defines its own leaves under these roots; the CLI maps a root to an exit code
in one place (``cli/output.py``) and never shows a traceback for any of them::

    AshatError                      (exit 1 unless a subclass says otherwise)
    ├── OperationFailed             1  the operation ran and failed (a check failed, a budget broke)
    ├── InvalidInput                2  bad usage or invalid input (ids, URLs, files, manifests)
    │   └── NotFound                2  an id or name that does not exist
    ├── InternalError               1  a bug, caught last by the CLI (still one line, or JSON)
    ├── Refused                     3  refused by the state machine, or lost a race
    │   ├── TransitionRefused       (workflow.errors)
    │   ├── Conflict                (workflow.errors)
    │   └── LeaseHeld               (workflow.errors)
    └── RemoteError                 4  a server unreachable, unauthorized, or answering nonsense
"""

from __future__ import annotations

from typing import Any


class AshatError(Exception):
    """Base of every error ashat raises on purpose."""

    exit_code: int = 1
    kind: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "error": self.message,
            "kind": self.kind,
            "exit_code": self.exit_code,
        }
        if self.details:
            out["details"] = self.details
        return out


class OperationFailed(AshatError):
    exit_code = 1
    kind = "failed"


class InvalidInput(AshatError):
    exit_code = 2
    kind = "invalid_input"


class NotFound(InvalidInput):
    kind = "not_found"


class Refused(AshatError):
    exit_code = 3
    kind = "refused"


class InternalError(AshatError):
    """A bug: an exception nobody raised on purpose, shown as one line (exit 1)."""

    kind = "internal"


class RemoteError(AshatError):
    exit_code = 4
    kind = "remote"
    # True when the server went away or failed mid-request (a broken connection, a 5xx):
    # what it did is unknown and trying again may well work. False when it refused us
    # (credentials, TLS), which trying again will not change.
    transient: bool = False


def log_tail_of(err: AshatError) -> str:
    """The tail of the app's (or its hook's) log a server sent with its refusal, if any:
    the agent's answer (``details.agent.log_tail``), as relayed by ``ashat serve`` too."""
    details = err.details
    for where in (details, details.get("agent"), details.get("details")):
        if isinstance(where, dict):
            tail = where.get("log_tail")
            if isinstance(tail, str) and tail.strip():
                return tail
            inner = where.get("agent")
            if isinstance(inner, dict) and isinstance(inner.get("log_tail"), str):
                return str(inner["log_tail"])
    return ""
