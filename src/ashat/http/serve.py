"""Serving an ASGI app on uvicorn until SIGTERM or SIGINT, then stopping cleanly.

The listening socket is bound before anything else (:func:`bind_listen`), so a busy port is
a clear error and port 0 works (the ready line names the port the OS chose); TLS files are
loaded once before serving (:func:`check_tls`), so a bad pair is an error, not a server that
fails each handshake. :class:`Server` exits 0 on a signal (uvicorn's own re-raises it) and a
second Ctrl-C forces the exit. Once it serves, what start-up made (modules, the app, its
configuration: tens of thousands of objects) is frozen out of the garbage collector's sight
(``gc.freeze``), so a request that makes many objects does not pay to walk them all again.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from ashat.errors import AshatError, InvalidInput

GRACEFUL_SHUTDOWN_S = 15  # for requests in flight after a signal
# An idle kept-alive connection is closed by the client first: httpx forgets one after 5 s,
# the server after this. With both at uvicorn's and httpx's 5 s, a client reusing a
# connection as the server closed it met "Server disconnected without sending a response"
# (hundreds of retries in a 1,000-mainframe rollout). 65 s also outlasts the 60 s of
# common load balancers, which must close first too.
KEEP_ALIVE_S = 65


def format_host(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def bind_listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); raises :class:`AshatError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        # Keep proto (IPPROTO_TCP): asyncio turns Nagle off on accepted sockets only when it
        # is set, and without that every answer on a kept-alive connection waits ~40 ms for
        # the peer's delayed ACK.
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise AshatError(f"cannot listen on {format_host(host)}:{port}: {e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise AshatError(f"cannot listen on {format_host(host)}:{port}: {e.strerror or e}") from e
    return sock


def check_tls(cert: Path | None, key: Path | None) -> None:
    """Load the certificate and key once now; :class:`InvalidInput` naming the options if not."""
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise InvalidInput(f"cannot load --tls-cert/--tls-key: {e}") from e


def uvicorn_config(app: Any, cert: Path | None, key: Path | None, **extra: Any) -> uvicorn.Config:
    """uvicorn's settings for our servers: no access log or server header, our keep-alive
    and graceful shutdown; ``extra`` adds to them (proxy headers for ``ashat serve``)."""
    return uvicorn.Config(
        app,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        **extra,
    )


class Server(uvicorn.Server):
    """uvicorn's server, calling ``on_ready`` once it accepts and exiting 0 on a signal."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            await self.started_serving()
            # Start-up's objects live as long as the server: the collector need not walk
            # them again. A stage of 2,000 files made ~20 collections of all ~42,000 (15 ms
            # of its 70, issue 20); frozen, they are ~1 ms.
            gc.collect()
            gc.freeze()
            self._on_ready()

    async def started_serving(self) -> None:
        """Hook: what a subclass starts once the socket accepts, before the ready line."""

    def stopping(self) -> None:
        """Hook: told first thing on a signal (an agent gives up its waits)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: that one re-raises the signal after shutdown, so a clean stop would
        # end with "killed by SIGTERM" instead of exit status 0.
        self.stopping()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    def serve_on(self, sock: socket.socket) -> None:
        """Run until a signal on the bound ``sock`` (closed at the end)."""
        try:
            self.run(sockets=[sock])
        finally:
            sock.close()
