"""The control-plane ASGI app: :func:`build_app` over a project directory and its store.

Each request of an :class:`~ashat.api.routes.Endpoint` goes: bearer token -> user (401
when missing or unknown) -> role (403 when too weak) -> query and body, checked against
the published schemas (400) -> the handler, in a worker thread, with a store connection
of its own. Nothing is read or changed for a refused request. Errors are
``{"error", "kind", ...}`` (:mod:`.errors`); an unexpected exception is logged with its
traceback and answered 500 without one. The web dashboard (:mod:`.dashboard`) is routes of
the same app, over the same project and operations.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ashat.api.errors import error_body, status_of
from ashat.api.metrics import ApiMetrics
from ashat.api.openapi import document
from ashat.api.routes import ENDPOINTS, Call, Endpoint, Param
from ashat.api.schemas import validate_body, with_checks
from ashat.errors import AshatError, InvalidInput
from ashat.http.body import read_body
from ashat.http.handlers import http_error, internal_error
from ashat.http.limits import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S
from ashat.http.middleware import RequestMetrics, UploadPace, credentials
from ashat.ops.project import Project
from ashat.ops.push import SpoolQuota
from ashat.ops.users import UserRole, authenticate
from ashat.store.users import User

log = logging.getLogger("ashat.api")


def log_refused_token(request: Request, where: str) -> None:
    """An unknown or replaced token was offered (never the token itself): where and from
    which address, for whoever watches the log for guessing (the metrics count them)."""
    client = request.client.host if request.client is not None else "unknown address"
    log.warning("refused an unknown or replaced token from %s at %s", client, where)


SHUTDOWN_FLUSH_S = 10.0  # the longest the server waits for notifications when it stops


def _bearer(request: Request) -> str | None:
    """The bearer token of the request, read by the agents' one parser of
    ``Authorization`` (:func:`~ashat.http.middleware.credentials`)."""
    got = credentials(request.headers.get("authorization"))
    return got[1] if got is not None and got[0] == "bearer" else None


def _refuse(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, "kind": kind, **extra}, status, headers=headers)


def _parse_query(params: tuple[Param, ...], request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in params:
        if p.where != "query":
            continue
        raw = request.query_params.get(p.name)
        if raw is None:
            out[p.name] = p.default
            continue
        kind = p.schema.get("type")
        if kind == "integer":
            try:
                value: Any = int(raw)
            except ValueError:
                raise InvalidInput(f"{p.name} must be an integer, not {raw[:40]!r}") from None
            lo, hi = p.schema.get("minimum"), p.schema.get("maximum")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise InvalidInput(f"{p.name} must be {lo}-{hi}, not {value}")
        elif kind == "boolean":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise InvalidInput(f"{p.name} must be true or false, not {raw[:40]!r}")
            value = raw.lower() in ("true", "1")
        else:
            value = raw
            if "enum" in p.schema and value not in p.schema["enum"]:
                raise InvalidInput(
                    f"{p.name} must be one of {', '.join(p.schema['enum'])}, not {raw[:40]!r}"
                )
        out[p.name] = value
    return out


Components = dict[str, dict[str, Any]]


async def _read_body(ep: Endpoint, request: Request, components: Components) -> dict[str, Any]:
    if ep.body is None:
        return {}
    raw = await read_body(request, ep.max_body, "the request body")
    if not raw.strip():
        if ep.body_required:
            raise InvalidInput("this operation needs a JSON body")
        return {}
    try:
        body = json.loads(raw)
        # JSON lets a lone surrogate ("\\ud800") through, which no UTF-8 text holds: what
        # carried one failed when it was written (a 500), after the checks.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than we parse
        raise InvalidInput(f"the request body is not JSON: {e}") from e
    validate_body(components[ep.body], body)
    assert isinstance(body, dict)  # the schemas of request bodies are objects
    return body


OpenProject = Callable[[], Project]


def _endpoint(
    ep: Endpoint,
    open_project: OpenProject,
    metrics: ApiMetrics,
    components: Components,
    quota: SpoolQuota,
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        project = open_project()
        try:
            user: User | None = None
            if ep.role is not None:
                token = _bearer(request)
                if token is None:
                    metrics.refusals.labels(status="401").inc()
                    return _refuse(401, "this operation needs 'Authorization: Bearer <token>'",
                                   "unauthenticated")  # fmt: skip
                user = await run_in_threadpool(authenticate, project, token)
                if user is None:
                    metrics.refusals.labels(status="401").inc()
                    log_refused_token(request, f"{ep.method} {ep.path}")
                    return _refuse(401, "unknown or replaced token", "unauthenticated")
                have = UserRole(user.role)
                if not have.allows(ep.role):
                    metrics.refusals.labels(status="403").inc()
                    return _refuse(
                        403,
                        f"{user.name} is a {have.value}; {ep.method} {ep.path} needs "
                        f"{ep.role.value} or higher",
                        "forbidden",
                        role=have.value,
                        needs=ep.role.value,
                    )
            call = Call(
                project,
                user,
                {k: str(v) for k, v in request.path_params.items()},
                _parse_query(ep.params, request),
                {} if ep.stream else await _read_body(ep, request, components),
                quota,
            )
            if ep.stream is not None:
                status, data = await ep.stream(call, request.stream())
            else:
                status, data = await run_in_threadpool(ep.handler, call)
            return JSONResponse(data, status)
        except AshatError as e:
            status = status_of(e)
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, e.message)
            return JSONResponse(error_body(e), status)
        finally:
            await run_in_threadpool(project.close)

    return handle


Handle = Callable[[Request], Awaitable[Response]]


def _by_method(handlers: dict[str, Handle]) -> Handle:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return dispatch


def build_app(
    root: Path,
    db_url: str | None = None,
    min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE,
    upload_grace_s: float = DEFAULT_UPLOAD_GRACE_S,
    spool_quota: SpoolQuota | None = None,
) -> Starlette:
    """The app serving the project at ``root`` (its store: ``db_url``, else ``ASHAT_DB``,
    else ``.ashat/ashat.db``). Opens the store now, so a bad one fails before serving.

    Raises :class:`InvalidInput` (an unusable store, a malformed ``[[notify]]``, a session
    secret that cannot be kept in ``.ashat/secrets/``).
    """

    def open_project() -> Project:
        return Project(root, db_url)

    first = open_project()
    try:
        first.workflow("ashat-serve")  # migrations, and [[notify]] checked
    finally:
        first.close()
    from ashat.verify.registry import all_checks

    components = with_checks([c.name for c in all_checks()])
    metrics = ApiMetrics(open_project)
    spec = document(components)

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def prometheus(request: Request) -> Response:
        data, content_type = await run_in_threadpool(metrics.render)
        return Response(data, media_type=content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            from ashat.ops.notifications import close_all, flush_all

            await run_in_threadpool(flush_all, SHUTDOWN_FLUSH_S)
            close_all()

    # One route per path, whatever its methods: a 405 then names them all in ``Allow``.
    by_path: dict[str, dict[str, Handle]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = _endpoint(
            ep, open_project, metrics, components, spool_quota or SpoolQuota()
        )
    routes: list[BaseRoute] = [
        Route(path, _by_method(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    from ashat.api.dashboard import Dashboard
    from ashat.api.session import load_secret

    routes += Dashboard(open_project, load_secret(first.state_dir)).routes()
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, metrics=metrics),
            Middleware(
                UploadPace,
                min_rate=min_upload_rate,
                grace_s=upload_grace_s,
                option="ashat serve's --min-upload-rate",
            ),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app
