"""Fetching blobs from OMEGA into a mainframe's blob store, resuming interrupted transfers.

Each blob is downloaded by appending to ``DIR/tmp/partial/<sha256>``, which survives a
restart (:meth:`~ashat.agent.layout.Layout.clean_tmp` spares that directory). A transfer
cut short resumes with ``Range: bytes=N-`` (``GET /v1/blobs/{sha256}`` honours it with a
``206``); a server that ignores the range (``200``) starts the file over. Once the file
holds the size the manifest names, a :class:`~ashat.agent.blobs.BlobWriter` takes it as its
temp file, hashing it without writing it again, and checks the digest — the one way into
the store; the blobs of one fetch are then made durable and renamed into the store
together. A digest mismatch (a corrupt partial from an earlier run, a bad byte on the wire)
deletes the partial and fetches the blob once more from zero; a second mismatch fails.

OMEGA may answer a blob request with a redirect to a mirror; a refusal there, the wrong
bytes from it, or a mirror on a host the mainframe's ``--blob-host`` list does not name
(not asked at all) make the next tries of that blob carry ``X-Ashat-Direct: 1``, and OMEGA
sends it itself. A pack request may be redirected too; a mirror without the pack, or a wrong blob
in it, sends the mainframe to the blobs one by one. Connection errors and 5xx answers are
retried with backoff as long as a retry makes progress, up to ``attempts`` in a row without
any; a 4xx answer is final. A try slower than ``min_rate_bps`` (after ``grace_s``) ends and
counts as no progress, though what arrived is kept: a server dripping bytes cannot hold the
mainframe in one download for ever. A few blobs download at once (``streams``);
``received`` hears of every chunk kept, as it arrives.

Errors::

    RemoteError             (ashat.errors)
    └── DownloadError       a blob that could not be fetched, or fetched wrong twice
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ashat.agent.blobs import BlobStore, BlobWriter
from ashat.bundle.errors import DigestMismatch
from ashat.errors import RemoteError
from ashat.faults import crash_point
from ashat.fleet.packs import Piece, runs
from ashat.transport import outgoing
from ashat.transport.redirects import RedirectRefused

log = logging.getLogger("ashat.fleet")

CHUNK = 256 * 1024  # bytes per read, from the network and from a finished partial file
STREAMS = 4  # blobs downloaded at once
COMMIT_BYTES = 32 << 20  # blobs of a pack are stored (durably) each time this much arrived
ATTEMPTS = 5  # tries in a row that make no progress before a blob fails
BACKOFF_S = 0.5  # first pause between tries; doubles, with jitter, up to BACKOFF_CAP_S
BACKOFF_CAP_S = 10.0
PARTIAL_MAX_AGE_S = 24 * 3600.0  # a partial file of a blob not wanted, untouched this long, goes
MAX_ERROR_BYTES = 4096  # bytes of an error answer read for its message
# Slow retrieval: a try may last TRY_GRACE_S plus its bytes at MIN_RATE_BPS (bytes/s), then
# it ends, keeping what arrived; tries that end so count as making no progress, so a server
# dripping bytes cannot hold the mainframe in one download for ever.
MIN_RATE_BPS = 16 * 1024
# A pack OMEGA is still building: its blobs one by one meanwhile, and the pack asked for again
# after its Retry-After (doubling each time it is still being built, within these bounds).
PACK_AGAIN_MIN_S = 0.5
PACK_AGAIN_MAX_S = 30.0
# Sent with a blob request after a mirror failed us for that blob: OMEGA then sends it itself.
DIRECT_HEADER = "X-Ashat-Direct"
TRY_GRACE_S = 30.0


class DownloadError(RemoteError):
    """A blob that could not be fetched (the last error says why).

    ``final`` is False when OMEGA stayed unreachable (or kept failing with 5xx): trying
    again later may well work, and resumes; True when it refused (4xx), sent the wrong
    bytes twice, or the blob cannot be stored here.
    """

    kind = "download"

    def __init__(self, message: str, *, sha256: str, final: bool = True) -> None:
        super().__init__(message, sha256=sha256, final=final)
        self.sha256 = sha256
        self.final = final


class NoTicket(httpx.TransportError):
    """No blob ticket to send through the site cache, or one held from before was refused
    there: worth another try (the next asks OMEGA for a new one), like a connection that
    broke, not a refusal of the download."""


class _Retry(Exception):
    """A try that failed in a way worth another (carries the message for the log);
    ``ticket``: for want of a blob ticket the site cache would take."""

    def __init__(self, message: str, *, ticket: bool = False) -> None:
        super().__init__(message)
        self.ticket = ticket


class _NoPack(Exception):
    """The pack is not to be had, or gave a wrong blob: its blobs come one by one. With
    ``again_s``, OMEGA is building it and said when to ask again (``Retry-After``).
    ``lasting``: not asked for again by this downloader (False where the tries failed for
    want of a blob ticket: the next install asks again)."""

    def __init__(self, message: str, again_s: float | None = None, *, lasting: bool = True) -> None:
        super().__init__(message)
        self.again_s = again_s
        self.lasting = lasting


def _retry_after(response: httpx.Response) -> float | None:
    """OMEGA's ``Retry-After`` on a pack it is still building (delay-seconds), bounded."""
    value = response.headers.get("retry-after", "")
    if response.history or not (value.isascii() and value.isdigit() and len(value) < 6):
        return None  # none, or a mirror's: only OMEGA builds packs
    return min(max(float(value), PACK_AGAIN_MIN_S), PACK_AGAIN_MAX_S)


@dataclass(frozen=True)
class Pack:
    """A release's pack (:mod:`.packs`): its route on OMEGA and where each blob is in it."""

    path: str  # /v1/packs/{update_id}/{manifest digest}
    pieces: Sequence[Piece]


@dataclass
class _Progress:
    """How far a run of a pack has come: its first piece not yet checked, the writer of
    that piece once some of it arrived, bytes kept, bytes checked and not stored yet."""

    index: int = 0
    writer: BlobWriter | None = None
    kept: int = 0
    unstored: list[tuple[Wanted, BlobWriter]] = field(default_factory=list)
    unstored_bytes: int = 0  # theirs, added up as they come (not summed again each time)


@dataclass(frozen=True)
class Wanted:
    sha256: str
    size: int  # bytes, as the (verified) manifest says


def _content_range_start(value: str | None) -> int | None:
    """N of ``bytes N-M/T``, or None if absent or malformed."""
    if not value or not value.startswith("bytes "):
        return None
    first = value[len("bytes ") :].split("-", 1)[0]
    if len(first) > 20 or not (first.isascii() and first.isdigit()):  # not "²", nor a number
        return None  # int() refuses past 4,300 digits: no pack or blob is that large
    return int(first)


class BlobDownloader:
    """Downloads blobs with ``client`` (its base URL is OMEGA's, its headers authenticate).

    ``client`` belongs to the caller, who closes it; nothing here outlives a call.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        store: BlobStore,
        partial_dir: Path,
        *,
        streams: int = STREAMS,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        received: Callable[[int], object] | None = None,
        min_rate_bps: float = MIN_RATE_BPS,
        grace_s: float = TRY_GRACE_S,
        commit_bytes: int = COMMIT_BYTES,
    ) -> None:
        self.client = client
        self.store = store
        self.partial_dir = partial_dir
        self.streams = streams
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.received = received  # told the size of each chunk written to a partial file
        self.min_rate_bps = min_rate_bps
        self.grace_s = grace_s
        self.commit_bytes = commit_bytes
        # blobs a mirror OMEGA sent us to refused, or gave wrong: asked of OMEGA itself now
        self._direct: set[str] = set()
        self._no_pack: set[str] = set()  # packs not to be had: their blobs one by one
        self._storing = threading.Lock()  # one commit to the store at a time

    def partial(self, sha256: str) -> Path:
        return self.partial_dir / sha256

    async def fetch_all(self, wanted: Sequence[Wanted], pack: Pack | None = None) -> None:
        """Fetch every blob of ``wanted`` into the store, then make them durable together
        (one ``syncfs`` for many: :func:`~ashat.agent.blobs.fsync_paths`). With ``pack``,
        each run of consecutive wanted blobs in it (:func:`~.packs.runs`) comes in one
        ranged request; the others, or all if OMEGA has no pack, ``streams`` at a time. A
        pack OMEGA is still building is asked for again after its ``Retry-After`` while
        the blobs come one by one, and once OMEGA has it, it brings the blobs not taken yet.

        The first failure cancels the others (their partial files stay, to resume); the
        blobs fetched and checked before it are stored all the same.
        Raises :class:`DownloadError`.
        """
        for w in wanted:
            if w.size > self.store.max_blob_bytes:
                raise DownloadError(
                    f"blob {w.sha256} is {w.size} bytes, over the limit of "
                    f"{self.store.max_blob_bytes} (--max-blob-bytes)",
                    sha256=w.sha256,
                )
        if not wanted:
            return
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_partials({w.sha256 for w in wanted})
        checked: list[tuple[Wanted, BlobWriter]] = []  # fetched, digest right, not stored yet
        todo = list(wanted)
        try:
            while todo:
                again_s = None
                if pack is not None and pack.path not in self._no_pack:
                    again_s = await self._from_pack(pack, {w.sha256 for w in todo}, checked)
                    done = {w.sha256 for w, _ in checked}
                    todo = [w for w in todo if w.sha256 not in done]
                if todo:
                    built = None if again_s is None or pack is None else (pack, again_s)
                    todo = await self._one_by_one(todo, checked, built)
        except* DownloadError as eg:
            await asyncio.to_thread(self._store, checked)
            first = eg.exceptions[0]
            assert isinstance(first, DownloadError)
            raise first from None
        await asyncio.to_thread(self._store, checked)

    async def _one_by_one(
        self,
        todo: Sequence[Wanted],
        checked: list[tuple[Wanted, BlobWriter]],
        built: tuple[Pack, float] | None,
    ) -> list[Wanted]:
        """Fetch ``todo`` blob by blob, ``streams`` at a time, in order. With ``built``
        (a pack OMEGA is building, and when to ask again), ask until it has it, then take
        no more: the blobs not taken are returned, for the pack."""
        queue = collections.deque(todo)
        ready = asyncio.Event()

        async def take() -> None:
            while queue and not ready.is_set():
                w = queue.popleft()
                writer = await self.fetch(w)
                if writer is not None:
                    checked.append((w, writer))

        async def watch(pack: Pack, again_s: float) -> None:
            while True:
                await asyncio.sleep(again_s)
                said = await self._pack_state(pack)
                if said is not None:  # still being built: wait longer each time
                    again_s = min(max(said, 2 * again_s), PACK_AGAIN_MAX_S)
                    continue
                if pack.path not in self._no_pack:
                    ready.set()
                return

        async with asyncio.TaskGroup() as group:
            takers = [group.create_task(take()) for _ in range(min(self.streams, len(queue)))]
            watcher = group.create_task(watch(*built)) if built is not None else None
            await asyncio.wait(takers)
            if watcher is not None:
                watcher.cancel()
        return list(queue)

    async def _pack_state(self, pack: Pack) -> float | None:
        """Ask for the pack's first byte: None once it is to be had (or, added to
        ``_no_pack``, never will be); else the seconds OMEGA says to wait for it (0 where
        no blob ticket was to be had for the site cache: asked again, later each time)."""
        try:
            async with (
                asyncio.timeout(self.grace_s),
                self.client.stream(
                    "GET", pack.path, headers={"Range": "bytes=0-0"}, follow_redirects=True
                ) as response,
            ):
                if response.status_code in (200, 206):  # not read: the runs come next
                    return None
                again_s = _retry_after(response) if response.status_code == 404 else None
        except NoTicket as e:  # the site cache's credential, not the pack: ask again later
            log.info("asking for the pack %s: %s", pack.path, e)
            return 0.0
        except (httpx.HTTPError, TimeoutError) as e:
            log.info("asking for the pack %s: %s; its blobs one by one", pack.path, e)
            again_s = None
        if again_s is None:
            self._no_pack.add(pack.path)
        return again_s

    async def fetch(self, w: Wanted) -> BlobWriter | None:
        """Fetch one blob and check its digest; return its writer for :meth:`_store` (None
        if the store has it already). Raises :class:`DownloadError`."""
        if await asyncio.to_thread(self.store.size, w.sha256) is not None:
            return None
        try:
            for last in (False, True):
                await self._download(w)
                try:
                    return await asyncio.to_thread(self._check, w)
                except DigestMismatch as e:
                    self.partial(w.sha256).unlink(missing_ok=True)
                    self._direct.add(w.sha256)  # perhaps a mirror's copy: ask OMEGA's
                    if last:  # reported to OMEGA: not what the bytes hashed to (a review: bytes
                        # a redirect fetched from an internal address, hashed, were an oracle)
                        raise DownloadError(
                            f"blob {w.sha256} fetched twice, wrong both times: digest mismatch",
                            sha256=w.sha256,
                        ) from e
                    log.warning("%s; fetching it again from the start", e.message)
        except OSError as e:
            raise DownloadError(
                f"cannot store blob {w.sha256}: {e.strerror or e}", sha256=w.sha256
            ) from e
        raise AssertionError("unreachable: the second try returns or raises")

    async def _from_pack(
        self, pack: Pack, wanted: set[str], checked: list[tuple[Wanted, BlobWriter]]
    ) -> float | None:
        """Fetch the runs of ``wanted`` in ``pack`` into ``checked``; on a pack OMEGA does
        not serve, or a wrong blob in it, stop: the caller fetches the rest one by one.
        Returns the seconds after which to ask again for a pack OMEGA is still building."""
        for run in runs(pack.pieces, wanted):
            try:
                await self._run(pack, run, checked)
            except _NoPack as e:
                if e.again_s is not None:
                    log.info("%s; the blobs one by one until it is built", e)
                    return e.again_s
                if e.lasting:
                    self._no_pack.add(pack.path)
                log.info("%s; fetching the blobs one by one", e)
                return None
        return None

    async def _run(
        self, pack: Pack, run: Sequence[Piece], checked: list[tuple[Wanted, BlobWriter]]
    ) -> None:
        """Fetch one run of a pack with ranged requests, each try resuming inside the blob
        the last one cut (its writer is kept). The blobs are hashed as they arrive, written
        once (a :class:`~ashat.agent.blobs.BlobWriter` each) and stored every
        ``commit_bytes``: a crash loses at most that much."""
        progress = _Progress()
        idle = 0  # tries in a row that kept no byte
        size = run[-1].offset + run[-1].size - run[0].offset
        deadline = time.monotonic() + self._budget_s(size)
        try:
            while progress.index < len(run):
                p = run[progress.index]
                have = progress.writer.size if progress.writer is not None else 0
                start, end = p.offset + have, run[-1].offset + run[-1].size
                before = progress.kept
                ticket = False
                try:
                    await self._try_run(pack, run, progress, start, end, checked)
                    reason = "the transfer ended early"
                except _Retry as e:
                    reason, ticket = str(e), e.ticket
                if progress.index == len(run):
                    return
                idle = 0 if progress.kept > before else idle + 1
                if idle >= self.attempts:  # the blobs alone may do better, or fail as they do
                    raise _NoPack(
                        f"the pack {pack.path}: {idle} tries in vain ({reason})",
                        lasting=not ticket,
                    )
                if time.monotonic() > deadline:  # bytes a few at a time, for ever: no more
                    raise _NoPack(f"the pack {pack.path}: {self._too_slow(size)} ({reason})")
                pause = min(BACKOFF_CAP_S, self.backoff_s * 2 ** max(idle - 1, 0))
                log.info("pack %s: %s; resuming in %.1fs", pack.path, reason, pause)
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
        finally:
            if progress.writer is not None:
                progress.writer.abort()  # a blob half-fetched: its bytes come again

    async def _try_run(
        self,
        pack: Pack,
        run: Sequence[Piece],
        progress: _Progress,
        start: int,
        end: int,
        checked: list[tuple[Wanted, BlobWriter]],
    ) -> None:
        """One ranged request for bytes ``start`` to ``end`` (exclusive) of the pack, each
        piece written and checked as it arrives (into ``checked``).

        Raises :class:`_Retry`, :class:`_NoPack` or :class:`DownloadError` (final).
        """
        limit_s = self.grace_s + (end - start) / self.min_rate_bps
        kept = progress.kept
        try:
            async with (
                asyncio.timeout(limit_s),
                self.client.stream(  # OMEGA may send us to a signed URL on a mirror
                    "GET",
                    pack.path,
                    headers={"Range": f"bytes={start}-{end - 1}"},
                    follow_redirects=True,
                ) as response,
            ):
                status = response.status_code
                if status == 206:
                    pos = _content_range_start(response.headers.get("content-range"))
                    if pos is None or pos > start:
                        raise _NoPack(f"the pack's answer is not the range asked ({status})")
                elif status == 200 and start == 0:
                    pos = 0  # the whole pack, the run at its start: the rest is not read
                elif status == 404 and (again_s := _retry_after(response)) is not None:
                    raise _NoPack(f"OMEGA is building the pack {pack.path}", again_s)
                elif status < 500:
                    # Any other answer, a refusal included (an OMEGA older than packs
                    # answers 401 before routing; a mirror without the pack, 404): the
                    # blobs alone say whether it is final (a mirror's: from the mirror).
                    raise _NoPack(f"no pack from {_who(response)} ({status})")
                else:
                    sha256 = run[progress.index].sha256
                    raise await self._refusal(response, sha256, f"the pack {pack.path}")
                await self._save_run(response, run, progress, pos, checked)
        except TimeoutError as e:
            raise _Retry(
                f"too slow: not done in {limit_s:.0f}s (under {self.min_rate_bps:g} bytes/s)"
            ) from e
        except RedirectRefused as e:  # a host no --blob-host lists: the blobs from OMEGA
            raise _NoPack(f"OMEGA sent the pack {pack.path} elsewhere: {e}") from e
        except (httpx.TransportError, httpx.TimeoutException) as e:
            if progress.kept > kept:  # what arrived is kept: the next try resumes after it
                return
            raise _Retry(self._failure(e, pack.path), ticket=isinstance(e, NoTicket)) from e
        except httpx.HTTPError as e:
            raise _Retry(self._failure(e, pack.path)) from e
        except OSError as e:  # the store: a disk full, say
            sha256 = run[min(progress.index, len(run) - 1)].sha256
            raise DownloadError(
                f"cannot store blob {sha256}: {e.strerror or e}", sha256=sha256
            ) from e

    async def _save_run(
        self,
        response: httpx.Response,
        run: Sequence[Piece],
        progress: _Progress,
        pos: int,
        checked: list[tuple[Wanted, BlobWriter]],
    ) -> None:
        """Write the answer, which starts at byte ``pos`` of the pack, into the run's
        blobs from piece ``progress.index`` on, checking each as it ends."""
        async for chunk in response.aiter_bytes():  # as it arrives: a drop loses none
            crash_point("mainframe.download")
            view = memoryview(chunk)
            while view and progress.index < len(run):
                p = run[progress.index]
                w = progress.writer
                at = p.offset + (w.size if w is not None else 0)  # the next byte it needs
                if pos < at:  # bytes it has (a 200 sends the pack from its start): skipped
                    skip = min(len(view), at - pos)
                    view, pos = view[skip:], pos + skip
                    continue
                if w is None:
                    w = progress.writer = self.store.writer(p.sha256)
                n = min(len(view), p.offset + p.size - pos)
                w.write(view[:n])  # type: ignore[arg-type]  # a memoryview is bytes-like
                view, pos = view[n:], pos + n
                progress.kept += n
                if self.received is not None:
                    self.received(n)
                if pos == p.offset + p.size:
                    progress.writer = None
                    await self._finished(p, w, progress, checked)
            if progress.index == len(run):
                break  # the rest, if any, is not the run's

    async def _finished(
        self,
        p: Piece,
        w: BlobWriter,
        progress: _Progress,
        checked: list[tuple[Wanted, BlobWriter]],
    ) -> None:
        """A piece is whole: check its digest, and store the blobs finished since the last
        store once they come to ``commit_bytes``."""
        try:
            w.finish()
        except DigestMismatch as e:  # the writer removed its file
            raise _NoPack(f"the pack gave blob {p.sha256} wrong: {e.message}") from e
        checked.append((Wanted(p.sha256, p.size), w))
        progress.index += 1
        progress.unstored.append(checked[-1])
        progress.unstored_bytes += p.size
        if progress.unstored_bytes >= self.commit_bytes:
            batch, progress.unstored, progress.unstored_bytes = progress.unstored, [], 0
            await asyncio.to_thread(self._store, batch)  # if a timeout cancels the wait,
            # the commit goes on in its thread: the next one waits for it (_storing)

    def _check(self, w: Wanted) -> BlobWriter:
        """Hash a complete partial file as the blob's temp file (it is not written again,
        unless the store is on another filesystem); raises DigestMismatch."""
        path = str(self.partial(w.sha256))
        writer = self.store.writer(w.sha256)
        try:
            if not writer.take(path):
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        writer.write(chunk)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        return writer

    def _store(self, checked: Sequence[tuple[Wanted, BlobWriter]]) -> None:
        """Make the checked blobs durable and rename them into the store, together (after
        any store still running: one a timeout stopped waiting for)."""
        if not checked:
            return
        with self._storing:
            self._store_now(checked)

    def _store_now(self, checked: Sequence[tuple[Wanted, BlobWriter]]) -> None:
        try:
            self.store.commit([writer for _, writer in checked])
        except OSError as e:  # they stay as partial files: the next try resumes from them
            for w, writer in checked:
                if writer.pending and writer.temp_path != str(self.partial(w.sha256)):
                    writer.abort()  # a copy in the store's temp directory: not kept
            w = checked[0][0]
            raise DownloadError(
                f"cannot store blob {w.sha256}: {e.strerror or e}", sha256=w.sha256
            ) from e
        leftover = set(os.listdir(self.partial_dir))  # copied (another filesystem), or
        for w, _ in checked:  # a blob fetched alone once, then from a pack
            if w.sha256 in leftover:
                self.partial(w.sha256).unlink(missing_ok=True)

    async def _download(self, w: Wanted) -> None:
        """Make the partial file hold ``w.size`` bytes, resuming what is there."""
        path = self.partial(w.sha256)
        idle = 0  # tries in a row that kept no byte
        deadline = time.monotonic() + self._budget_s(w.size)
        while True:
            have = self._size(path)
            if have > w.size:  # cannot be right: start over
                path.unlink()
                have = 0
            if have == w.size:
                path.touch()  # an empty blob needs no request, but a file
                return
            direct = w.sha256 in self._direct
            try:
                got = await self._try(w, path, have)
                reason = "the transfer ended early"
            except _Retry as e:
                got, reason = 0, str(e)
            if self._size(path) == w.size:
                return
            idle = 0 if got else idle + 1
            if idle >= self.attempts:
                raise DownloadError(
                    f"cannot fetch blob {w.sha256} from OMEGA after {idle} tries: {reason}",
                    sha256=w.sha256,
                    final=False,
                )
            if time.monotonic() > deadline:  # each try kept a byte or two, and hung up
                raise DownloadError(
                    f"cannot fetch blob {w.sha256}: {self._too_slow(w.size)} ({reason})",
                    sha256=w.sha256,
                    final=False,
                )
            if w.sha256 in self._direct and not direct:
                log.info("blob %s: %s; asking OMEGA for it at once", w.sha256[:16], reason)
                continue  # a mirror failed it: OMEGA itself is asked next, without a pause
            pause = min(BACKOFF_CAP_S, self.backoff_s * 2 ** max(idle - 1, 0))
            log.info("blob %s: %s; resuming in %.1fs", w.sha256[:16], reason, pause)
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))

    def _sweep_partials(self, wanted: set[str]) -> None:
        """Remove partial files of blobs not wanted now and untouched for
        :data:`PARTIAL_MAX_AGE_S`: a release that never installed (a directive withdrawn, a
        rollout superseded) left them, and nothing else would (a review found them kept for
        good). One wanted again later is fetched again from its start."""
        cutoff = time.time() - PARTIAL_MAX_AGE_S
        for name in os.listdir(self.partial_dir):
            if name in wanted:
                continue
            path = self.partial_dir / name
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

    def _budget_s(self, size: int) -> float:
        """How long one blob or pack run may take over all its tries: each try's grace, and
        its bytes at the minimum rate. A server that keeps each try alive with a byte or
        two (progress, so never "in vain") cannot hold the mainframe from polling for ever:
        past this, the download fails and the mainframe polls again."""
        return self.grace_s * self.attempts + size / self.min_rate_bps

    def _too_slow(self, size: int) -> str:
        return (
            f"not done in {self._budget_s(size):.0f}s over every try "
            f"(under {self.min_rate_bps:g} bytes/s with {self.grace_s:g}s of grace each)"
        )

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    async def _try(self, w: Wanted, partial: Path, have: int) -> int:
        """One request; append what arrives to ``partial``; return how many bytes were kept.

        Raises :class:`_Retry` (worth another try) or :class:`DownloadError` (final).
        """
        headers = {"Range": f"bytes={have}-"} if have else {}
        if w.sha256 in self._direct:
            headers[DIRECT_HEADER] = "1"
        limit_s = self.grace_s + (w.size - have) / self.min_rate_bps
        path = f"/v1/blobs/{w.sha256}"
        mirror: httpx.Response | None = None  # the answer, if a redirect sent us elsewhere
        try:
            async with (
                asyncio.timeout(limit_s),
                self.client.stream(  # OMEGA may send us to a signed URL on a mirror
                    "GET", path, headers=headers, follow_redirects=True
                ) as response,
            ):
                mirror = response if response.history else None
                status = response.status_code
                if (
                    status == 206
                    and _content_range_start(response.headers.get("content-range")) == have
                ):
                    mode = "ab"
                elif status == 200:
                    mode, have = "wb", 0  # the range was ignored: the whole blob comes
                elif status in (206, 416):
                    partial.unlink(missing_ok=True)  # a range the server did not take: restart
                    raise _Retry(f"OMEGA did not honour Range: bytes={have}- ({status})")
                else:
                    raise await self._refusal(response, w.sha256, f"blob {w.sha256}")
                return await self._save(response, partial, mode, w.size - have, w.sha256, mirror)
        except TimeoutError as e:  # what arrived is on disk: the next try resumes after it
            who = "OMEGA" if mirror is None else self._left_mirror(w.sha256, mirror.url)
            raise _Retry(
                f"{who} too slow: not done in {limit_s:.0f}s (under {self.min_rate_bps:g} bytes/s)"
            ) from e
        except RedirectRefused as e:  # a host no --blob-host lists: OMEGA's own copy next
            self._direct.add(w.sha256)
            raise _Retry(f"OMEGA sent blob {w.sha256} elsewhere: {e}") from e
        except httpx.HTTPError as e:
            raise _Retry(self._failure(e, path, w.sha256)) from e

    def _failure(self, e: httpx.HTTPError, path: str, sha256: str | None = None) -> str:
        """What failed asking for OMEGA's ``path``, naming the mirror if it was there (and
        noting that it failed ``sha256``: down, or dropping connections)."""
        url = _failed_url(e)
        if url is not None and not self._ours(url, path):  # a mirror a redirect sent us to
            who = f"the mirror OMEGA sent us to ({url.host})"
            if sha256 is not None:
                who = self._left_mirror(sha256, url)
            return outgoing.failure(e, who).message
        return outgoing.failure(e, path, "OMEGA").message

    def _ours(self, url: httpx.URL, path: str) -> bool:
        """Whether ``url`` is OMEGA's ``path`` (not a mirror a redirect sent us to)."""
        base = self.client.base_url
        return (url.scheme, url.host, url.port, url.path) == (
            base.scheme, base.host, base.port, base.path.rstrip("/") + path,
        )  # fmt: skip

    def _left_mirror(self, sha256: str, url: httpx.URL) -> str:
        """Note that the mirror at ``url`` failed ``sha256`` (its next tries ask OMEGA for
        it: a mirror down, slow or dropping connections must not stall a fleet), and name
        the mirror for the message."""
        self._direct.add(sha256)
        return f"the mirror OMEGA sent us to ({url.host})"

    async def _refusal(self, response: httpx.Response, sha256: str, what: str) -> Exception:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BYTES:
                break
        text = body[:MAX_ERROR_BYTES].decode("utf-8", "replace").strip().splitlines()
        # OMEGA's own words only: what another host a redirect sent us to says is neither
        # logged nor reported (a review: an internal page's first line reached OMEGA)
        detail = text[0][:200] if text and not response.history else ""
        message = f"{_who(response)} answered {response.status_code} for {what}: {detail}"
        if response.history:
            # a mirror's or CDN's refusal or failure (an expired URL, a copy behind or gone,
            # a rate limit, a 503) is not OMEGA's: the next try asks OMEGA for the blob
            self._direct.add(sha256)
            return _Retry(message)
        if response.status_code >= 500:
            return _Retry(message)
        return DownloadError(message, sha256=sha256)

    async def _save(
        self,
        response: httpx.Response,
        path: Path,
        mode: str,
        room: int,
        sha256: str,
        mirror: httpx.Response | None,
    ) -> int:
        """Append the body to ``path``, at most ``room`` bytes (more is not the blob);
        ``mirror``: the answer came from a mirror (a redirect sent us there)."""
        kept = 0
        fd = os.open(
            path,
            os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC),
            0o600,
        )
        try:
            async for chunk in response.aiter_bytes():  # as it arrives: a drop loses none
                part = chunk[: room - kept]
                crash_point("mainframe.download")
                _write_all(fd, memoryview(part))
                kept += len(part)
                if self.received is not None:
                    self.received(len(part))
                if len(part) < len(chunk):
                    # More than the blob: stop. Stopping at exactly its size instead would
                    # leave the response unread to its end, and the connection unreusable.
                    break
        except (httpx.TransportError, httpx.TimeoutException) as e:
            if kept:  # what arrived is kept: the next try resumes after it
                return kept
            who = "OMEGA's blob answer"
            if mirror is not None:
                who = self._left_mirror(sha256, mirror.url)
            raise _Retry(outgoing.failure(e, who).message) from e
        finally:
            os.close(fd)
        return kept


def _failed_url(e: httpx.HTTPError) -> httpx.URL | None:
    """The URL of the request that failed (None if httpx did not say)."""
    try:
        return e.request.url
    except RuntimeError:  # an error raised without its request
        return None


def _who(response: httpx.Response) -> str:
    """Who answered: OMEGA, the web server before it (``--blob-offload nginx``, a site
    cache: an answer that is not OMEGA's JSON), or the mirror its redirect sent us to."""
    if response.history:
        return f"the mirror OMEGA sent us to ({response.url.host})"
    if "json" not in response.headers.get("content-type", ""):
        server = response.headers.get("server", "").split("/", 1)[0] or "a web server"
        return f"{server} before OMEGA (check that it can read OMEGA's blob directory)"
    return "OMEGA"


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
