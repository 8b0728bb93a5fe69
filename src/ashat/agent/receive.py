"""Reading request bodies: JSON bodies under a size limit, single blobs, and blob packs.

A pack (``POST /v1/blobs/pack``, written by ``ashat.transport.client._pack_stream``) is::

    <sha256 hex> <size decimal>\\n<exactly size bytes>   repeated until the end of the body

It is parsed incrementally from the request stream — never held in memory — and each blob
is written to its own temporary file while it is hashed. Only when the whole pack has
arrived and every blob matched its digest are they renamed into the store; any error
(a bad header, a mismatch, a blob over the limit, a truncated body, a client that went
away, a full disk: :class:`~.errors.StorageFailed`) removes every temporary file, so a
refused pack stores nothing.

Hashing and writing run in worker threads, so the event loop only moves bytes between the
socket and those threads: a large blob a MiB at a time, small ones (most of a source tree)
read whole and handed over in batches of a few MiB, one thread hop per batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from anyio import to_thread

from ashat.agent.blobs import SHA256_RE, BlobStore, BlobWriter
from ashat.agent.errors import PayloadTooLarge, RequestInvalid, StorageFailed
from ashat.faults import crash_point
from ashat.http.body import DECIMAL_RE

WRITE_BATCH = 1024 * 1024  # bytes of a large blob handed to a worker thread at a time
SMALL_BLOB = 256 * 1024  # bytes: a blob up to this size is read whole and batched
SMALL_BATCH = 4 * 1024 * 1024  # bytes of small blobs written per worker-thread call
MAX_HEADER_BYTES = 64 + 1 + 20  # "<sha256> <size>" without the newline
MAX_PACK_BLOBS = 1_000_000  # entries in one pack


class _Sink:
    """Feeds a :class:`BlobWriter` from the event loop, a batch at a time, in a thread."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.buf = bytearray()

    async def add(self, data: bytes) -> None:
        limit = self.writer.store.max_blob_bytes
        if self.writer.size + len(self.buf) + len(data) > limit:
            raise PayloadTooLarge(
                f"blob {self.writer.expected} is larger than the limit of {limit} bytes",
                limit=limit,
            )
        self.buf += data
        if len(self.buf) >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            await to_thread.run_sync(self.writer.write, data)

    async def finish(self) -> None:
        await self._flush()
        await to_thread.run_sync(self.writer.finish)


async def receive_blob(
    chunks: AsyncIterator[bytes], store: BlobStore, sha256: str
) -> tuple[int, bool]:
    """Store one streamed blob; return ``(size, newly_stored)``."""
    writer = store.writer(sha256)
    try:
        sink = _Sink(writer)
        async for chunk in chunks:
            if chunk:
                await sink.add(chunk)
        await sink.finish()
        new = await to_thread.run_sync(store.commit, [writer])
    except OSError as e:  # the disk, not the request: full, read-only, out of inodes
        raise StorageFailed(f"blob {sha256}", e) from e
    finally:
        writer.abort()  # a no-op once committed
    return writer.size, new == 1


class _Truncated(Exception):
    def __init__(self, got: int) -> None:
        self.got = got


class _Reader:
    """Lines and exact byte counts out of a stream of chunks of any size."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()

    async def _next(self) -> bytes | None:
        while (chunk := await anext(self._chunks, None)) is not None:
            if chunk:
                return chunk
        return None

    async def readline(self, limit: int) -> bytes | None:
        """One line without its newline; ``None`` at the end of the stream."""
        while True:
            i = self._buf.find(b"\n", 0, limit + 1)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                return line
            if len(self._buf) > limit:
                raise RequestInvalid(f"pack header line is longer than {limit} bytes")
            chunk = await self._next()
            if chunk is None:
                if self._buf:
                    raise RequestInvalid("pack ends inside a header line")
                return None
            self._buf += chunk

    async def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises :class:`_Truncated` if the stream ends first."""
        while len(self._buf) < n:
            chunk = await self._next()
            if chunk is None:
                raise _Truncated(len(self._buf))
            self._buf += chunk
        with memoryview(self._buf) as view:  # one copy (a slice of the buffer was two)
            data = bytes(view[:n])
        del self._buf[:n]
        return data

    async def pieces(self, n: int) -> AsyncIterator[bytes]:
        """Exactly ``n`` bytes, in pieces; raises :class:`_Truncated` if the stream ends."""
        remaining = n
        while remaining:
            if self._buf:
                take = min(remaining, len(self._buf))
                piece = bytes(self._buf[:take])
                del self._buf[:take]
            else:
                chunk = await self._next()
                if chunk is None:
                    raise _Truncated(n - remaining)
                if len(chunk) > remaining:
                    self._buf += chunk[remaining:]
                    chunk = chunk[:remaining]
                piece = chunk
            remaining -= len(piece)
            yield piece


def parse_pack_header(line: bytes, index: int) -> tuple[str, int]:
    """``(sha256, size)`` from one header line (without its newline)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    sha, sep, size = text.partition(" ")
    if not sep or not SHA256_RE.fullmatch(sha) or not DECIMAL_RE.fullmatch(size):
        raise RequestInvalid(
            f"pack entry {index}: bad header line {line[:100]!r}; "
            "expected '<sha256> <size>' and a newline"
        )
    return sha, int(size)


@dataclass(frozen=True)
class PackResult:
    blobs: int  # entries in the pack
    stored: int  # of those, blobs that were not in the store before
    bytes: int  # payload bytes received


def _write_small(batch: list[tuple[BlobWriter, bytes]]) -> None:
    for writer, data in batch:
        writer.write(data)
        writer.finish()


async def receive_pack(chunks: AsyncIterator[bytes], store: BlobStore) -> PackResult:
    """Read a whole pack, then store all its blobs, or none of them (see module docstring)."""
    reader = _Reader(chunks)
    writers: list[BlobWriter] = []
    small: list[tuple[BlobWriter, bytes]] = []
    small_bytes = 0
    pending: set[str] = set()
    total = index = 0
    try:
        while (line := await reader.readline(MAX_HEADER_BYTES)) is not None:
            index += 1
            if index > MAX_PACK_BLOBS:
                raise PayloadTooLarge(f"a pack holds at most {MAX_PACK_BLOBS} blobs")
            sha, size = parse_pack_header(line, index)
            if size > store.max_blob_bytes:
                raise PayloadTooLarge(
                    f"blob {sha} is {size} bytes, over the limit of {store.max_blob_bytes}",
                    limit=store.max_blob_bytes,
                )
            # A blob sent twice in one pack is hashed both times but written once; its
            # writer is not kept (a million copies of one blob cost no memory).
            again = sha in pending
            # Not looked up in the store first: a client sends the blobs it was told are
            # missing, and one stored meanwhile is dropped at the commit (an lstat per blob
            # saved, issue 20). Under a quota (ashat serve's spool) it is: a blob stored
            # already must not count against it, nor be written again to be dropped.
            look = store.budget is not None
            writer = BlobWriter(store, sha, discard=again, look=look)
            if not again:
                writers.append(writer)
            pending.add(sha)
            try:
                if size <= SMALL_BLOB and again:
                    _write_small([(writer, await reader.read_exact(size))])  # hashing only
                elif size <= SMALL_BLOB:
                    small.append((writer, await reader.read_exact(size)))
                    small_bytes += size
                    if small_bytes >= SMALL_BATCH:
                        await to_thread.run_sync(_write_small, small)
                        small, small_bytes = [], 0
                else:
                    sink = _Sink(writer)
                    async for piece in reader.pieces(size):
                        await sink.add(piece)
                    await sink.finish()
            except _Truncated as e:
                raise RequestInvalid(
                    f"pack truncated: blob {sha} declared {size} bytes, got {e.got}"
                ) from None
            total += size
        await to_thread.run_sync(_write_small, small)
        crash_point("pack.received")
        stored = await to_thread.run_sync(store.commit, writers)
    except OSError as e:  # the disk, not the request: full, read-only, out of inodes
        raise StorageFailed(f"a pack of {len(writers)} blobs", e) from e
    finally:
        for w in writers:
            w.abort()  # no-ops for committed writers
    return PackResult(blobs=index, stored=stored, bytes=total)
