"""Errors the agent answers with: each knows its HTTP status and the JSON it is shown as.

A request the agent refuses becomes ``{"error": "<one line>", "kind": ..., **details}`` with
the status below (:func:`error_body`). Bundle errors (:mod:`ashat.bundle.errors`: unsafe
paths, bad signatures, digest mismatches, …) are answered the same way with 400 (413 for
:class:`~ashat.bundle.errors.ManifestTooLarge`); they are not redefined here::

    AshatError                              (ashat.errors)
    └── HttpError                           (ashat.http.errors, re-exported here:
        │                                    RequestInvalid 400, PayloadTooLarge 413,
        │                                    UploadTooSlow 408, Unauthenticated 401)
        └── AgentError                      status 500 unless a leaf says otherwise
            ├── NoSuchBlob         NotFound     404
            ├── NoSuchRelease      NotFound     404
            ├── BlobsMissing       Refused      409  a manifest names blobs the agent lacks
            ├── ReleaseConflict    Refused      409  same id, other manifest; rollback refused
            ├── ActivationFailed   OperationFailed 422  prepare failed, app never healthy
            ├── ReleaseDamaged     OperationFailed 422  files are not the signed bytes
            ├── StorageFailed                   507  the disk refused a write (else 500)
            └── ShuttingDown                    503  the agent is stopping (clients retry)
"""

from __future__ import annotations

import errno

from ashat.bundle.errors import BundleError, ManifestTooLarge
from ashat.errors import AshatError, InvalidInput, NotFound, OperationFailed, Refused
from ashat.http.errors import (
    HttpError,
    PayloadTooLarge,
    RequestInvalid,
    Unauthenticated,
    UploadTooSlow,
    error_body,
)

__all__ = [
    "ActivationFailed",
    "AgentError",
    "BlobsMissing",
    "NoSuchBlob",
    "NoSuchRelease",
    "PayloadTooLarge",
    "ReleaseConflict",
    "ReleaseDamaged",
    "RequestInvalid",
    "ShuttingDown",
    "StorageFailed",
    "Unauthenticated",
    "UploadTooSlow",
    "error_body",
    "status_of",
]


class AgentError(HttpError):
    """Root of the agent's own refusals; ``status`` is the HTTP status it is answered with."""

    status: int = 500
    kind = "agent"


class NoSuchBlob(AgentError, NotFound):
    status = 404
    kind = "no_such_blob"


class NoSuchRelease(AgentError, NotFound):
    status = 404
    kind = "no_such_release"


class BlobsMissing(AgentError, Refused):
    status = 409
    kind = "blobs_missing"

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} blobs missing", missing=missing)
        self.missing = missing


class WrongApp(AgentError, Refused):
    """A release of another app than the one this agent (an app of a host agent) serves."""

    status = 409
    kind = "wrong_app"


class ReleaseConflict(AgentError, Refused):
    status = 409
    kind = "conflict"


class ReleaseDamaged(AgentError, OperationFailed):
    """Files of a staged release are not the signed bytes any more (written by someone
    else): it was not switched to, its altered blobs are quarantined and its tree removed;
    it must be sent again (a mainframe fetches it again by itself)."""

    status = 422
    kind = "release_damaged"


class ActivationFailed(AgentError, OperationFailed):
    """Activation (or rollback) stopped before anything switched; ``log_tail`` says why."""

    status = 422
    kind = "activation_failed"

    def __init__(self, message: str, *, log_tail: str) -> None:
        super().__init__(message, log_tail=log_tail)
        self.log_tail = log_tail


class StorageFailed(AgentError):
    """The agent's disk refused a write while storing ``what``; nothing of it was kept."""

    kind = "storage"

    def __init__(self, what: str, error: OSError) -> None:
        reason = error.strerror or str(error)
        super().__init__(f"cannot store {what} on this server: {reason}; nothing was kept")
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        self.status = 507 if full else 500  # 507 Insufficient Storage


class ShuttingDown(AgentError):
    status = 503
    kind = "shutting_down"


def status_of(err: AshatError) -> int:
    """The HTTP status an error is answered with."""
    if isinstance(err, HttpError):
        return err.status
    if isinstance(err, ManifestTooLarge):
        return 413
    if isinstance(err, (BundleError, InvalidInput)):
        return 400
    if isinstance(err, Refused):
        return 409
    return 500
