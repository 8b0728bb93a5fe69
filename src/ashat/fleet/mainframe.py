"""A Licensed Mainframe's pull loop: poll OMEGA, check what it sends, install it, report.

:class:`Mainframe` runs as one asyncio task in the agent's event loop, started and
cancelled with the server by :mod:`ashat.agent.runner`. Cancelling it drops a poll or a
download in flight at once; a partial download stays on disk, to resume.

One turn of the loop (docs/fleet-protocol.md, "Routes for mainframes"):

1. send the reports OMEGA has not acknowledged yet — they are kept in ``DIR/fleet.json``
   until it does, so neither OMEGA blinking nor a restart loses one;
2. ``GET /v1/fleet/poll?current=&sequence=&wait=&nonce=&app=&restarts=`` with
   ``Authorization: License``.
   ``{"directive": null, "no_directive": …}``: poll again, once the ``no_directive`` is
   OMEGA's signature over this mainframe, this poll's fresh ``nonce`` and the ``current``
   and ``sequence`` it sent; an answer without one is treated as OMEGA unreachable (it may
   be an attacker withholding an update).
   ``403``: the license was refused — log the reason once, keep running what runs, back off.
   A connection error or a 5xx: back off with jitter. OMEGA's state is in ``/v1/health``
   under ``fleet`` (:meth:`Mainframe.status`);
3. a directive: :func:`~ashat.fleet.directive.check_install` decides (pure). Refused:
   report ``failed`` with the reason. The very release running: report ``installed``.
   Else fetch the blobs the store lacks (:mod:`.download`), then stage and activate (or,
   for a ``rollback`` directive, roll back) through the :class:`~ashat.agent.core.Agent`
   exactly as a client of PUBLIC's bearer routes would — prepare hook, new app healthy
   before the old one stops, the old release kept on any failure — and report.

The sequence the mainframe runs is the ``sequence`` of the ``current`` release's manifest,
which the agent keeps on disk. Blocking agent calls run in worker threads. The loop's
counters (:class:`MainframeMetrics`) join the agent's ``/metrics``. Errors::

    RemoteError                      (ashat.errors)
    └── OmegaError                   OMEGA unreachable or answering nonsense: back off
        └── LicenseRefusedByOmega    403, with OMEGA's ``reason`` (expired, revoked, …)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import platform
import random
import secrets
import shutil
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from ashat import __version__
from ashat.agent.config import MainframeConfig
from ashat.agent.core import Agent
from ashat.agent.errors import ReleaseDamaged
from ashat.bundle.delta import DeltaError, apply_delta
from ashat.bundle.errors import BundleError
from ashat.bundle.keys import PublicKey
from ashat.bundle.manifest import Manifest, parse_manifest
from ashat.canonical import canonical_json
from ashat.clock import iso_seconds
from ashat.clock import now as clock_now
from ashat.errors import AshatError, RemoteError
from ashat.faults import crash_point
from ashat.fleet import packs
from ashat.fleet.directive import (
    Action,
    AnswerRefused,
    DirectiveRefused,
    Install,
    Running,
    check_install,
    check_no_directive,
    peek_directive,
)
from ashat.fleet.download import BlobDownloader, DownloadError, NoTicket, Pack, Wanted
from ashat.fleet.windows import LOCK_FILE, holds, in_window, lock_holds, parse_window, zone
from ashat.ids import UNSAFE_LINES_RE
from ashat.project import write_private
from ashat.transport import outgoing
from ashat.transport.errors import BadResponse
from ashat.trust.chain import check_chain, ed25519_keys, evidence_of
from ashat.trust.held import HeldRoot, held_root
from ashat.trust.root import TrustRefused

log = logging.getLogger("ashat.fleet")

STATE_FILE = "fleet.json"  # in the data directory: reports OMEGA has not acknowledged
STATE_SCHEMA = 1
POLL_GRACE_S = 15.0  # added to ``wait`` for a poll's read timeout
# the longest a request may take in all, beyond its wait: the read timeout bounds each pause,
# this a server dripping bytes just fast enough to never trip it (slow retrieval)
TOTAL_S = outgoing.TOTAL_S
RETRY_BASE_S = 1.0  # pause after a first connection error; doubles, jittered, up to the cap
RETRY_CAP_S = 30.0
REFUSED_BASE_S = 5.0  # pause after a license refusal; doubles up to the cap
REFUSED_CAP_S = 60.0
DIRECTIVE_REFUSED_PAUSE_S = 2.0  # before polling again after refusing a directive
MAX_REASON_CHARS = 1000  # of a failure reason sent in a report
MAX_ERROR_CHARS = 300  # of OMEGA's error message kept for the log and health
MAX_OFFERED_CHAINS = 16  # distinct root chains taken from one poll answer (one per key)
MAX_PENDING_REPORTS = 100
TICKET_MARGIN_S = 60.0  # a blob ticket is asked for again this long before it expires
TICKETLESS_S = 300.0  # before an OMEGA without blob tickets is asked for one again
NONCE_BYTES = 18  # of a poll's nonce, which OMEGA's signed "no directive" must name


_utcnow = clock_now
_iso = iso_seconds


def _pause(n: int, base: float, cap: float, jitter: bool = True) -> float:
    """The pause after the ``n``-th failure in a row (n >= 1)."""
    pause = min(cap, base * 2 ** min(max(n - 1, 0), 16))
    return pause * random.uniform(0.5, 1.0) if jitter else pause


class OmegaError(RemoteError):
    """OMEGA could not be reached, or answered something unusable."""

    kind = "omega"


class LicenseRefusedByOmega(OmegaError):
    """OMEGA answered 403 (or 401): ``reason`` is its one word, ``message`` its sentence."""

    kind = "license_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


def omega_tls(config: MainframeConfig) -> ssl.SSLContext | bool:
    """How to check OMEGA's certificate. Raises :class:`InvalidInput` for a bad CA file."""
    return outgoing.tls(config.omega_ca_cert, "--omega-ca-cert")


class MainframeMetrics:
    """The pull loop's counters, in its agent's registry."""

    POLL_RESULTS = ("directive", "empty", "refused", "unauthenticated", "error")
    INSTALL_RESULTS = ("installed", "already", "failed", "refused")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "ashat_mainframe_polls",
            "Polls of OMEGA by result: directive, empty, refused (the license), "
            "unauthenticated (an empty answer OMEGA did not sign for this poll), error",
            ["result"],
            registry=registry,
        )
        self.authenticated = Gauge(
            "ashat_mainframe_last_authenticated_answer_timestamp_seconds",
            "When OMEGA last answered 'no directive', signed for this mainframe and that "
            "very poll; 0 before the first. Alert on its age: a mainframe held back by a "
            "network attacker stops advancing it",
            registry=registry,
        )
        self.bytes_downloaded = Counter(
            "ashat_mainframe_bytes_downloaded",
            "Bytes of blobs received from OMEGA (a resumed transfer counts what it adds)",
            registry=registry,
        )
        self.installs = Counter(
            "ashat_mainframe_installs",
            "Directives carried out by result: installed, already (it ran), failed, "
            "refused (the directive failed its checks)",
            ["result"],
            registry=registry,
        )
        for result in self.POLL_RESULTS:
            self.polls.labels(result=result)
        for result in self.INSTALL_RESULTS:
            self.installs.labels(result=result)


class ReportQueue:
    """Reports not yet acknowledged by OMEGA, oldest first, in ``DIR/fleet.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[dict[str, Any]] = self._load()

    def _load(self) -> list[dict[str, Any]]:
        try:
            obj = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError:
            log.error("%s is not JSON; its unsent reports are lost", self.path.name)
            return []
        items = obj.get("pending_reports") if isinstance(obj, dict) else None
        if not isinstance(items, list):
            log.error("%s is malformed; its unsent reports are lost", self.path.name)
            return []
        return [r for r in items if isinstance(r, dict) and isinstance(r.get("rollout_id"), str)]

    def _save(self) -> None:
        data = {"schema": STATE_SCHEMA, "pending_reports": self.items}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), 0o600)

    def put(self, report: dict[str, Any]) -> None:
        """Queue ``report``, replacing one for the same rollout and release."""
        key = (report["rollout_id"], report["update_id"])
        self.items = [r for r in self.items if (r["rollout_id"], r.get("update_id")) != key]
        self.items.append(report)
        del self.items[:-MAX_PENDING_REPORTS]
        self._save()

    def done(self, report: Mapping[str, Any]) -> None:
        self.items = [r for r in self.items if r is not report]
        self._save()


def offered_roots(manifest: str) -> list[list[Any]]:
    """The root chains a release carries in its approval payloads, each as OMEGA sent it
    (unchecked here: the held root takes only versions that chain from it, so the payload
    of a signature by an OMEGA key root does not know yet — a rotated one — counts too).
    All of them, not the first: a bad one placed first must not hide a good one."""
    try:
        m = parse_manifest(manifest.encode("utf-8"))
    except BundleError:
        return []
    out = []
    for s in m.signatures:
        if s.role == "approval" and isinstance(s.payload, dict):
            roots = s.payload.get("roots")
            if isinstance(roots, list):
                out.append(roots)
    return out


class ChainPolicy:
    """The agent's :class:`~ashat.agent.core.ReleasePolicy` on a mainframe with a root: the
    keys of root's roles, and a release staged by any route must carry its whole chain."""

    def __init__(self, held: HeldRoot, clock: Callable[[], dt.datetime]) -> None:
        self.held = held
        self.clock = clock

    def trusted_by_role(self) -> dict[str, Mapping[str, PublicKey]]:
        root = self.held.root
        return {"release": ed25519_keys(root, "releasers"), "approval": ed25519_keys(root, "omega")}

    def admit(self, m: Manifest) -> None:
        root = self.held.current(self.clock())
        check_chain(root, m, evidence_of(m, ed25519_keys(root, "omega")))


def ticket_answer(status: int, body: Any) -> tuple[str, float] | None:
    """The ``Authorization`` value and its seconds that OMEGA's answer to
    ``GET /v1/fleet/blob-ticket`` gives; None if it gave no ticket."""
    if status != 200 or not isinstance(body, dict):
        return None
    ticket, good_s = body.get("ticket"), body.get("expires_in")
    if not isinstance(ticket, str) or not isinstance(good_s, int) or isinstance(good_s, bool):
        return None
    if not (ticket.isascii() and ticket.isprintable()) or " " in ticket or not ticket:
        return None  # only a token goes in a header
    return f"Ticket {ticket}", float(good_s)


def before_tickets(status: int, body: Any) -> bool:
    """Whether OMEGA's answer to ``GET /v1/fleet/blob-ticket`` says it is a version
    before blob tickets: its middleware refused the route as one of the bearer's (401,
    ``unauthenticated``), which a license route never answers a license, or it has no
    such route (404)."""
    if status == 404:
        return True
    return status == 401 and isinstance(body, dict) and body.get("kind") == "unauthenticated"


class TicketAuth(httpx.Auth):
    """Blob and pack requests through a site's cache carry what ``fetch()`` gives (a blob
    ticket OMEGA signed for this mainframe's license, fleet/tickets.py) and never the
    license itself: whoever runs the cache must not hold what polls and reports as the
    mainframe. ``fetch()`` returns the ``Authorization`` value and for how many seconds it
    is good (None: none to be had). One is asked for when none is held, or when it expires
    within :data:`TICKET_MARGIN_S` (OMEGA checks it as a request starts: a download under
    way goes on past it).

    Where none is to be had, the request is not sent: :class:`NoTicket`, which the
    download tries again as it does a broken connection. A ticket refused through the
    cache (401 or 403, not a mirror's after a redirect) is dropped: the first time, that
    try is :class:`NoTicket` again and the next takes a new ticket (this one may have
    expired while the cache's lock held the request, or OMEGA's key changed); sent again
    after that and refused again (OMEGA gives a license the same ticket within a minute),
    the refusal is handed on as OMEGA (or the cache) gave it, for the download to report. Nothing is
    sent again here: that would read the refusal's whole body, which the cache decides."""

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, float] | None]]) -> None:
        self._fetch = fetch
        self._value: str | None = None
        self._until = 0.0  # time.monotonic() after which it is asked for again
        self._refused: str | None = None  # the last ticket refused through the cache
        self._lock: asyncio.Lock | None = None

    async def _current(self) -> str | None:
        """The value to send (asked of OMEGA where none is held, or it ends soon)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # downloads side by side ask for one ticket, not one each
            if self._value is not None and time.monotonic() < self._until:
                return self._value
            got = await self._fetch()
            self._value, good_s = got if got is not None else (None, 0.0)
            self._until = time.monotonic() + max(0.0, good_s - TICKET_MARGIN_S)
            return self._value

    async def ready(self) -> bool:
        """Whether a ticket is held or to be had now (one is asked for if not)."""
        return await self._current() is not None

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        value = await self._current()
        if value is None:
            raise NoTicket("OMEGA gave no blob ticket for the site cache", request=request)
        request.headers["Authorization"] = value
        refused_before = self._refused == value  # not those sent beside the first refused
        response = yield request
        if response.status_code not in (401, 403) or response.history:
            return
        if self._value == value:
            self._value = None  # the next request asks OMEGA for another
        if not refused_before:
            self._refused = value
            raise NoTicket(
                f"the site cache answered {response.status_code} to a blob ticket: "
                "asking OMEGA for a new one",
                request=request,
            )


class BlobRoutes:
    """Where an install's blobs come from: with a site cache (``--blob-cache``), through
    it while OMEGA gives this mainframe blob tickets to show there (``auth``), else from
    OMEGA itself, with the license, as without a cache: the cache never sees the license.
    ``said(route)`` hears where each install's blobs came from (``cache`` or ``omega``).
    Only an OMEGA that gives no tickets at all (``ticketless()``) sends the blobs around
    the cache: a ticket not had for a moment (OMEGA busy at a rollout's start) is asked
    for again by the download's tries, through the cache, not a release's worth of bytes
    sent by OMEGA."""

    def __init__(
        self,
        direct: BlobDownloader,
        cached: BlobDownloader | None = None,
        auth: TicketAuth | None = None,
        said: Callable[[str], object] = lambda route: None,
        ticketless: Callable[[], bool] = lambda: False,
    ) -> None:
        self.direct, self.cached, self.auth, self.said = direct, cached, auth, said
        self.ticketless = ticketless

    async def fetch_all(self, wanted: Sequence[Wanted], pack: Pack | None = None) -> None:
        """:meth:`BlobDownloader.fetch_all` from the cache or from OMEGA (above)."""
        downloads = self.direct
        cache, auth = self.cached, self.auth
        if cache is not None and auth is not None and (await auth.ready() or not self.ticketless()):
            downloads = cache  # ready() first: it learns whether OMEGA gives tickets
        self.said("cache" if downloads is self.cached else "omega")
        await downloads.fetch_all(wanted, pack)


class Mainframe:
    """The pull loop of one mainframe agent (see the module docstring)."""

    def __init__(
        self,
        agent: Agent,
        config: MainframeConfig,
        *,
        verify: ssl.SSLContext | bool | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.agent = agent
        self.config = config
        self.verify = omega_tls(config) if verify is None else verify
        self.clock = clock
        self.reports = ReportQueue(agent.layout.root / STATE_FILE)
        self.metrics = MainframeMetrics(agent.metrics.registry)
        self._root_refusal: str | None = None  # the last root chains not taken, as logged
        self._status: dict[str, Any] = {
            "omega": config.omega_url,
            "mainframe_id": config.mainframe_id,
            "license_id": config.license_id,
            "last_poll": None,
            "last_authenticated": None,
            "last_error": None,
            "license_status": "unknown",
            "last_install": None,
            "blobs_from": None,  # where the last install's blobs came from
        }
        self._logged_refusal: str | None = None
        self._logged_unreachable: str | None = None
        self.root = held_root(agent.config.root_file, agent.config.data)
        self._whole_manifest = False  # a delta did not rebuild: the next poll asks whole
        self._windows = tuple(parse_window(w) for w in config.windows)  # checked by the CLI
        self._tz = zone(config.window_tz)
        self._lock_since: float | None = None  # when this agent first saw update.lock
        self._nonce: str | None = None  # of the last poll sent (its directive must name it)
        self._ticketless = False  # OMEGA said it gives no blob tickets (logged once)
        self._ticketless_until = 0.0  # time.monotonic() before which it is not asked again
        if self.root is not None:
            agent.release_policy = ChainPolicy(self.root, clock)
            self._status["root_version"] = self.root.root.version
            self._status["root_expires"] = _iso(self.root.root.expires)
        else:
            log.warning(
                "no root of trust (--root): this mainframe installs whatever OMEGA's key "
                "approves; it cannot check that a release was verified and approved"
            )
            self._status["root_version"] = None
            self._status["root_expires"] = None
        agent.fleet_status = self.status  # the "fleet" part of /v1/health

    def _omega_keys(self) -> Mapping[str, PublicKey]:
        if self.root is None:
            return self.config.trusted_omega
        return ed25519_keys(self.root.root, "omega")

    def status(self) -> dict[str, Any]:
        """The ``fleet`` part of ``/v1/health`` (safe from any thread)."""
        return {**self._status, "pending_reports": len(self.reports.items)}

    def _client(
        self, base_url: str | None = None, auth: httpx.Auth | None = None
    ) -> httpx.AsyncClient:
        """A client of OMEGA, with the license; or, given ``auth``, one that it
        authenticates (the site's cache in front of OMEGA, for blobs: :class:`TicketAuth`)."""
        headers = {"User-Agent": f"ashat-mainframe/{__version__}"}
        if auth is None:
            headers["Authorization"] = f"License {self.config.license}"
        return outgoing.async_client(
            base_url=base_url or self.config.omega_url,
            headers=headers,
            verify=self.verify,
            redirect_hosts=self.config.redirect_hosts(),  # --blob-host (checked at start)
            auth=auth,
        )

    async def _blob_ticket(self, http: httpx.AsyncClient) -> tuple[str, float] | None:
        """What blob and pack requests through the site's cache carry (``Authorization``),
        and for how many seconds: a blob ticket asked of OMEGA itself (fleet/tickets.py),
        never the license. None where OMEGA gave none: the blobs then come from OMEGA
        itself (:class:`BlobRoutes`). An OMEGA from before tickets (:func:`before_tickets`),
        said once in the log, is asked again only after :data:`TICKETLESS_S`."""
        if time.monotonic() < self._ticketless_until:
            return None
        try:
            status, body = await self._request(http, "GET", "/v1/fleet/blob-ticket")
        except OmegaError as e:
            log.warning("no blob ticket for the site cache: %s", e.message)
            return None
        answer = ticket_answer(status, body)
        if answer is not None:
            if self._ticketless:
                self._ticketless = False
                log.info("OMEGA gives blob tickets now: blobs come through the site cache")
            return answer
        if before_tickets(status, body):
            self._ticketless_until = time.monotonic() + TICKETLESS_S
            if not self._ticketless:
                self._ticketless = True
                log.warning(
                    "OMEGA gives no blob tickets (a version before them, or a proxy in front "
                    "of it that does not pass /v1/fleet/blob-ticket): blobs come from OMEGA "
                    "itself, not through the site cache (--blob-cache %s), which is never "
                    "sent this mainframe's license",
                    self.config.blob_cache,
                )
            return None
        log.warning("OMEGA gave no blob ticket: %s", self._error_of(status, body))
        return None

    def _downloader(self, http: httpx.AsyncClient) -> BlobDownloader:
        return BlobDownloader(
            http,
            self.agent.blobs,
            self.agent.layout.partial,
            received=self.metrics.bytes_downloaded.inc,
        )

    def _no_tickets(self) -> bool:
        """Whether OMEGA said it gives no blob tickets, within :data:`TICKETLESS_S`."""
        return time.monotonic() < self._ticketless_until

    def _blobs_from(self, route: str) -> None:
        if route != (self._status["blobs_from"] or "cache") and self.config.blob_cache:
            log.info(
                "blobs come %s",
                "through the site cache" if route == "cache" else "from OMEGA itself",
            )
        self._status["blobs_from"] = route

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll, install and report until cancelled."""
        log.info(
            "mainframe %s (license %s) pulling from %s%s",
            self.config.mainframe_id,
            self.config.license_id,
            self.config.omega_url,
            f" (blobs through {self.config.blob_cache})" if self.config.blob_cache else "",
        )
        async with contextlib.AsyncExitStack() as clients:
            http = await clients.enter_async_context(self._client())
            downloads = BlobRoutes(
                self._downloader(http), said=self._blobs_from, ticketless=self._no_tickets
            )
            if self.config.blob_cache:  # a site's cache, for blobs only: tickets, no license
                auth = TicketAuth(partial(self._blob_ticket, http))
                cache = await clients.enter_async_context(
                    self._client(self.config.blob_cache, auth)
                )
                downloads.cached, downloads.auth = self._downloader(cache), auth
            refused = failed = 0
            while True:
                try:
                    await self._send_reports(http)
                    answer = await self._poll(http)
                    refused = failed = 0
                    if answer is not None:
                        await self._handle(http, downloads, answer, self._nonce)
                except LicenseRefusedByOmega as e:
                    refused, failed = refused + 1, 0
                    await self._note_refusal(e)
                    await asyncio.sleep(_pause(refused, REFUSED_BASE_S, REFUSED_CAP_S, False))
                except OmegaError as e:
                    failed += 1
                    self._note_unreachable(e)
                    await asyncio.sleep(_pause(failed, RETRY_BASE_S, RETRY_CAP_S))
                except Exception as e:  # a bug must not end the mainframe's updates for good
                    failed += 1
                    log.exception("fleet loop: unexpected %s", type(e).__name__)
                    self._status["last_error"] = f"internal error ({type(e).__name__})"
                    await asyncio.sleep(_pause(failed, RETRY_BASE_S, RETRY_CAP_S))

    async def _request(
        self,
        http: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        limit: int = 1024 * 1024,
        wait_s: float = 0.0,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """Send one request; its status and JSON body (None if not JSON), read to ``limit``
        within ``wait_s`` (what OMEGA may hold it) + :data:`TOTAL_S` seconds.

        Raises :class:`OmegaError` if OMEGA cannot be reached, answers too much or too slowly.
        """
        where = self.config.omega_url
        total_s = wait_s + TOTAL_S
        try:
            async with asyncio.timeout(total_s), http.stream(method, path, **kwargs) as response:
                raw = await outgoing.aread_answer(
                    response, f"OMEGA's answer to {path}", max_bytes=limit
                )
                status = response.status_code
        except BadResponse as e:
            raise OmegaError(e.message) from e
        except TimeoutError as e:
            raise OmegaError(f"OMEGA's answer to {path} took more than {total_s:g}s") from e
        except httpx.HTTPError as e:
            raise OmegaError(outgoing.failure(e, where, "OMEGA").message) from e
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, RecursionError):  # RecursionError: nested deeper than we parse
            body = None
        return status, body

    @staticmethod
    def _error_of(status: int, body: Any) -> str:
        message = body.get("error") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            return f"status {status}"
        # OMEGA's words reach this machine's log and health: no terminal escape, no
        # control character (a review: a 403's error coloured and moved the log's lines)
        shown = UNSAFE_LINES_RE.sub("\N{REPLACEMENT CHARACTER}", message)
        return " ".join(shown.split())[:MAX_ERROR_CHARS]

    def _refusal(self, status: int, body: Any) -> LicenseRefusedByOmega:
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.isidentifier():
            reason = "unauthenticated" if status == 401 else "refused"
        return LicenseRefusedByOmega(reason[:40], self._error_of(status, body))

    def _inventory(self) -> dict[str, str]:
        """What this machine is, for OMEGA's selectors and ``ashat fleet list`` (issue 19):
        ``os``, ``arch``, ``python``, ``ashat``, and the data directory's ``free_disk``."""
        out = {
            "os": platform.system().lower() or "unknown",
            "arch": platform.machine().lower() or "unknown",
            "python": platform.python_version(),
            "ashat": __version__,
        }
        with contextlib.suppress(OSError):
            out["free_disk"] = str(shutil.disk_usage(self.agent.config.data).free)
        return out

    async def _poll(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        """One long poll: the answer if it carries a directive, else None (OMEGA signed
        that it has none, for this poll's nonce)."""
        running = await asyncio.to_thread(self._running)
        app, restarts = await asyncio.to_thread(self.agent.app_state)
        wait = self.config.poll_wait_s
        nonce = self._nonce = secrets.token_urlsafe(NONCE_BYTES)
        params = {
            "current": running.update_id if running else "",
            "sequence": str(running.sequence if running else 0),
            "wait": str(wait),
            "nonce": nonce,
            "app": app,  # OMEGA's mainframe list shows it; a crash loop fails a wave
            "restarts": str(restarts),
            **await asyncio.to_thread(self._inventory),  # labels OMEGA's selectors may use
        }
        if self.root is not None:  # OMEGA answers with the newer versions it holds
            params["root"] = str(self.root.root.version)
        hold = await asyncio.to_thread(self._hold)
        if hold is not None:
            params["hold"] = hold  # OMEGA sends nothing now, and does not fail it for that
        self._status["hold"] = hold
        if running is not None and not self._whole_manifest:
            params["delta"] = "1"  # the manifest may come as a delta from the one it runs
        self._whole_manifest = False  # asked whole once after a delta that did not rebuild
        polls = self.metrics.polls
        try:
            status, body = await self._request(
                http,
                "GET",
                "/v1/fleet/poll",
                params=params,
                timeout=outgoing.timeout(wait + POLL_GRACE_S),
                # the manifest comes as a JSON string: escaping may double it
                limit=2 * self.agent.config.max_manifest_bytes + 64 * 1024,
                wait_s=wait,
            )
        except OmegaError:
            polls.labels(result="error").inc()
            raise
        if status in (401, 403):
            polls.labels(result="refused").inc()
            raise self._refusal(status, body)
        if status != 200 or not isinstance(body, dict) or "directive" not in body:
            polls.labels(result="error").inc()
            raise OmegaError(f"OMEGA answered a poll with {self._error_of(status, body)}")
        if self.root is not None and isinstance(body.get("roots"), list):
            await asyncio.to_thread(self.root.offer, body["roots"])  # only what chains
            self._status["root_version"] = self.root.root.version
        if self.root is not None:
            self._status["root_expires"] = _iso(self.root.root.expires)
            try:  # OMEGA's keys come from the root: an expired one authenticates nothing
                self.root.current(self.clock())
            except TrustRefused as e:  # a frozen mainframe says so, its health too
                polls.labels(result="unauthenticated").inc()
                raise OmegaError(e.message) from e
        if body["directive"] is None:
            try:
                check_no_directive(
                    body.get("no_directive"),
                    mainframe_id=self.config.mainframe_id,
                    nonce=nonce,
                    current=running.update_id if running else None,
                    sequence=running.sequence if running else 0,
                    omega_keys=self._omega_keys(),
                )
            except AnswerRefused as e:
                polls.labels(result="unauthenticated").inc()
                raise OmegaError(
                    f"{e.message}: it cannot be told from an update withheld ({e.reason})"
                ) from e
            self._note_ok()
            self._note_authenticated()
            polls.labels(result="empty").inc()
            return None
        self._note_ok()
        polls.labels(result="directive").inc()
        return body

    def _running(self) -> Running | None:
        current = self.agent.links()[0]
        if current is None:
            return None
        m = self.agent.releases.manifest(current)
        return Running(current, m.sequence, m.digest())

    def _hold(self) -> str | None:
        """Why this mainframe may not switch now (``fleet/windows.py``): ``"window"`` outside
        its maintenance windows, ``"lock"`` while its app holds ``update.lock``; else None
        (:func:`~ashat.fleet.windows.holds` says which directives that keeps back)."""
        now = self.clock()
        local = now.astimezone(self._tz) if self._tz is not None else now.astimezone()
        if not in_window(self._windows, local):
            return "window"
        # Counted from when this agent first saw the lock, not from the file's time, which
        # the app sets: touching the file (or dating it ahead) never extends the deferral.
        if not (self.agent.layout.shared / LOCK_FILE).exists():
            self._lock_since = None
            return None
        if self._lock_since is None:
            self._lock_since = now.timestamp()
        if lock_holds(self._lock_since, now.timestamp(), self.config.update_lock_max_s):
            return "lock"
        return None

    def _rebuild(self, running: Running, delta: Any) -> str | None:
        """The manifest a delta from the running one's makes (``bundle/delta.py``), or None
        (and the next poll asks for it whole) if it does not rebuild what it names."""
        try:
            base = self.agent.releases.manifest_bytes(running.update_id)
            text = apply_delta(base, delta).decode("utf-8")
            size = len(canonical_json(delta))  # ValueError: a NaN beside what it rebuilt
        except (DeltaError, AshatError, OSError, UnicodeDecodeError, ValueError) as e:
            log.warning("manifest delta from %s refused (%s); asking for it whole",
                        running.update_id, e)  # fmt: skip
            self._whole_manifest = True
            return None
        self._status["last_manifest"] = {"delta": True, "bytes": size}
        return text

    def _current_name(self) -> str:
        return self.agent.links()[0] or "no release"

    # -- a directive ---------------------------------------------------------------------------

    def _offer_roots(self, manifest: str) -> None:
        """Offer the held root the chains ``manifest`` carries, before the directive is
        checked (it may need a newer root). The manifest is not checked yet, so: each
        distinct chain once, :data:`MAX_OFFERED_CHAINS` at most, and one log line for those
        not taken — repeated only when the reason changes (a review: 60,000 junk chains in
        one answer wrote 32 MB of warnings in 30 s)."""
        assert self.root is not None
        seen: set[str] = set()
        refused: list[str] = []
        for chain in offered_roots(manifest):
            key = json.dumps(chain, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            if len(seen) > MAX_OFFERED_CHAINS:
                refused.append(f"more than {MAX_OFFERED_CHAINS} chains offered at once")
                break
            _, why = self.root.offer_quietly(chain)
            if why is not None:
                refused.append(why)
        note = f"{len(refused)} root chain(s) offered not taken: {refused[0]}" if refused else None
        if note is not None and note != self._root_refusal:
            log.warning("%s", note)
        self._root_refusal = note

    async def _handle(
        self,
        http: httpx.AsyncClient,
        downloads: BlobRoutes,
        answer: dict[str, Any],
        nonce: str | None = None,
    ) -> None:
        """Act on the directive of ``answer``, OMEGA's answer to the poll that sent
        ``nonce``."""
        token, manifest = answer.get("directive"), answer.get("manifest")
        running = await asyncio.to_thread(self._running)
        if "manifest_delta" in answer and running is not None and isinstance(token, str):
            manifest = await asyncio.to_thread(self._rebuild, running, answer["manifest_delta"])
            if manifest is None:
                return  # the next poll asks for the whole manifest
        if not isinstance(token, str) or not isinstance(manifest, str):
            raise OmegaError("OMEGA's poll answer has a directive but no manifest string")
        try:
            root = None
            if self.root is not None:
                await asyncio.to_thread(self._offer_roots, manifest)
                self._status["root_version"] = self.root.root.version
                root = self.root.current(self.clock())
            plan = check_install(
                token,
                manifest.encode("utf-8"),
                mainframe_id=self.config.mainframe_id,
                release_keys=self.agent.config.trusted,
                omega_keys=self.config.trusted_omega,
                running=running,
                now=self.clock(),
                max_manifest_bytes=self.agent.config.max_manifest_bytes,
                rolled_back=frozenset(self.agent.state.rolled_back),
                root=root,
                nonce=nonce,
            )
        except TrustRefused as e:  # the root held here expired
            refusal = DirectiveRefused(e.reason, e.message, peek_directive(token))
            await self._refused(http, refusal, running)
            return
        except DirectiveRefused as e:
            await self._refused(http, e, running)
            return
        d = plan.directive
        if plan.already:
            log.info("rollout %s: %s runs here already", d.rollout_id, d.update_id)
            self.metrics.installs.labels(result="already").inc()
            await self._report(http, d.rollout_id, d.update_id, "installed", None)
            return
        why = await asyncio.to_thread(self._hold)  # since it polled
        if holds(why, rollback=d.action is Action.ROLLBACK):
            log.info("rollout %s: %s deferred (%s)", d.rollout_id, d.update_id, why)
            return
        log.info(
            "rollout %s: %s %s (sequence %d), running %s",
            d.rollout_id,
            "rolling back to" if d.action is Action.ROLLBACK else "installing",
            d.update_id,
            d.sequence,
            running.update_id if running else "no release",
        )
        try:
            await self._install(downloads, plan, running)
        except DownloadError as e:
            if not e.final:
                # OMEGA's fault, not the release's: the directive comes again, and the
                # download resumes where it stopped.
                raise OmegaError(e.message) from e
            await self._failed(http, plan, e)
            return
        except (AshatError, OSError) as e:  # OSError: the agent's disk, as in a full one
            if self.agent.stopping.is_set():
                return  # not the release's fault; OMEGA asks again after the restart
            await self._failed(http, plan, e)
            return
        crash_point("mainframe.installed")
        log.info("rollout %s: %s installed", d.rollout_id, d.update_id)
        self.metrics.installs.labels(result="installed").inc()
        await self._report(http, d.rollout_id, d.update_id, "installed", None)

    async def _refused(
        self, http: httpx.AsyncClient, e: DirectiveRefused, running: Running | None
    ) -> None:
        """Log a refused directive, count it, and report it to OMEGA when it is readable."""
        d = e.directive
        of = f" of rollout {d.rollout_id}" if d is not None else ""
        log.error(
            "refused the directive%s (%s): %s — keeping %s",
            of,
            e.reason,
            e.message,
            running.update_id if running else "no release",
        )
        self.metrics.installs.labels(result="refused").inc()
        self._status["last_error"] = f"refused a directive{of}: {e.reason}"
        if d is not None:
            # docs/fleet-protocol.md: the reason starts with its word (OMEGA shows it)
            reason = f"{e.reason}: {e.message}"
            await self._report(http, d.rollout_id, d.update_id, "failed", reason)
        await asyncio.sleep(DIRECTIVE_REFUSED_PAUSE_S)  # OMEGA may send it again at once

    async def _install(self, downloads: BlobRoutes, plan: Install, running: Running | None) -> None:
        """Fetch, stage and switch to the release; if its files on disk were altered (its
        altered blobs are then quarantined and its tree removed), once more from OMEGA."""
        try:
            await self._fetch_and_switch(downloads, plan, running)
        except ReleaseDamaged as e:
            log.warning("%s; fetching it again from OMEGA", e.message)
            await self._fetch_and_switch(downloads, plan, running)

    async def _fetch_and_switch(
        self, downloads: BlobRoutes, plan: Install, running: Running | None
    ) -> None:
        m = plan.manifest
        missing = await asyncio.to_thread(self.agent.releases.missing_blobs, m)
        if missing:
            sizes = {e.sha256: e.size for e in m.files if e.kind == "file"}
            log.info(
                "%s: fetching %d blob(s), %d bytes, from OMEGA",
                m.update_id,
                len(missing),
                sum(sizes[d] for d in missing),
            )
            pack = Pack(f"/v1/packs/{m.update_id}/{m.digest()}", packs.layout(m))
            await downloads.fetch_all([Wanted(d, sizes[d]) for d in missing], pack)
        crash_point("mainframe.fetched")
        await asyncio.to_thread(self.agent.stage, plan.manifest_bytes)
        crash_point("mainframe.staged")
        if plan.directive.action is Action.ROLLBACK and running is not None:
            await asyncio.to_thread(
                self.agent.rollback, running.update_id, m.update_id, directed=True
            )
        else:
            await asyncio.to_thread(self.agent.activate, m.update_id, directed=True)

    async def _failed(self, http: httpx.AsyncClient, plan: Install, e: Exception) -> None:
        d = plan.directive
        self.metrics.installs.labels(result="failed").inc()
        message = e.message if isinstance(e, AshatError) else str(e)
        log.error(
            "rollout %s: %s failed: %s — keeping %s",
            d.rollout_id,
            d.update_id,
            message,
            self._current_name(),
        )
        await self._report(http, d.rollout_id, d.update_id, "failed", message)

    # -- reports -------------------------------------------------------------------------------

    async def _report(
        self,
        http: httpx.AsyncClient,
        rollout_id: str,
        update_id: str,
        status: str,
        reason: str | None,
    ) -> None:
        """Queue a report durably, then try to send it (and any older one).

        Raises :class:`OmegaError` if OMEGA cannot take it now; it stays queued.
        """
        report = {
            "rollout_id": rollout_id,
            "update_id": update_id,
            "status": status,
            "reason": reason[:MAX_REASON_CHARS] if reason else None,
        }
        self._status["last_install"] = {**report, "at": _iso(self.clock())}
        await asyncio.to_thread(self.reports.put, report)
        crash_point("mainframe.report")
        await self._send_reports(http)

    async def _send_reports(self, http: httpx.AsyncClient) -> None:
        """Send the queued reports, oldest first. Raises :class:`OmegaError`."""
        for report in list(self.reports.items):
            status, body = await self._request(http, "POST", "/v1/fleet/report", json=report)
            if status in (401, 403):
                raise self._refusal(status, body)
            if status >= 500 or status in (408, 429):
                raise OmegaError(f"OMEGA answered a report with {self._error_of(status, body)}")
            if status >= 300:
                log.warning(
                    "OMEGA refused the report of rollout %s (%s); dropped",
                    report["rollout_id"],
                    self._error_of(status, body),
                )
            await asyncio.to_thread(self.reports.done, report)

    # -- what the log and health say -----------------------------------------------------------

    def _note_authenticated(self) -> None:
        """OMEGA's signed answer to this very poll arrived: the mainframe is held back by
        nobody but OMEGA (a gauge to alert on). A directive does not count: it is not bound
        to the poll, and could be one replayed within its lifetime."""
        now = self.clock()
        self._status["last_authenticated"] = _iso(now)
        self.metrics.authenticated.set(now.timestamp())

    def _note_ok(self) -> None:
        self._status.update(last_poll=_iso(self.clock()), last_error=None, license_status="ok")
        if self._logged_refusal is not None:
            log.info("license accepted by OMEGA again")
        if self._logged_unreachable is not None:
            log.info("OMEGA at %s answers again", self.config.omega_url)
        self._logged_refusal = self._logged_unreachable = None

    async def _note_refusal(self, e: LicenseRefusedByOmega) -> None:
        self._status.update(license_status=e.reason, last_error=e.message)
        self._logged_unreachable = None
        if e.reason != self._logged_refusal:
            self._logged_refusal = e.reason
            current = await asyncio.to_thread(self._current_name)
            log.error(
                "license refused by OMEGA: %s — keeping %s (%s)", e.reason, current, e.message
            )

    def _note_unreachable(self, e: OmegaError) -> None:
        self._status["last_error"] = e.message
        if e.message != self._logged_unreachable:
            self._logged_unreachable = e.message
            log.warning("%s; retrying", e.message)
