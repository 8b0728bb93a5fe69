"""A small HTTP server on loopback that plays a hostile party: it answers what a test
scripts, endless or dripped bodies, and JSON nested deeper than a parser recurses. Tests
use it in place of a server that has turned hostile (a compromised OMEGA or PUBLIC, or an
attacker on the network), never as a stand-in for one of ours behaving well.

Importable from the integration tests as ``from hostile_server import HostileServer`` (the
tests directories are not packages; pytest puts this one on ``sys.path``).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

ENDLESS_CHUNK = b"[" * 65536  # what endless bodies are made of: never valid JSON
NESTED = b"[" * 100_000 + b"]" * 100_000  # valid JSON, deeper than any parser's recursion


class HostileServer:
    """An HTTP/1.1 server on loopback whose answers the test scripts.

    ``poll`` holds the answers for the next ``GET /v1/fleet/poll`` (a dict sent as JSON, a
    function of the poll's query returning one, or ``ENDLESS``); with none queued a poll
    waits a little and answers no directive, as ``quiet(query)`` makes it (by default an
    unsigned ``{"directive": null}``).
    ``GET /v1/blobs/*`` and, with ``endless_everything``, any other request get an endless
    body. ``POST /v1/fleet/report`` bodies are kept in ``reports``. With ``drip_s`` the
    endless bodies come a byte at a time, just fast enough never to trip a read timeout.
    ``GET /nested`` answers JSON nested deeper than any parser recurses.
    """

    ENDLESS = "endless"

    def __init__(self, *, endless_everything: bool = False, drip_s: float | None = None) -> None:
        self.poll: list[Any] = []
        self.quiet: Callable[[dict[str, str]], Any] = lambda query: {"directive": None}
        self.drip_s = drip_s
        self.reports: list[dict[str, Any]] = []
        self.endless_everything = endless_everything
        self.endless_bytes = 0  # how much the endless bodies sent, in all
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/nested":
                    self._raw(NESTED)
                elif server.endless_everything or self.path.startswith("/v1/blobs/"):
                    self._endless()
                elif self.path.startswith("/v1/fleet/poll"):
                    with server.lock:
                        queued = server.poll.pop(0) if server.poll else None
                    if queued == HostileServer.ENDLESS:
                        self._endless()
                    elif callable(queued):  # an answer made for this very poll
                        self._json(queued(self._query()))
                    elif queued is not None:
                        self._json(queued)
                    else:
                        time.sleep(0.3)
                        self._json(server.quiet(self._query()))
                else:
                    self._json({"error": "no such route"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if server.endless_everything:
                    self._endless()
                elif self.path == "/v1/fleet/report":
                    with server.lock:
                        server.reports.append(json.loads(body))
                    self._json({"ok": True})
                else:
                    self._json({"error": "no such route"}, 404)

            def _query(self) -> dict[str, str]:
                return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

            def _json(self, obj: Any, status: int = 200) -> None:
                self._raw(json.dumps(obj).encode(), status)

            def _raw(self, data: bytes, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _endless(self) -> None:
                """200 with no length, then bytes until the client gives up."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                chunk = ENDLESS_CHUNK[:1] if server.drip_s else ENDLESS_CHUNK
                try:
                    while True:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        with server.lock:
                            server.endless_bytes += len(chunk)
                        if server.drip_s:
                            time.sleep(server.drip_s)
                except OSError:
                    pass  # the client hung up: the point of the exercise

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
