"""The agent's HTTP face: :func:`build_app` makes the Starlette app over an :class:`Agent`.

Routes (v1, JSON in and out; DESIGN §5)::

    GET  /v1/health                      open
    POST /v1/blobs/missing               {"digests": [...]} -> {"missing": [...]}
    POST /v1/blobs/pack                  a pack stream (receive.py) -> {"stored", "blobs", "bytes"}
    PUT  /v1/blobs/{sha256}              raw bytes -> {"sha256", "size", "stored"}
    GET  /v1/blobs/{sha256}              raw bytes
    POST /v1/releases                    signed manifest bytes -> staged
    GET  /v1/releases                    {"current", "previous", "releases": [...]}
    POST /v1/releases/{id}/activate      -> {"current", "previous", "app"}
    POST /v1/rollback                    {"from": id|null, "to": id|null}
    GET  /metrics                        open, Prometheus text

On OMEGA (``--role omega``) the fleet routes of :mod:`ashat.fleet.omega_routes` are mounted
too; ``GET /v1/blobs/{sha256}``, ``/v1/fleet/poll`` and ``/v1/fleet/report`` then also take
``Authorization: License <token>``, checked by their handlers.

Every other request needs ``Authorization: Bearer <token>`` (:class:`BearerAuth`). Errors
are ``{"error": "<one line>", "kind": ..., ...}`` (:mod:`.errors`). Bodies are read with a
limit, refused by their declared length before any byte is read, and at a minimum pace
(:mod:`.pace`); blocking work runs in
worker threads so the event loop keeps answering health checks during an activation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from ashat.agent.attest import OwnResults, attest
from ashat.agent.blobs import blob_path, check_digest
from ashat.agent.checks.base import scrub_json
from ashat.agent.config import AgentConfig
from ashat.agent.core import Agent
from ashat.agent.errors import NoSuchBlob, NoSuchRelease, status_of
from ashat.agent.receive import receive_blob, receive_pack
from ashat.agent.upstream import AppProxy
from ashat.errors import AshatError
from ashat.faults import crash_point
from ashat.http.body import declared_length, json_object, read_limited
from ashat.http.errors import HttpError, RequestInvalid, error_body
from ashat.http.handlers import client_gone, http_error, internal_error
from ashat.http.middleware import BearerAuth, RequestMetrics, UploadPace

log = logging.getLogger("ashat.agent")

MAX_DIGESTS = 50_000  # per /v1/blobs/missing request


def _optional_id(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestInvalid(f"{key!r} must be an update id or null")
    return value


# OMEGA's check of a licensed blob download (request, digest): raises to refuse, or answers
# it itself (a redirect to a signed URL on a mirror); None lets the agent send the blob
BlobGate = Callable[[Request, str], Awaitable[Response | None]]

# A blob never changes (its name is its digest): any cache may keep it for good. "public":
# a shared cache may store it although the request carried credentials (RFC 9111 §3.5).
BLOB_CACHE_CONTROL = "public, max-age=31536000, immutable"
OFFLOAD_HEADER = "x-ashat-offload"  # set by the nginx in front of OMEGA (contrib/nginx)
INTERNAL_BLOBS = "/_ashat_blobs/"  # nginx's internal location over the blob directory


def immutable_file(
    request: Request, config: AgentConfig, path: str | os.PathLike[str], inside: str, etag: str
) -> Response:
    """A file of the blob directory whose bytes never change (a blob, a release's pack),
    ``Range`` honoured, cacheable for good. With ``--blob-offload nginx``, a request that
    came through the nginx in front of OMEGA (it says so in ``X-Ashat-Offload``) is answered
    with ``X-Accel-Redirect`` to ``inside`` (a path in the blob directory) under nginx's
    internal location: nginx sends the bytes (sendfile, Range)."""
    headers = {"Cache-Control": BLOB_CACHE_CONTROL, "ETag": f'"{etag}"'}
    if config.blob_offload == "nginx" and request.headers.get(OFFLOAD_HEADER) == "nginx":
        headers["X-Accel-Redirect"] = f"{INTERNAL_BLOBS}{inside}"
        return Response(media_type="application/octet-stream", headers=headers)
    return FileResponse(path, media_type="application/octet-stream", headers=headers)


class Endpoints:
    """The route handlers, over one :class:`Agent`."""

    def __init__(self, agent: Agent, blob_gate: BlobGate | None = None) -> None:
        self.agent = agent
        self.config = agent.config
        self.metrics = agent.metrics
        self.blob_gate = blob_gate
        self.own_results = OwnResults()  # the server-side checks this agent ran (attest)

    async def health(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.agent.health))

    async def blobs_missing(self, request: Request) -> Response:
        body = await json_object(request)
        digests = body.get("digests")
        if not isinstance(digests, list):
            raise RequestInvalid("'digests' must be a list of sha256 digests")
        if len(digests) > MAX_DIGESTS:
            raise RequestInvalid(f"at most {MAX_DIGESTS} digests per request, got {len(digests)}")
        for d in digests:
            check_digest(d)
        missing = await run_in_threadpool(self.agent.blobs.missing, digests)
        return JSONResponse({"missing": missing})

    async def put_blob(self, request: Request) -> Response:
        sha = check_digest(request.path_params["sha256"])
        declared_length(request.headers, self.config.max_blob_bytes, f"blob {sha}")
        size = await run_in_threadpool(self.agent.blobs.size, sha)
        if size is not None:  # already stored: the body is left unread (uvicorn drops it)
            return JSONResponse({"sha256": sha, "size": size, "stored": False})
        size, new = await receive_blob(request.stream(), self.agent.blobs, sha)
        if new:
            self.metrics.blobs_received.inc()
            self.metrics.blob_bytes_received.inc(size)
        return JSONResponse(
            {"sha256": sha, "size": size, "stored": new}, status_code=201 if new else 200
        )

    async def get_blob(self, request: Request) -> Response:
        """The blob's bytes (:func:`immutable_file`: ``Range: bytes=N-`` resumes; with
        ``--blob-offload nginx``, nginx sends them once OMEGA has checked the license)."""
        sha = check_digest(request.path_params["sha256"])
        if self.blob_gate is not None:
            answer = await self.blob_gate(request, sha)
            if answer is not None:
                return answer
        size = self.agent.blobs.size_if_hashed(sha)  # no thread for a blob hashed before
        if size is None and await run_in_threadpool(self.agent.blobs.size, sha) is None:
            raise NoSuchBlob(f"blob {sha} is not stored here", sha256=sha)
        return immutable_file(request, self.config, self.agent.blobs.path(sha), blob_path(sha), sha)

    async def pack(self, request: Request) -> Response:
        result = await receive_pack(request.stream(), self.agent.blobs)
        self.metrics.blobs_received.inc(result.stored)
        self.metrics.blob_bytes_received.inc(result.bytes)
        return JSONResponse({"stored": result.stored, "blobs": result.blobs, "bytes": result.bytes})

    async def stage(self, request: Request) -> Response:
        limit = self.config.max_manifest_bytes
        declared_length(request.headers, limit, "manifest")
        data = await read_limited(request.stream(), limit, "manifest")
        answer, new = await run_in_threadpool(self.agent.stage, data)
        return JSONResponse(answer, status_code=201 if new else 200)

    async def list_releases(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.agent.list_releases))

    async def activate(self, request: Request) -> Response:
        update_id = request.path_params["update_id"]
        return JSONResponse(await run_in_threadpool(self.agent.activate, update_id))

    async def rollback(self, request: Request) -> Response:
        body = await json_object(request, allow_empty=True)
        from_id, to_id = _optional_id(body, "from"), _optional_id(body, "to")
        return JSONResponse(await run_in_threadpool(self.agent.rollback, from_id, to_id))

    async def check(self, request: Request) -> Response:
        """Run a server-side verification check inside a staged release (DESIGN §6)."""
        from ashat.agent.checks import run_check
        from ashat.agent.confine import app_environment
        from ashat.agent.supervisor import with_venv
        from ashat.ids import UPDATE_ID_RE

        update_id = request.path_params["update_id"]
        name = request.path_params["name"]
        body = await json_object(request, allow_empty=True)
        release_dir = (
            self.agent.layout.release_dir(update_id) if UPDATE_ID_RE.fullmatch(update_id) else None
        )
        if release_dir is None or not release_dir.is_dir():
            raise NoSuchRelease(f"release {update_id} is not staged here", update_id=update_id)
        shared = str(self.agent.layout.shared)
        env = app_environment(
            self.agent.supervisor.app_env, {"ASHAT_SHARED_DIR": shared, "HOME": shared}
        )
        env = with_venv(env, await run_in_threadpool(self.agent.venv_of, update_id))
        crash_point("check.run")
        advisories = self.config.advisories or self.agent.layout.advisories
        app = (await run_in_threadpool(self.agent.releases.manifest, update_id)).app
        answer = await run_in_threadpool(
            run_check, name, release_dir, body, env, self.agent.jail, advisories, app,
            self.agent.layout.root,
        )  # fmt: skip
        answer = scrub_json(answer, self.agent.secrets())  # by value, whatever the name
        self.own_results.note(update_id, name, answer, body)
        return JSONResponse(answer)

    async def attest(self, request: Request) -> Response:
        """Sign the verification statement of the release PUBLIC runs (:mod:`.attest`)."""
        from ashat.ids import UPDATE_ID_RE
        from ashat.trust.root import now_iso

        update_id = request.path_params["update_id"]
        if not UPDATE_ID_RE.fullmatch(update_id):
            raise NoSuchRelease(f"release {update_id[:80]!r} is not staged here")
        body = await json_object(request)

        def sign() -> dict[str, Any]:
            current = self.agent.links()[0]
            m = self.agent.releases.manifest(update_id) if current == update_id else None
            app = self.agent.app_info()
            return attest(
                key=self.config.verifier_key,
                update_id=update_id,
                current=current,
                manifest_digest=m.digest() if m else "",
                sequence=m.sequence if m else 0,
                app_healthy=None if app is None else bool(app.get("healthy")),
                own=self.own_results.of(update_id),
                body=body,
                at=now_iso(),
            )

        return JSONResponse(await run_in_threadpool(sign))

    async def prometheus(self, request: Request) -> Response:
        # OMEGA's collectors read fleet.db at each scrape: not on the event loop.
        data, content_type = await run_in_threadpool(self.metrics.render)
        return Response(data, media_type=content_type)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/v1/blobs/missing", self.blobs_missing, methods=["POST"]),
            Route("/v1/blobs/pack", self.pack, methods=["POST"]),
            Route("/v1/blobs/{sha256}", self.put_blob, methods=["PUT"]),
            Route("/v1/blobs/{sha256}", self.get_blob, methods=["GET"]),
            Route("/v1/releases", self.stage, methods=["POST"]),
            Route("/v1/releases", self.list_releases, methods=["GET"]),
            Route("/v1/releases/{update_id}/activate", self.activate, methods=["POST"]),
            Route("/v1/rollback", self.rollback, methods=["POST"]),
            Route("/v1/releases/{update_id}/checks/{name}", self.check, methods=["POST"]),
            Route("/v1/releases/{update_id}/attest", self.attest, methods=["POST"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]


async def _ashat_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AshatError)
    status = status_of(exc)
    agent = getattr(request.app.state, "agent", None)
    secrets = agent.secrets() if agent is not None else []
    body = scrub_json(error_body(exc), secrets)  # an activation's log tail, a hook's output
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, body["error"])
    again = exc.retry_after_s if isinstance(exc, HttpError) else None
    headers = {"Retry-After": str(again)} if again is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


class RoleExtension(Protocol):
    """More routes over the agent, for a role that has them (OMEGA's fleet routes, built by
    :mod:`ashat.roles`; the agent never imports the fleet)."""

    def routes(self) -> list[Route]: ...

    async def blob_gate(self, request: Request, sha256: str) -> Response | None:
        """Raise unless the request may fetch ``sha256`` (a license's, not a bearer's); or
        answer it (a redirect to a mirror); None: the agent sends the blob."""

    def license_route(self, method: str, path: str) -> bool:
        """Whether the route is authenticated by a license instead of the bearer token."""

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while the server runs (a background controller)."""

    def close(self) -> None: ...


def build_app(
    config: AgentConfig, extension: Callable[[Agent], RoleExtension] | None = None
) -> Starlette:
    """The ASGI app for ``config``; its :class:`Agent` is ``app.state.agent``.

    Opens (and repairs) the data directory now; the current release's app is started in
    the background once the server runs, and stopped when it shuts down. ``extension``
    (OMEGA's fleet routes, from :mod:`ashat.roles`) adds routes over the agent and runs
    beside the server. Raises ``OSError`` if the data directory cannot be created, what
    ``extension`` raises (:class:`~ashat.store.db.StoreError`: a fleet database).
    """
    agent = Agent(config)
    if config.app_listen is not None:  # bound now: a busy port stops the agent first
        agent.proxy = AppProxy(*config.app_listen)
    try:
        agent.open()
    except BaseException:
        if agent.proxy is not None:
            agent.proxy.sock.close()
        raise
    fleet = extension(agent) if extension is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        starter = threading.Thread(
            target=agent.start_current_app, name="ashat-start-app", daemon=True
        )
        starter.start()
        watcher = threading.Thread(target=agent.watch_app, name="ashat-watch-app", daemon=True)
        watcher.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if agent.proxy is not None:
                    await agent.proxy.start()
                    stack.push_async_callback(agent.proxy.close)
                if fleet is not None:
                    await stack.enter_async_context(fleet.running())
                yield
        finally:
            agent.begin_shutdown()
            await run_in_threadpool(agent.shutdown)
            if fleet is not None:
                fleet.close()

    endpoints = Endpoints(agent, blob_gate=fleet.blob_gate if fleet is not None else None)
    routes = endpoints.routes()
    if fleet is not None:
        routes = fleet.routes() + routes
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, metrics=agent.metrics),
            Middleware(
                BearerAuth,
                token=config.token,
                license_routes=fleet.license_route if fleet is not None else None,
            ),
            Middleware(
                UploadPace,
                min_rate=config.min_upload_rate,
                grace_s=config.upload_grace_s,
                option="the agent's --min-upload-rate",
            ),
        ],
        exception_handlers={
            AshatError: _ashat_error,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )
    app.state.agent = agent
    app.state.extension = fleet
    return app


APPS_PREFIX = "/apps/"  # a host agent's apps: /apps/NAME/v1/..., each a whole agent


def build_host_app(apps: Mapping[str, Starlette]) -> Starlette:
    """One server for several apps (``ashat agent --apps``): each of ``apps`` (made by
    :func:`build_app`, over its own data directory, token and keys) is mounted whole at
    ``/apps/NAME``; its routes, authentication and errors are its own. The host answers
    ``GET /v1/health`` alone, open: the apps' names and health, for ``deploy configure``
    to find its app by its ``[app] name``. Each app's lifespan runs in the host's."""

    @contextlib.asynccontextmanager
    async def lifespan(host: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for app in apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            yield

    async def health(request: Request) -> Response:
        answers = {}
        for name, app in apps.items():
            answers[name] = await run_in_threadpool(app.state.agent.health)
        role = next(iter(answers.values()))["role"]
        return JSONResponse({"status": "ok", "role": role, "apps": answers})

    async def elsewhere(request: Request) -> Response:
        """A client configured with the host's URL, not its app's: say which to use."""
        base = str(request.base_url).rstrip("/")
        names = ", ".join(apps)
        return JSONResponse(
            {
                "error": f"this agent serves several apps ({names}): use the URL of yours, "
                f"{base}{APPS_PREFIX}NAME (NAME its [app] name), e.g. "
                f"{base}{APPS_PREFIX}{next(iter(apps))}",
                "kind": "host_agent",
                "apps": list(apps),
            },
            status_code=404,
        )

    routes: list[Route | Mount] = [Route("/v1/health", health, methods=["GET"])]
    routes += [Mount(f"{APPS_PREFIX}{name}", app=app) for name, app in apps.items()]
    routes.append(Route("/{path:path}", elsewhere, methods=["GET", "POST", "PUT"]))
    host = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    host.state.apps = dict(apps)
    return host
