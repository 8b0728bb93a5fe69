"""Running ``ashat serve`` on uvicorn until SIGTERM or SIGINT, then stopping cleanly.

As for the agent (:mod:`ashat.agent.runner`), the socket is bound before anything else so
port 0 works and a busy port is a clear error; the ready line names the URL. On a signal
the requests in flight finish, then the notifications still being delivered get
``SHUTDOWN_FLUSH_S`` (in the app's lifespan), and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from ashat.agent.config import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S, format_host
from ashat.agent.runner import KEEP_ALIVE_S, bind_listen
from ashat.api.app import build_app
from ashat.errors import InvalidInput
from ashat.store.db import redact_url

GRACEFUL_SHUTDOWN_S = 15  # for requests in flight after a signal

if TYPE_CHECKING:
    from ashat.ops.push import SpoolQuota


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's, which re-raises the signal after shutdown: a clean stop exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise InvalidInput(f"cannot load --tls-cert/--tls-key: {e}") from e


def run_server(
    root: Path,
    db_url: str | None,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    announce: Callable[[str], None],
    forwarded_allow_ips: str = "127.0.0.1",
    upload_pace: tuple[int, float] = (DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S),
    spool_quota: SpoolQuota | None = None,
) -> None:
    """Serve the project at ``root`` until a signal; ``announce`` gets the ready line.

    Raises InvalidInput (TLS files, the store, ``ashat.toml``) or AshatError (busy port)
    before serving.
    """
    from ashat.store.db import database_url

    _check_tls(tls_cert, tls_key)
    sock = bind_listen(host, port)
    try:
        app = build_app(root, db_url, *upload_pace, spool_quota=spool_quota)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{format_host(host)}:{sock.getsockname()[1]}"
    db = redact_url(db_url or database_url(root))
    line = f"ashat serve: serving {url} project={root} db={db}"
    try:
        _Server(config, lambda: announce(line)).run(sockets=[sock])
    finally:
        sock.close()
