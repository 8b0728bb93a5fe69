"""``ControlClient``: the ``deploy`` verbs' client of ``ashat serve`` (``deploy --via URL``).

The same transport as :class:`~ashat.transport.client.AgentClient` (timeouts, retries,
size limits, TLS), and so the same blob upload: ``ashat serve`` answers
``/v1/blobs/missing`` and ``/v1/blobs/pack`` as an agent does. What differs is how an
answer is read: ``ashat serve`` says which exit code an error stands for
(``{"error", "kind", "exit_code"}``, :mod:`ashat.api.errors`), and the verb exits with it,
as it would have run locally. An operation that ran and failed (a check, a broken budget,
a broken audit chain) comes back as :class:`ServeFailure` carrying its result, so the verb
prints the same report it prints locally.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ashat.errors import AshatError, InvalidInput, NotFound, OperationFailed, Refused, RemoteError
from ashat.transport.client import AgentClient, json_or_none
from ashat.transport.errors import BadResponse, Unauthorized

ENV_URL = "ASHAT_CONTROL"
ENV_TOKEN = "ASHAT_TOKEN"
ENV_TOKEN_FILE = "ASHAT_TOKEN_FILE"
ENV_CA_CERT = "ASHAT_CONTROL_CA_CERT"
LONG_TIMEOUT_S = 3600.0  # a fleet rollback or a push may run this long on the server


class ServeFailure(OperationFailed):
    """The operation ran on the server and failed (422); ``result`` is what it produced."""

    def __init__(self, message: str, kind: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result


_BY_EXIT: dict[int, type[AshatError]] = {2: InvalidInput, 3: Refused, 4: RemoteError}


class ControlClient(AgentClient):
    """A connection to ``ashat serve`` as the user whose token it carries.

    Nothing is sent twice: an operation may have run when its answer was lost, and 502
    from ``ashat serve`` means PUBLIC or OMEGA failed (exit 4), not a passing fault.
    """

    retry_statuses: frozenset[int] = frozenset()

    @classmethod
    def from_environment(cls, url: str) -> ControlClient:
        """A client of ``url`` with the token from ``ASHAT_TOKEN`` or ``ASHAT_TOKEN_FILE``.

        Raises InvalidInput when the URL is not http(s) or no token is given.
        """
        from ashat.project import read_token_file
        from ashat.workflow.urls import validate_server_url

        try:  # as deploy configure checks a server's: no credentials, a port, a host
            url = validate_server_url(url)
        except InvalidInput as e:
            raise InvalidInput(f"--via / {ENV_URL}: {e.message}") from None
        token = os.environ.get(ENV_TOKEN, "").strip()
        token_file = os.environ.get(ENV_TOKEN_FILE)
        if not token and token_file:
            token = read_token_file(Path(token_file))
        if not token:
            raise InvalidInput(
                f"working through {url} needs your API token: set {ENV_TOKEN} (or "
                f"{ENV_TOKEN_FILE} to a file holding it); an admin makes one with "
                "'ashat users token NAME'"
            )
        ca_cert = os.environ.get(ENV_CA_CERT) or None
        return cls(url, token, ca_cert, timeout_s=LONG_TIMEOUT_S, retries=0)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        **query: Any,
    ) -> dict[str, Any]:
        """One operation of the API; its JSON answer, or the error it stands for."""
        params = {k: _query_value(v) for k, v in query.items() if v is not None}
        if params:
            from urllib.parse import urlencode

            path = f"{path}?{urlencode(params)}"
        return self.request(method, path, json_body=body if body is not None else None)

    @staticmethod
    def _interpret(status: int, body: bytes, url: str) -> dict[str, Any]:
        data = json_or_none(body)
        if not isinstance(data, dict):
            raise BadResponse(f"{url} answered {status} with something that is not a JSON object")
        if status < 400:
            return data
        err = _error_of(status, data, url)
        details = data.get("details")
        if isinstance(details, dict):  # as a local run's error carries them
            err.details = details
        raise err


def _error_of(status: int, data: dict[str, Any], url: str) -> AshatError:
    """The error an answer of ``ashat serve`` stands for (``status`` >= 400)."""
    message = str(data.get("error") or f"HTTP {status}")
    if status in (401, 403):
        return Unauthorized(f"ashat serve refused: {message}")
    if status == 404 and data.get("exit_code") == 2:
        return NotFound(message)
    if status == 422:
        return ServeFailure(message, str(data.get("kind", "failed")), data)
    code = data.get("exit_code")
    if status >= 500 or not isinstance(code, int):
        return BadResponse(f"{url} failed with {status}: {message}")
    err_type = _BY_EXIT.get(code)
    if err_type is not None:
        return err_type(message)
    err = AshatError(message)
    err.exit_code = code
    err.kind = str(data.get("kind", "error"))
    return err


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
