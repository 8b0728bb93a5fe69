"""How ``ashat serve`` answers an error: ``{"error": "<one line>", "kind": ..., ...}`` with
the HTTP status of its exit code (DESIGN §8)::

    exit 2  InvalidInput      400   (NotFound: 404; a body too slow: 408, too large: 413)
    exit 3  Refused           409   the state machine, a lost race, a held tier, a policy
    exit 1  OperationFailed   422   it ran and failed: a check, a rollout, a broken audit chain
    exit 4  RemoteError       502   PUBLIC or OMEGA unreachable, unauthorized, or talking nonsense

Authentication and roles answer 401 (no or wrong token) and 403 (a role too weak), before
anything runs.
"""

from __future__ import annotations

from typing import Any

from ashat.errors import AshatError, InvalidInput, NotFound, OperationFailed, Refused, RemoteError
from ashat.http.errors import PayloadTooLarge, UploadTooSlow


def status_of(err: AshatError) -> int:
    if isinstance(err, UploadTooSlow):
        return 408
    if isinstance(err, PayloadTooLarge):  # a blob or an upload past a quota
        return 413
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, InvalidInput):
        return 400
    if isinstance(err, Refused):
        return 409
    if isinstance(err, RemoteError):
        return 502
    if isinstance(err, OperationFailed):
        return 422
    return 422  # AshatError itself: exit 1 as well


def error_body(err: AshatError) -> dict[str, Any]:
    return err.to_json()


class ApiFailure(OperationFailed):
    """An operation that ran and failed, answered 422 with its result next to the error."""

    def __init__(self, message: str, kind: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result

    def to_json(self) -> dict[str, Any]:
        return {**self.result, **super().to_json()}
