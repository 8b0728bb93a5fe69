"""The minimum pace of request bodies (:mod:`ashat.http.middleware`), on a real event loop: a
body that keeps up passes whole, one that falls behind after its grace is refused at the
moment it falls behind, and nothing after the body's end is timed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ashat.agent.errors import UploadTooSlow
from ashat.http.middleware import UploadPace

SCOPE = {"type": "http", "method": "PUT", "path": "/v1/blobs/x", "headers": []}


def body_of(pieces: list[tuple[float, bytes]], then: list[dict[str, Any]] | None = None) -> Any:
    """An ASGI ``receive`` that sends each piece after its pause, then ``then``'s messages
    (by default none: it waits for ever, as a client that stopped sending)."""
    queue = list(pieces)
    after = list(then or [])
    ends = then is not None

    async def receive() -> dict[str, Any]:
        if queue:
            pause, data = queue.pop(0)
            await asyncio.sleep(pause)
            return {"type": "http.request", "body": data, "more_body": bool(queue) or not ends}
        if after:
            return after.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    return receive


async def read_all(min_rate: int, grace_s: float, receive: Any, extra: int = 0) -> bytes:
    """Run an app that reads the whole body, then ``extra`` more messages, through the pace."""
    got = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        for _ in range(extra):
            await receive()

    async def send(message: Any) -> None:
        pass

    await UploadPace(app, min_rate, grace_s, "--min-upload-rate")(SCOPE, receive, send)
    return bytes(got)


def test_a_body_that_keeps_up_passes_whole() -> None:
    pieces = [(0.05, b"x" * 1000) for _ in range(5)]
    body = asyncio.run(read_all(10_000, 0.1, body_of(pieces, [])))
    assert body == b"x" * 5000


def test_a_stalled_body_is_refused_once_its_grace_has_passed() -> None:
    started = time.monotonic()
    with pytest.raises(UploadTooSlow) as e:
        asyncio.run(read_all(1_000_000, 0.3, body_of([(0, b"x" * 10)])))
    took = time.monotonic() - started
    assert 0.3 <= took < 2.0
    assert "10 bytes in 0 s" in e.value.message and "--min-upload-rate" in e.value.message
    assert e.value.details == {"received": 10}


def test_a_dripped_body_is_refused_when_it_falls_behind_the_rate() -> None:
    """1,000 bytes/s asked: 100 bytes buys 0.1 s more, and a drip of 100 bytes every 0.25 s
    falls behind soon after the grace."""
    started = time.monotonic()
    with pytest.raises(UploadTooSlow):
        asyncio.run(read_all(1000, 0.2, body_of([(0.25, b"y" * 100) for _ in range(40)])))
    assert time.monotonic() - started < 3.0


def test_after_the_body_nothing_is_timed() -> None:
    """A response that waits for the client's disconnect is not refused as a slow body."""
    body = [{"type": "http.request", "body": b"z", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if body:
            return body.pop(0)
        await asyncio.sleep(0.5)  # well past the grace: only the body is paced
        return {"type": "http.disconnect"}

    assert asyncio.run(read_all(1_000_000, 0.1, receive, extra=1)) == b"z"


def test_no_rate_asks_for_nothing() -> None:
    body = asyncio.run(read_all(0, 0.01, body_of([(0.1, b"a"), (0.1, b"b")], [])))
    assert body == b"ab"


def test_the_time_before_the_handler_first_reads_is_not_the_bodys() -> None:
    """A server busy before it reads (authentication, a worker thread) does not make the
    client late: the grace starts at the first read."""
    got = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.4)  # longer than the grace
        while True:
            message = await receive()
            got.extend(message["body"])
            if not message["more_body"]:
                break

    async def send(message: Any) -> None:
        pass

    receive = body_of([(0.05, b"a" * 100), (0.05, b"b" * 100)], [])
    asyncio.run(UploadPace(app, 1000, 0.2, "--min-upload-rate")(SCOPE, receive, send))
    assert bytes(got) == b"a" * 100 + b"b" * 100
