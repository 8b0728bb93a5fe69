"""OMEGA's fleet routes (docs/fleet-protocol.md), mounted by :mod:`ashat.agent.server` for
``--role omega`` next to the agent's own::

    POST /v1/releases/{id}/approve     bearer   counter-sign a staged release
    POST /v1/fleet/rollouts            bearer   start a rollout -> status, 201 (200: running)
    GET  /v1/fleet/rollouts?update_id= bearer   every rollout of a release -> {"rollouts"}
    GET  /v1/fleet/rollouts/{id}       bearer   rollout status
    POST /v1/fleet/rollouts/{id}/{pause,resume,abort,retry}  bearer  control it -> status
    POST /v1/fleet/rollback            bearer   start a rollback rollout -> status, 201
    GET  /v1/fleet/mainframes          bearer   the fleet registry
    POST /v1/fleet/revocations         bearer   revoke a license
    GET  /v1/fleet/revocations         bearer
    POST /v1/trust/roots               bearer   newer versions of the root of trust
    GET  /v1/fleet/poll                license  long poll -> {"directive", "manifest"}, or
                                                 {"directive": null, "no_directive"}; with
                                                 ?root=N, "roots" newer than N too
    POST /v1/fleet/report              license  installed / failed
    GET  /v1/fleet/blob-ticket         license  a blob ticket for a site cache (:mod:`.tickets`)
    GET  /v1/blobs/{sha256}            any      (the agent's route, gated by :meth:`blob_gate`)
    GET  /v1/packs/{id}/{digest}       any      a release's blobs in one file (:mod:`.packs`)

The bearer middleware lets requests carrying ``Authorization: License …`` or ``Ticket …``
through to the license routes (:func:`license_route`); their handlers check the license
(:meth:`OmegaRoutes._license`: a license only) or the license or ticket
(:meth:`OmegaRoutes._downloader`: blobs and packs).

A poll waits on an :class:`asyncio.Event` of its mainframe (:class:`Waiters`), never in a
thread, so hundreds can wait on one event loop. Whatever may target mainframes (a new
rollout, a report, the controller's tick every :data:`TICK_S`) returns their ids and the
handler wakes them; when a tick sees that the running rollouts changed, perhaps on another
replica sharing the database, it wakes every poll held here. Blocking work (the database,
signatures) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ashat.agent.blobs import SHA256_RE, blob_path
from ashat.agent.config import S3Mirror
from ashat.agent.core import Agent
from ashat.agent.server import immutable_file
from ashat.bake import ANALYSIS_EVERY_S
from ashat.fleet import packs
from ashat.fleet.analysis import check_queries
from ashat.fleet.blob_links import presigned_url, signed_url
from ashat.fleet.directive import NONCE_RE
from ashat.fleet.download import DIRECT_HEADER
from ashat.fleet.license import MAINFRAME_ID_RE, License
from ashat.fleet.omega import Omega
from ashat.fleet.omega_errors import NoSuchPack, PackBuilding
from ashat.fleet.omega_requests import (
    Report,
    RollbackRequest,
    RolloutRequest,
    approval_record,
    license_id,
)
from ashat.fleet.s3_copy import COPY_EVERY_S, describe
from ashat.fleet.windows import HOLDS
from ashat.http.body import json_object
from ashat.http.errors import RequestInvalid, Unauthenticated
from ashat.http.middleware import AUTH_SCOPE_KEY, credentials
from ashat.ids import UPDATE_ID_RE
from ashat.labels import VALUE_RE, LabelError, parse_assignments, parse_selector

CONTROL_ACTIONS = ("pause", "resume", "abort", "retry")
APP_STATES = ("none", "healthy", "unhealthy", "restarting", "crash_loop")

log = logging.getLogger("ashat.omega")

TICK_S = 0.2  # how often the controller looks at running rollouts
STOP_CHECK_S = 1.0  # a waiting poll notices the agent stopping within this
MAX_WAIT_S = 60.0  # the longest poll the protocol allows
# A pack request waits this long for its pack to be built (it starts at the approval; a
# 200 MB release took 0.7 s here), then is answered 404 and the mainframe takes the blobs
# one by one: the first blob stays within a second of the approval whatever the size.
PACK_WAIT_S = 0.3
MAX_SEQUENCE = 2**53
MAX_ROOTS = 1000  # root versions in one request


def _mainframe_id(request: Request) -> str:
    mainframe_id = str(request.path_params["mainframe_id"])
    if not MAINFRAME_ID_RE.fullmatch(mainframe_id):
        raise RequestInvalid(f"{mainframe_id[:70]!r} is not a mainframe id")
    return mainframe_id


INVENTORY_KEYS = ("os", "arch", "python", "ashat", "free_disk")


def _inventory(request: Request) -> dict[str, str]:
    """What a mainframe reports of itself on a poll (``os``, ``arch``, ``python``,
    ``ashat``, ``free_disk``), each a short word; older ones report nothing. A value that
    is not a label value (``3.12.0+`` of a source build) is left out, not the poll: its
    selectors cannot name it anyway."""
    out = {}
    for key in INVENTORY_KEYS:
        value = request.query_params.get(key)
        if value is not None and VALUE_RE.fullmatch(value):
            out[key] = value
    return out


LICENSE_PATHS = frozenset({"/v1/fleet/poll", "/v1/fleet/report", "/v1/fleet/blob-ticket"})


def _to_mirror(url: str) -> Response:
    """A redirect to a signed URL: only for this request, never cached (a site cache on the
    way keeps the bytes the mirror sends, not the redirect)."""
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


def license_route(method: str, path: str) -> bool:
    """Whether a request may authenticate with a license instead of the bearer token."""
    if path in LICENSE_PATHS:
        return True
    if method not in ("GET", "HEAD"):
        return False
    return path.startswith("/v1/packs/") or (
        path.startswith("/v1/blobs/") and path != "/v1/blobs/missing"
    )


def license_token(request: Request, scheme: str = "license") -> str | None:
    """The token of ``Authorization: License <token>`` (or of another ``scheme``), or None
    (:func:`~ashat.http.middleware.credentials`, as the middleware reads it)."""
    given = credentials(request.headers.get("authorization"))
    return given[1] if given is not None and given[0] == scheme else None


class Waiters:
    """Events of the polls waiting, by mainframe id. Used on the event loop only."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def waiting(self, mainframe_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events.setdefault(mainframe_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._events.get(mainframe_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[mainframe_id]

    def wake(self, mainframe_ids: Iterable[str]) -> None:
        for mid in mainframe_ids:
            for event in self._events.get(mid, ()):
                event.set()

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()


class OmegaRoutes:
    def __init__(self, agent: Agent, omega: Omega, poll_timeout_s: float) -> None:
        self.agent = agent
        self.omega = omega
        self.poll_timeout_s = min(poll_timeout_s, MAX_WAIT_S)
        self.waiters = Waiters()
        self._ticker: asyncio.Task[None] | None = None
        self._copy_now = asyncio.Event()  # an approval: copy its blobs to the S3 mirror
        self._background: set[asyncio.Task[None]] = set()  # packs being built after approval
        # (update id, manifest digest) → the build a pack request started, shared by the
        # requests that come while it runs
        self._packing: dict[tuple[str, str], asyncio.Future[Path]] = {}

    # -- lifespan ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the controller's tick while the server runs."""
        self._ticker = asyncio.create_task(self._tick_forever(), name="ashat-omega-controller")
        analyst = asyncio.create_task(self._analyze_forever(), name="ashat-omega-analysis")
        tasks = [self._ticker, analyst]
        if self.omega.s3 is not None:
            tasks.append(asyncio.create_task(self._copy_forever(), name="ashat-omega-s3-copy"))
        try:
            yield
        finally:
            if self.omega.s3 is not None:
                self.omega.s3.stop.set()  # a copy pass ends after its current blob
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._ticker = None

    async def _tick_forever(self) -> None:
        while True:
            try:
                woken, changed = await run_in_threadpool(self.omega.tick)
                # Another replica may have started a rollout or a wave: every poll held
                # here looks again (those with nothing to do go back to waiting).
                if changed:
                    self.waiters.wake_all()
                else:
                    self.waiters.wake(woken)
            except Exception:  # keep the controller alive; the log says what broke
                log.exception("the rollout controller's tick failed")
            await asyncio.sleep(TICK_S)

    async def _analyze_forever(self) -> None:
        """Evaluate the analysis of every baking wave (beside the tick: a slow Prometheus
        holds no rollout up; the controller reads the last evaluation)."""
        while True:
            try:
                await run_in_threadpool(self.omega.analyze)
            except Exception:
                log.exception("the rollout analysis failed")
            await asyncio.sleep(ANALYSIS_EVERY_S)

    async def _copy_forever(self) -> None:
        """Keep the S3 mirror in step: after each approval, and every COPY_EVERY_S."""
        s3 = self.omega.s3
        assert s3 is not None
        failing = False
        while True:
            self._copy_now.clear()
            try:
                copied = await run_in_threadpool(s3.copy_pending)
                if copied or failing:
                    log.info("S3 mirror %s: %d blob(s) copied", s3.mirror.name, copied)
                failing = False
            except Exception as e:  # the bucket is down or refuses: OMEGA sends the bytes
                if not failing:
                    log.warning(
                        "S3 mirror %s: cannot copy blobs (OMEGA sends them itself until it "
                        "can; tried again every %.0f s): %s",
                        s3.mirror.name, COPY_EVERY_S, describe(e),
                    )  # fmt: skip
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._copy_now.wait(), COPY_EVERY_S)

    # -- control side --------------------------------------------------------------------------

    async def approve(self, request: Request) -> Response:
        update_id = request.path_params["update_id"]
        record = approval_record(update_id, await json_object(request))
        answer = await run_in_threadpool(self.omega.approve, update_id, record)
        self._copy_now.set()
        task = asyncio.create_task(run_in_threadpool(self.omega.pack_approved, update_id))
        self._background.add(task)  # its pack, before its mainframes ask
        task.add_done_callback(self._background.discard)
        return JSONResponse(answer)

    async def roots(self, request: Request) -> Response:
        """Take the newer versions of a root chain (each must chain from the one held)."""
        body = await json_object(request)
        chain = body.get("roots")
        if not isinstance(chain, list) or len(chain) > MAX_ROOTS:
            raise RequestInvalid(f"'roots' must be a list of at most {MAX_ROOTS} root documents")
        if self.omega.root is None:
            raise RequestInvalid("this OMEGA has no root of trust (start it with --root)")
        root = await run_in_threadpool(self.omega.root.offer, chain)  # each answer carries it
        return JSONResponse({"version": root.version, "digest": root.digest()})

    async def start_rollout(self, request: Request) -> Response:
        req = RolloutRequest.parse(await json_object(request))
        await run_in_threadpool(check_queries, req.bake)  # before anything starts
        status, woken, new = await run_in_threadpool(self.omega.start_rollout, req)
        self.waiters.wake(woken)
        return JSONResponse(status, status_code=201 if new else 200)

    async def rollouts_of(self, request: Request) -> Response:
        update_id = request.query_params.get("update_id") or ""
        if not UPDATE_ID_RE.fullmatch(update_id):
            raise RequestInvalid(f"'update_id' must be an update id, not {update_id[:80]!r}")
        found = await run_in_threadpool(self.omega.rollouts_of, update_id)
        return JSONResponse({"rollouts": found})

    async def rollout(self, request: Request) -> Response:
        rollout_id = request.path_params["rollout_id"]
        return JSONResponse(await run_in_threadpool(self.omega.status, rollout_id))

    async def control(self, request: Request) -> Response:
        rollout_id, action = request.path_params["rollout_id"], request.path_params["action"]
        if action not in CONTROL_ACTIONS:
            raise RequestInvalid(f"no rollout action {action[:40]!r}: {', '.join(CONTROL_ACTIONS)}")
        body = await json_object(request, allow_empty=True)
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise RequestInvalid("'reason' must be a string of at most 500 characters")
        status, woken = await run_in_threadpool(self.omega.control, rollout_id, action, reason)
        self.waiters.wake(woken)
        return JSONResponse(status)

    async def rollback(self, request: Request) -> Response:
        req = RollbackRequest.parse(await json_object(request))
        status, woken = await run_in_threadpool(self.omega.rollback, req)
        self.waiters.wake(woken)
        return JSONResponse(status, status_code=201)

    async def mainframes(self, request: Request) -> Response:
        where = request.query_params.get("where") or None
        try:
            parse_selector(where)
        except LabelError as e:
            raise RequestInvalid(f"'where': {e}") from e
        return JSONResponse(await run_in_threadpool(self.omega.mainframes, where))

    async def label(self, request: Request) -> Response:
        """``{"set": {KEY: VALUE}, "remove": [KEY]}``: the control side's labels."""
        mainframe_id = _mainframe_id(request)
        body = await json_object(request)
        given, remove = body.get("set") or {}, body.get("remove") or []
        if not isinstance(given, dict) or not isinstance(remove, list):
            raise RequestInvalid("'set' must be an object of labels, 'remove' a list of keys")
        items = [f"{k}={v}" for k, v in given.items()] + [f"{k}-" for k in remove]
        if not all(isinstance(i, str) for i in [*given.values(), *remove]):
            raise RequestInvalid("label values and keys to remove must be strings")
        try:
            labels, removed = parse_assignments(items)
        except LabelError as e:
            raise RequestInvalid(str(e)) from e
        answer = await run_in_threadpool(self.omega.label, mainframe_id, labels, removed)
        return JSONResponse(answer)

    async def pin(self, request: Request) -> Response:
        """``{"update_id": ID}`` holds the mainframe on that release; ``null`` releases it."""
        mainframe_id = _mainframe_id(request)
        body = await json_object(request)
        pinned = body.get("update_id")
        if pinned is not None and (
            not isinstance(pinned, str) or not UPDATE_ID_RE.fullmatch(pinned)
        ):
            raise RequestInvalid("'update_id' must be an update id, or null to unpin")
        answer = await run_in_threadpool(self.omega.pin, mainframe_id, pinned)
        return JSONResponse(answer)

    async def revoke(self, request: Request) -> Response:
        revoked = license_id(await json_object(request))
        return JSONResponse(await run_in_threadpool(self.omega.revoke, revoked))

    async def revocations(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.omega.revocations))

    # -- mainframes ----------------------------------------------------------------------------

    @staticmethod
    def _license(request: Request) -> str:
        token = license_token(request)
        if token is None:
            raise Unauthenticated("this route needs 'Authorization: License <token>'")
        return token

    async def _downloader(self, request: Request, sha256: str | None = None) -> License | None:
        """Who downloads a blob (``sha256``: may it have that one) or a pack: the license of
        its ``License`` or ``Ticket``, checked now; None for the bearer, as the middleware
        found it. Raises :class:`Unauthenticated`, :class:`LicenseDenied` or
        :class:`NoSuchBlob`."""
        how = request.scope.get(AUTH_SCOPE_KEY)
        if how == "bearer":
            return None
        token = license_token(request, how) if how in ("license", "ticket") else None
        if token is None:  # cannot be: the middleware lets nothing else in
            raise Unauthenticated("a blob needs 'Authorization: License <token>' or a ticket")
        by_ticket = how == "ticket"
        if sha256 is None:
            lic = self.omega.licensed_now(token, ticket=by_ticket)
            if lic is None:
                lic = await run_in_threadpool(partial(self.omega.licensed, ticket=by_ticket), token)
            return lic
        lic = self.omega.blob_allowed_now(token, sha256, ticket=by_ticket)  # no thread
        if lic is None:
            lic = await run_in_threadpool(
                partial(self.omega.blob_allowed, ticket=by_ticket), token, sha256
            )
        return lic

    async def blob_ticket(self, request: Request) -> Response:
        """A blob ticket for the license that asks (:mod:`.tickets`), never cached."""
        answer = await run_in_threadpool(self.omega.blob_ticket, self._license(request))
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    def _poll_query(self, request: Request) -> tuple[str | None, int | None, float, str | None]:
        q = request.query_params
        nonce = q.get("nonce") or None
        if nonce is not None and not NONCE_RE.fullmatch(nonce):
            raise RequestInvalid(f"'nonce' must be 16-64 base64url characters, not {nonce[:80]!r}")
        current = q.get("current") or None
        if current is not None and not UPDATE_ID_RE.fullmatch(current):
            raise RequestInvalid(f"'current' must be an update id, not {current[:80]!r}")
        sequence: int | None = None
        if q.get("sequence"):
            try:
                sequence = int(q["sequence"])
            except ValueError:
                sequence = -1
            if not 0 <= sequence <= MAX_SEQUENCE:
                raise RequestInvalid(f"'sequence' must be a whole number, not {q['sequence']!r}")
        wait = self.poll_timeout_s
        if q.get("wait"):
            try:
                wait = float(q["wait"])
            except ValueError:
                wait = -1.0
            if not 0 <= wait <= MAX_WAIT_S:
                raise RequestInvalid(f"'wait' must be 0-{MAX_WAIT_S:g} seconds, not {q['wait']!r}")
        return current, sequence, min(wait, self.poll_timeout_s), nonce

    def _roots_for(self, request: Request) -> dict[str, Any]:
        """The root versions newer than the poll's ``root`` (the one the mainframe holds):
        how an idle mainframe learns of a rotation. Nothing without a root or a ``root``."""
        held, asked = self.omega.root, request.query_params.get("root")
        if held is None or not asked or not (asked.isascii() and asked.isdigit()):
            return {}
        if len(asked) > 9:
            raise RequestInvalid(f"'root' must be a root version, not {asked[:20]!r}")
        newer = held.newer_than(int(asked))
        return {"roots": newer} if newer else {}

    @staticmethod
    def _app_query(request: Request) -> tuple[str | None, int | None]:
        """What the mainframe says of its app (``app``, ``restarts``); older ones say nothing."""
        q = request.query_params
        app = q.get("app") or None
        if app is not None and app not in APP_STATES:
            raise RequestInvalid(f"'app' must be one of {', '.join(APP_STATES)}, not {app[:40]!r}")
        restarts: int | None = None
        if q.get("restarts"):
            text = q["restarts"]
            if not (text.isascii() and text.isdigit() and len(text) <= 9):
                raise RequestInvalid(f"'restarts' must be a whole number, not {text[:20]!r}")
            restarts = int(text)
        return app, restarts

    async def poll(self, request: Request) -> Response:
        token = self._license(request)
        current, sequence, wait, nonce = self._poll_query(request)
        delta = request.query_params.get("delta") == "1"  # it can rebuild a manifest delta
        hold = request.query_params.get("hold") or None
        if hold is not None and hold not in HOLDS:
            raise RequestInvalid(f"'hold' must be one of {', '.join(HOLDS)}, not {hold[:40]!r}")
        app, restarts = self._app_query(request)
        roots = self._roots_for(request)
        inventory = _inventory(request)
        lic = await run_in_threadpool(
            partial(
                self.omega.admit, poll=True, app=(app, restarts), hold=hold, inventory=inventory
            ),
            token,
            current,
            sequence,
        )
        if app == "crash_loop":
            woken = await run_in_threadpool(self.omega.app_seen, lic, current, app, restarts)
            self.waiters.wake(woken)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self.omega.metrics.waiting.inc()
        try:
            with self.waiters.waiting(lic.mainframe_id) as event:
                while True:
                    event.clear()  # before looking: a wake from now on is not lost
                    answer = await run_in_threadpool(
                        self.omega.directive, lic, current, delta, hold, nonce
                    )
                    if answer is not None:
                        self.omega.metrics.polls.labels(result="directive").inc()
                        return JSONResponse({**answer.to_json(), **roots})
                    if not await self._wait(event, deadline, loop):
                        break
        finally:
            self.omega.metrics.waiting.dec()
        self.omega.metrics.polls.labels(result="empty").inc()
        if nonce is None:
            return JSONResponse({"directive": None, **roots})
        signed = await run_in_threadpool(self.omega.no_directive, lic, nonce, current, sequence)
        return JSONResponse({"directive": None, "no_directive": signed, **roots})

    async def _wait(
        self, event: asyncio.Event, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Wait for ``event`` until ``deadline``; False on the deadline or agent shutdown."""
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.agent.stopping.is_set():
                return False
            try:
                await asyncio.wait_for(event.wait(), min(remaining, STOP_CHECK_S))
            except TimeoutError:
                continue
            return True

    async def report(self, request: Request) -> Response:
        token = self._license(request)
        report = Report.parse(await json_object(request))
        lic = await run_in_threadpool(self.omega.admit, token, poll=False)
        self.waiters.wake(await run_in_threadpool(self.omega.report, lic, report))
        return JSONResponse({"ok": True})

    @staticmethod
    def license_route(method: str, path: str) -> bool:
        return license_route(method, path)

    def close(self) -> None:
        self.omega.close()

    async def blob_gate(self, request: Request, sha256: str) -> Response | None:
        """For ``GET /v1/blobs/{sha}``: a license may fetch blobs of approved releases only
        (a bearer request was already checked by the middleware). With ``--blob-mirror``,
        an allowed licensed download is sent there, by a signed URL (:mod:`.blob_links`);
        to an S3 mirror only once the blob was copied there (:mod:`.s3_copy`)."""
        lic = await self._downloader(request, sha256)
        if lic is None:
            return None
        if request.headers.get(DIRECT_HEADER):  # the mirror failed this mainframe: from here
            url = None
            if self.omega.s3 is not None:  # copied again at the next pass
                await run_in_threadpool(self.omega.s3.forget, blob_path(sha256))
        else:
            url = await self._mirror_url(blob_path(sha256), lic.license_id)
        self.omega.metrics.blob_downloads.labels(by="omega" if url is None else "mirror").inc()
        if url is None:
            return None
        return _to_mirror(url)

    async def _mirror_url(self, path: str, license_id: str) -> str | None:
        """The signed URL of the blob or pack at ``path`` (in the blob directory) on the
        mirror, for the license; None to send it here (no mirror, or an S3 mirror that
        does not hold it yet)."""
        mirror = self.agent.config.blob_mirror
        if mirror is None:
            return None
        if not isinstance(mirror, S3Mirror):
            return signed_url(mirror, path, license_id, self.omega.now())
        s3 = self.omega.s3
        if s3 is None or not (path in s3.held or await run_in_threadpool(s3.holds, path)):
            return None
        return presigned_url(mirror, path, license_id, self.omega.now())

    async def pack(self, request: Request) -> Response:
        """A release's blobs in one file (:mod:`.packs`), answered as a blob is
        (:func:`~ashat.agent.server.immutable_file`). With ``--blob-mirror`` a licensed
        request is sent there, as a blob's is, and never answered here: the mirror takes
        the bytes off OMEGA. An S3 mirror that does not hold the pack yet, or one that
        failed for it (``X-Ashat-Direct``: its record is dropped, so the next pass copies it
        again), is answered 404, so the mainframe takes the blobs one by one."""
        update_id = request.path_params["update_id"]
        digest = request.path_params["digest"]
        if not UPDATE_ID_RE.fullmatch(update_id) or not SHA256_RE.fullmatch(digest):
            raise NoSuchPack(f"no pack {update_id}/{digest}: not an update id and a digest")
        lic = await self._downloader(request)  # LicenseDenied
        path = await self._pack_file(update_id, digest)
        if lic is not None and self.agent.config.blob_mirror is not None:
            if request.headers.get(DIRECT_HEADER):  # the mirror failed for it: the blobs
                if self.omega.s3 is not None:  # copied again at the next pass
                    await run_in_threadpool(self.omega.s3.forget, packs.relative(digest))
                raise NoSuchPack(
                    f"the mirror failed for the pack of {update_id}: fetch its blobs one by one",
                    update_id=update_id,
                )
            url = await self._mirror_url(packs.relative(digest), lic.license_id)
            if url is None:
                raise NoSuchPack(
                    f"the pack of {update_id} is not in the S3 mirror yet: fetch its blobs "
                    "one by one",
                    update_id=update_id,
                )
            self.omega.metrics.pack_downloads.labels(by="mirror").inc()
            return _to_mirror(url)
        self.omega.metrics.pack_downloads.labels(by="omega").inc()
        return immutable_file(request, self.agent.config, path, packs.relative(digest), digest)

    async def _pack_file(self, update_id: str, digest: str) -> Path:
        """The pack's file: built already, or built now (one of the releases approved last)
        within :data:`PACK_WAIT_S`. Raises :class:`NoSuchPack`, and :class:`PackBuilding`
        when it takes longer (the build goes on, for the mainframes that ask later)."""
        path = self.omega.pack_built(update_id, digest)
        if path is not None:
            return path
        key = (update_id, digest)
        build = self._packing.get(key)
        if build is None:
            build = asyncio.ensure_future(run_in_threadpool(self.omega.pack, update_id, digest))
            self._packing[key] = build

            def built(f: asyncio.Future[Path]) -> None:
                self._packing.pop(key, None)
                if not f.cancelled():
                    f.exception()  # seen here too: the requests that waited may all be gone

            build.add_done_callback(built)
        done, _ = await asyncio.wait({build}, timeout=PACK_WAIT_S)
        if not done:
            raise PackBuilding(
                f"the pack of {update_id} is being built: fetch its blobs one by one, and "
                "ask again after Retry-After",
                update_id=update_id,
            )
        return build.result()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/packs/{update_id}/{digest}", self.pack, methods=["GET"]),  # and HEAD
            Route("/v1/releases/{update_id}/approve", self.approve, methods=["POST"]),
            Route("/v1/trust/roots", self.roots, methods=["POST"]),
            Route("/v1/fleet/rollouts", self.start_rollout, methods=["POST"]),
            Route("/v1/fleet/rollouts", self.rollouts_of, methods=["GET"]),
            Route("/v1/fleet/rollouts/{rollout_id}", self.rollout, methods=["GET"]),
            Route("/v1/fleet/rollouts/{rollout_id}/{action}", self.control, methods=["POST"]),
            Route("/v1/fleet/rollback", self.rollback, methods=["POST"]),
            Route("/v1/fleet/mainframes", self.mainframes, methods=["GET"]),
            Route("/v1/fleet/mainframes/{mainframe_id}/labels", self.label, methods=["POST"]),
            Route("/v1/fleet/mainframes/{mainframe_id}/pin", self.pin, methods=["POST"]),
            Route("/v1/fleet/revocations", self.revoke, methods=["POST"]),
            Route("/v1/fleet/revocations", self.revocations, methods=["GET"]),
            Route("/v1/fleet/poll", self.poll, methods=["GET"]),
            Route("/v1/fleet/report", self.report, methods=["POST"]),
            Route("/v1/fleet/blob-ticket", self.blob_ticket, methods=["GET"]),
        ]
