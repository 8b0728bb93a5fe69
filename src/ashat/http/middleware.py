"""ASGI middleware both kinds of server use.

- :class:`BearerAuth`: every request but the open ones needs ``Authorization: Bearer <token>``
  (the agents; ``ashat serve`` authenticates per user in its handlers).
- :class:`RequestMetrics`: requests counted by method, route template and status.
- :class:`UploadPace`: a minimum pace for request bodies: slow retrieval, the other way round.

A client that sends a request body a byte now and then never trips a read timeout, and
would hold a connection and a handler for as long as it likes. :class:`UploadPace` gives
each body ``grace_s`` seconds from the handler's first read, then asks it to keep up an
average of ``min_rate`` bytes a second: the body's next piece must arrive by
``start + grace_s + received / min_rate``. One that falls behind is answered 408
(:class:`~.errors.UploadTooSlow`) by the handler reading it, whose cleanup then removes what
it had written — as for a client that went away — and the connection is closed with the
answer (``Connection: close``), not held open for the rest of the body. Only the body is
paced: once its last piece has arrived, ``receive`` is passed through untouched.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ashat.http.errors import UploadTooSlow
from ashat.http.limits import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S

__all__ = [
    "DEFAULT_MIN_UPLOAD_RATE",
    "DEFAULT_UPLOAD_GRACE_S",
    "BearerAuth",
    "RequestMetrics",
    "UploadPace",
]

OPEN_PATHS = frozenset({"/v1/health", "/metrics"})
# What :class:`BearerAuth` let a request in by, in its scope: "bearer", or a license
# route's "license" or "ticket" (absent on an open route). A handler that takes several
# reads it, never guesses from what it cannot parse.
AUTH_SCOPE_KEY = "ashat.auth"
_TOKEN_CHARS = frozenset(range(0x21, 0x7F))  # visible ASCII: no space, no control character


def credentials(value: bytes | str | None) -> tuple[str, str] | None:
    """``(scheme, token)`` of an ``Authorization`` value, the scheme lowercased; None
    unless it is a scheme, one or more spaces, and a token of visible ASCII. The one parser
    of it, for the middleware and the handlers alike (a review: each stripping its own
    whitespace let ``License \xa0`` through as a token and then count as the bearer)."""
    if value is None:
        return None
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    scheme, _, token = raw.partition(b" ")
    token = token.lstrip(b" ")
    if not scheme or not token or not _TOKEN_CHARS.issuperset(token):
        return None
    if not _TOKEN_CHARS.issuperset(scheme):
        return None
    return scheme.decode("ascii").lower(), token.decode("ascii")


def route_path(scope: Scope) -> str:
    """The request's path below where its app is mounted: ``/v1/health`` for
    ``/apps/notes/v1/health`` on a host agent (``--apps``), as Starlette's routing sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class BearerAuth:
    """Refuse with 401 any request but the open ones without the right bearer token.

    With ``license_routes`` (OMEGA), a request for such a route that carries
    ``Authorization: License …`` or ``Ticket …`` (a blob ticket) passes too: its handler
    checks the license or the ticket, and takes a ticket only where it may.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        license_routes: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.app = app
        self.token = token.encode("ascii")
        self.license_routes = license_routes

    @staticmethod
    def _credentials(scope: Scope) -> tuple[str, str] | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return credentials(value)
        return None

    def _licensed(self, scope: Scope) -> bool:
        if self.license_routes is None or not self.license_routes(
            scope["method"], route_path(scope)
        ):
            return False
        given = self._credentials(scope)
        # a token for the handler to check, by a scheme it takes
        if given is None or given[0] not in ("license", "ticket"):
            return False
        scope[AUTH_SCOPE_KEY] = given[0]
        return True

    def _authorized(self, scope: Scope) -> bool:
        given = self._credentials(scope)
        if given is None or given[0] != "bearer":
            return False
        if not hmac.compare_digest(given[1].encode("ascii"), self.token):
            return False
        scope[AUTH_SCOPE_KEY] = "bearer"
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            open_route = scope["method"] in ("GET", "HEAD") and path in OPEN_PATHS
            if not open_route and not self._authorized(scope) and not self._licensed(scope):
                error = "missing or wrong bearer token"
                if self.license_routes is not None and self.license_routes(scope["method"], path):
                    error += " (a mainframe sends 'Authorization: License <token>')"
                response = JSONResponse(
                    {"error": error, "kind": "unauthenticated"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CountsRequests(Protocol):
    """Metrics with a ``requests`` counter labelled method, route and status."""

    @property
    def requests(self) -> Counter: ...


class RequestMetrics:
    """Count requests by method, route template and status (also used by ``ashat serve``)."""

    def __init__(self, app: ASGIApp, metrics: CountsRequests) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()


class UploadPace:
    """Refuse request bodies that fall behind ``min_rate`` bytes/s after ``grace_s``
    seconds (``min_rate`` 0: no pace asked)."""

    def __init__(self, app: ASGIApp, min_rate: int, grace_s: float, option: str) -> None:
        self.app = app
        self.min_rate = min_rate
        self.grace_s = grace_s
        self.option = option  # where the rate is set, for the error message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.min_rate <= 0:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        start: float | None = None  # at the first read: the server's time before is not the body's
        received = 0
        done = too_slow = False

        async def paced() -> Message:
            nonlocal start, received, done, too_slow
            if done:
                return await receive()
            if start is None:
                start = loop.time()
            deadline = start + self.grace_s + received / self.min_rate
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                too_slow = True
                elapsed = loop.time() - start
                raise UploadTooSlow(
                    f"request body too slow: {received} bytes in {elapsed:.0f} s; after "
                    f"{self.grace_s:g} s a request body must average at least {self.min_rate} "
                    f"bytes/s ({self.option})",
                    received=received,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
            else:  # http.disconnect
                done = True
            return message

        async def send_closing(message: Message) -> None:
            if too_slow and message["type"] == "http.response.start":
                # the rest of the body is not waited for: the connection ends with the answer
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, paced, send_closing)
