"""Running ``ashat serve`` on uvicorn until SIGTERM or SIGINT, then stopping cleanly.

As for the agent (:mod:`ashat.agent.runner`), the socket is bound before anything else so
port 0 works and a busy port is a clear error; the ready line names the URL. On a signal
the requests in flight finish, then the notifications still being delivered get
``SHUTDOWN_FLUSH_S`` (in the app's lifespan), and the process exits 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ashat.api.app import build_app
from ashat.http.limits import DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_GRACE_S
from ashat.http.serve import Server, bind_listen, check_tls, format_host, uvicorn_config
from ashat.store.db import redact_url

if TYPE_CHECKING:
    from ashat.ops.push import SpoolQuota


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

    check_tls(tls_cert, tls_key)
    sock = bind_listen(host, port)
    try:
        app = build_app(root, db_url, *upload_pace, spool_quota=spool_quota)
    except BaseException:
        sock.close()
        raise
    config = uvicorn_config(
        app, tls_cert, tls_key, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips
    )
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{format_host(host)}:{sock.getsockname()[1]}"
    db = redact_url(db_url or database_url(root))
    line = f"ashat serve: serving {url} project={root} db={db}"
    Server(config, lambda: announce(line)).serve_on(sock)
