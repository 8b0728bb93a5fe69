"""Exception handlers both kinds of server install: Starlette's own errors (no route, wrong
method) as our JSON, a client that went away, and anything unexpected as a bare 500 whose
traceback stays in the log."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("ashat.http")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) as ``{"error", "kind": "http"}``."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse(
        {"error": message, "kind": "http"}, status_code=exc.status_code, headers=exc.headers
    )


async def client_gone(request: Request, exc: Exception) -> Response:
    """A client that went away mid-body: nobody reads this; the handler's cleanup ran."""
    return Response(status_code=400)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged with its traceback, answered without one."""
    log.error(
        "%s %s: unexpected %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return JSONResponse(
        {
            "error": f"internal error ({type(exc).__name__}); see the server's log",
            "kind": "internal",
        },
        status_code=500,
    )
