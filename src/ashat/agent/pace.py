"""A minimum pace for request bodies: slow retrieval, the other way round.

A client that sends a request body a byte now and then never trips a read timeout, and
would hold a connection and a handler for as long as it likes. :class:`UploadPace` (ASGI
middleware, on the agents and on ``ashat serve``) gives each body ``grace_s`` seconds from
the handler's first read, then asks it to keep up an average of ``min_rate`` bytes a
second: the body's next piece must arrive by ``start + grace_s + received / min_rate``.
One that falls behind is answered 408 (:class:`~.errors.UploadTooSlow`) by the handler
reading it, whose cleanup then removes what it had written — as for a client that went
away — and the connection is closed with the answer (``Connection: close``), not held open
for the rest of the body.

Only the body is paced: once its last piece has arrived, ``receive`` is passed through
untouched (a response listening for the client's disconnect waits as long as it must).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ashat.agent.errors import UploadTooSlow


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
