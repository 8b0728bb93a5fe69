"""Fetching blobs into a mainframe's store (ashat.fleet.download) from a real HTTP server: a
small static file server with ``Range`` support started here, which can also cut a transfer
short, serve wrong bytes, ignore ranges or fail, to show each path of the resume logic."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ashat.agent.blobs import BlobStore
from ashat.agent.layout import Layout
from ashat.fleet.download import BlobDownloader, DownloadError, Wanted


@dataclass
class Behaviour:
    blobs: dict[str, bytes] = field(default_factory=dict)
    cut_first: dict[str, int] = field(default_factory=dict)  # sha -> bytes sent, then hang up
    corrupt: dict[str, int] = field(default_factory=dict)  # sha -> times to send wrong bytes
    ignore_range: bool = False
    status: int | None = None  # answer every request with this status
    drip_s: float | None = None  # send one byte per this many seconds (slow retrieval)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (sha, Range)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour: Behaviour

    def do_GET(self) -> None:
        b = self.server.behaviour  # type: ignore[attr-defined]
        sha = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        with b.lock:
            b.requests.append((sha, rng))
            b.active += 1
            b.max_active = max(b.max_active, b.active)
        try:
            self._answer(b, sha, rng)
        finally:
            with b.lock:
                b.active -= 1

    def _answer(self, b: Behaviour, sha: str, rng: str | None) -> None:
        if b.status is not None or sha not in b.blobs:
            status = b.status or 404
            body = b'{"error": "no such blob"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = b.blobs[sha]
        with b.lock:
            if b.corrupt.get(sha, 0) > 0:
                b.corrupt[sha] -= 1
                data = bytes(x ^ 0xFF for x in data)
        start = 0
        if rng and not b.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if b.drip_s is not None:
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(b.drip_s)
            except OSError:
                pass  # the client gave up, as it should
            self.close_connection = True
            return
        with b.lock:
            cut = b.cut_first.pop(sha, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    behaviour = Behaviour()
    srv.behaviour = behaviour  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", behaviour
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    return layout


def blob(b: Behaviour, data: bytes) -> Wanted:
    sha = hashlib.sha256(data).hexdigest()
    b.blobs[sha] = data
    return Wanted(sha, len(data))


def fetch(url: str, layout: Layout, wanted: list[Wanted], **kw: object) -> None:
    store = BlobStore(layout.blobs, layout.tmp, 1024**3)

    async def go() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            d = BlobDownloader(client, store, layout.partial, backoff_s=0.01, **kw)  # type: ignore[arg-type]
            await d.fetch_all(wanted)

    asyncio.run(go())


def stored(layout: Layout, w: Wanted) -> bytes | None:
    store = BlobStore(layout.blobs, layout.tmp, 1024**3)
    if store.size(w.sha256) is None:
        return None
    return store.path(w.sha256).read_bytes()


def partials(layout: Layout) -> list[str]:
    return sorted(os.listdir(layout.partial)) if layout.partial.exists() else []


def test_fetches_blobs_a_few_at_a_time(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    wanted = [blob(b, os.urandom(50_000 + i)) for i in range(12)] + [blob(b, b"")]
    fetch(url, layout, wanted, streams=3)
    for w in wanted:
        assert stored(layout, w) == b.blobs[w.sha256]
    assert partials(layout) == []
    assert 1 <= b.max_active <= 3
    assert all(rng is None for _, rng in b.requests)
    assert len(b.requests) == 12  # the empty blob needs no request


def test_resumes_a_partial_file_with_range(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    data = os.urandom(300_000)
    w = blob(b, data)
    layout.partial.mkdir()
    (layout.partial / w.sha256).write_bytes(data[:123_456])  # left by an earlier run
    fetch(url, layout, [w])
    assert b.requests == [(w.sha256, "bytes=123456-")]
    assert stored(layout, w) == data and partials(layout) == []


def test_resumes_after_the_connection_drops(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    data = os.urandom(1_000_000)
    w = blob(b, data)
    b.cut_first[w.sha256] = 400_000
    fetch(url, layout, [w])
    assert [rng for _, rng in b.requests] == [None, "bytes=400000-"]
    assert stored(layout, w) == data


def test_received_hears_each_byte_that_arrives_once(
    server: tuple[str, Behaviour], layout: Layout
) -> None:
    url, b = server
    cut, left = blob(b, os.urandom(500_000)), blob(b, os.urandom(300_000))
    b.cut_first[cut.sha256] = 200_000
    layout.partial.mkdir()
    (layout.partial / left.sha256).write_bytes(b.blobs[left.sha256][:100_000])
    heard: list[int] = []
    fetch(url, layout, [cut, left], received=heard.append)
    # the cut transfer in two parts; of the one an earlier run left, what it lacked
    assert sum(heard) == 500_000 + 200_000 and all(n > 0 for n in heard)


def test_corrupt_partial_is_fetched_again_from_zero(
    server: tuple[str, Behaviour], layout: Layout
) -> None:
    url, b = server
    data = os.urandom(200_000)
    w = blob(b, data)
    layout.partial.mkdir()
    (layout.partial / w.sha256).write_bytes(b"\0" * 1000)  # wrong bytes, right place
    fetch(url, layout, [w])
    assert [rng for _, rng in b.requests] == ["bytes=1000-", None]
    assert stored(layout, w) == data and partials(layout) == []


def test_wrong_bytes_once_are_fetched_again(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    w = blob(b, os.urandom(10_000))
    b.corrupt[w.sha256] = 1
    fetch(url, layout, [w])
    assert len(b.requests) == 2 and stored(layout, w) == b.blobs[w.sha256]


def test_wrong_bytes_twice_fail(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    w = blob(b, os.urandom(10_000))
    b.corrupt[w.sha256] = 2
    with pytest.raises(DownloadError) as info:
        fetch(url, layout, [w])
    assert info.value.final and "wrong both times" in info.value.message
    assert stored(layout, w) is None and partials(layout) == []


def test_a_server_ignoring_range_starts_over(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    b.ignore_range = True
    data = os.urandom(100_000)
    w = blob(b, data)
    layout.partial.mkdir()
    (layout.partial / w.sha256).write_bytes(data[:5000])
    fetch(url, layout, [w])
    assert stored(layout, w) == data


def test_a_finished_download_enters_the_store_as_it_is_not_written_twice(
    server: tuple[str, Behaviour], layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: each blob was written twice on a mainframe (the partial file, then a copy
    into the store) and made durable alone. Now the partial file itself enters the store
    (its inode, hashed as it is read) and a fetch's blobs are made durable together."""
    from ashat.agent import blobs as blobs_module

    url, b = server
    wanted = [blob(b, os.urandom(3000 + i)) for i in range(blobs_module.SYNCFS_MIN)]
    inodes: dict[str, int] = {}
    real_take = blobs_module.BlobWriter.take

    def take(self: blobs_module.BlobWriter, path: str) -> bool:
        inodes[self.expected] = os.stat(path).st_ino
        return real_take(self, path)

    synced: list[int] = []
    monkeypatch.setattr(blobs_module.BlobWriter, "take", take)
    monkeypatch.setattr(blobs_module, "_syncfs", lambda fd: synced.append(fd) or 0)
    fetch(url, layout, wanted)
    store = BlobStore(layout.blobs, layout.tmp, 1024**3)
    for w in wanted:
        assert stored(layout, w) == b.blobs[w.sha256]
        assert store.path(w.sha256).stat().st_ino == inodes[w.sha256]
    assert partials(layout) == [] and len(synced) == 1


def test_a_partial_file_with_another_name_is_copied_not_taken(
    server: tuple[str, Behaviour], layout: Layout, tmp_path: Path
) -> None:
    """A finished download is taken into the store only if nothing else can write it: a
    second hard link to it (another name it could be changed through) means a copy."""
    url, b = server
    data = os.urandom(4000)
    w = blob(b, data)
    layout.partial.mkdir()
    partial = layout.partial / w.sha256
    partial.write_bytes(data)
    os.link(partial, layout.tmp / "another-name")
    fetch(url, layout, [w])
    assert stored(layout, w) == data
    store = BlobStore(layout.blobs, layout.tmp, 1024**3)
    assert store.path(w.sha256).stat().st_ino != (layout.tmp / "another-name").stat().st_ino


def test_blobs_fetched_before_another_fails_are_stored(
    server: tuple[str, Behaviour], layout: Layout
) -> None:
    url, b = server
    good = blob(b, os.urandom(2000))
    with pytest.raises(DownloadError):
        fetch(url, layout, [good, Wanted("ab" * 32, 10)], streams=1)
    assert stored(layout, good) == b.blobs[good.sha256]


def test_missing_blob_fails_at_once(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, _ = server
    w = Wanted("ab" * 32, 10)
    with pytest.raises(DownloadError) as info:
        fetch(url, layout, [w])
    assert info.value.final and "404" in info.value.message


def test_a_failing_server_is_not_final(server: tuple[str, Behaviour], layout: Layout) -> None:
    url, b = server
    w = blob(b, os.urandom(1000))
    b.status = 503
    with pytest.raises(DownloadError) as info:
        fetch(url, layout, [w], attempts=3)
    assert not info.value.final and len(b.requests) == 3


def test_unreachable_server_is_not_final(layout: Layout) -> None:
    w = Wanted("cd" * 32, 10)
    with pytest.raises(DownloadError) as info:
        fetch("http://127.0.0.1:9", layout, [w], attempts=2)
    assert not info.value.final and "cannot reach OMEGA" in info.value.message


def test_blob_over_the_limit_is_refused(layout: Layout) -> None:
    store = BlobStore(layout.blobs, layout.tmp, 100)

    async def go() -> None:
        async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as client:
            await BlobDownloader(client, store, layout.partial).fetch_all([Wanted("ef" * 32, 101)])

    with pytest.raises(DownloadError, match="over the limit"):
        asyncio.run(go())


def test_partial_downloads_survive_the_agents_start_up_cleaning(layout: Layout) -> None:
    layout.partial.mkdir()
    (layout.partial / ("ab" * 32)).write_bytes(b"half")
    (layout.tmp / "stage-x").mkdir()
    assert layout.clean_tmp() == ["stage-x"]
    assert partials(layout) == ["ab" * 32]


def test_a_server_dripping_bytes_cannot_hold_a_download(
    server: tuple[str, Behaviour], layout: Layout
) -> None:
    """Slow retrieval: each try may last its grace plus its bytes at the minimum rate; one
    that does not finish ends, keeping what arrived, and counts as no progress."""
    url, b = server
    b.drip_s = 0.02  # about 50 bytes/s, against a minimum of 1000
    w = blob(b, os.urandom(1000))
    started = time.monotonic()
    with pytest.raises(DownloadError) as e:
        fetch(url, layout, [w], attempts=2, min_rate_bps=1000, grace_s=0.2)
    assert time.monotonic() - started < 10
    assert "too slow" in e.value.message and e.value.final is False
    kept = (layout.partial / w.sha256).stat().st_size
    assert 0 < kept < 1000  # what arrived stays, to resume from
    assert stored(layout, w) is None
