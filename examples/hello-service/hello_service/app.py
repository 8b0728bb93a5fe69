"""The HTTP side of hello-service, on :mod:`http.server`.

Routes (all JSON, all with security headers):

- ``GET /healthz`` -> 200 ``{"status": "ok", "version": ...}``
- ``GET /api/items`` -> 200 ``{"items": [{"id": ..., "name": ...}, ...]}``
- ``POST /api/items`` with ``{"name": "..."}`` -> 201 the new item; 400 on a bad body,
  411 without ``Content-Length``, 413 over 64 KiB, 415 for a non-JSON content type
- ``GET /api/items/<id>`` -> 200 the item, or 404
- anything else -> 404 (unknown path) or 405 (known path, wrong method)

:func:`route` is the whole application as a plain function of (method, path, body);
:class:`RequestHandler` only adapts it to ``http.server``; :func:`make_server` builds a
:class:`http.server.ThreadingHTTPServer` around both.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import urlsplit

from hello_service import read_version
from hello_service.db import MAX_NAME_LENGTH, Database

__all__ = [
    "MAX_BODY_BYTES",
    "SECURITY_HEADERS",
    "App",
    "HelloServer",
    "RequestHandler",
    "Response",
    "make_server",
]

MAX_BODY_BYTES = 64 * 1024
# A declared body up to this size is read and dropped before a 413, so the client can
# finish sending and read the answer; anything larger is refused without reading it.
_MAX_DRAIN_BYTES = 1024 * 1024
_SOCKET_TIMEOUT_S = 15

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

_ITEM_PATH = re.compile(r"/api/items/([0-9]{1,19})")
_MAX_SQLITE_INT = 2**63 - 1

_ALLOWED: dict[str, tuple[str, ...]] = {
    "/healthz": ("GET", "HEAD"),
    "/api/items": ("GET", "HEAD", "POST"),
}
_ITEM_METHODS = ("GET", "HEAD")


@dataclass
class Response:
    status: int
    payload: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


def error(status: HTTPStatus, message: str, **extra: Any) -> Response:
    return Response(int(status), {"error": status.phrase.lower(), "message": message, **extra})


class App:
    """The routes, over a :class:`Database` and a version string."""

    def __init__(self, db: Database, version: str | None = None) -> None:
        self.db = db
        self.version = version if version is not None else read_version()

    def route(
        self, method: str, target: str, body: bytes = b"", content_type: str = ""
    ) -> Response:
        path = urlsplit(target).path
        if path == "/healthz":
            if method not in _ALLOWED[path]:
                return _not_allowed(_ALLOWED[path])
            return Response(200, {"status": "ok", "version": self.version})
        if path == "/api/items":
            if method in ("GET", "HEAD"):
                return Response(200, {"items": [i.to_json() for i in self.db.list_items()]})
            if method == "POST":
                return self._create(body, content_type)
            return _not_allowed(_ALLOWED[path])
        m = _ITEM_PATH.fullmatch(path)
        if m is not None:
            if method not in _ITEM_METHODS:
                return _not_allowed(_ITEM_METHODS)
            item_id = int(m.group(1))
            item = self.db.get_item(item_id) if 0 < item_id <= _MAX_SQLITE_INT else None
            if item is None:
                return error(HTTPStatus.NOT_FOUND, f"no item with id {m.group(1)}")
            return Response(200, item.to_json())
        return error(HTTPStatus.NOT_FOUND, f"no route for {path}")

    def _create(self, body: bytes, content_type: str) -> Response:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the item as application/json")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return error(HTTPStatus.BAD_REQUEST, 'body must be a JSON object like {"name": "..."}')
        name = data.get("name")
        if not isinstance(name, str):
            return error(HTTPStatus.BAD_REQUEST, '"name" is required and must be a string')
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME_LENGTH:
            return error(
                HTTPStatus.BAD_REQUEST,
                f'"name" must be 1 to {MAX_NAME_LENGTH} characters (surrounding spaces ignored)',
            )
        item = self.db.add_item(name)
        return Response(201, item.to_json(), headers=[("Location", f"/api/items/{item.id}")])


def _not_allowed(methods: tuple[str, ...]) -> Response:
    resp = error(HTTPStatus.METHOD_NOT_ALLOWED, f"allowed methods: {', '.join(methods)}")
    resp.headers.append(("Allow", ", ".join(methods)))
    return resp


class HelloServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the :class:`App` and the request log stream."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, log: IO[str] | None = None) -> None:
        self.app = app
        self.log: IO[str] = log if log is not None else sys.stdout
        self._inflight = 0
        self._idle = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RequestHandler)

    def request_started(self) -> None:
        with self._idle:
            self._inflight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for requests being handled to finish.

        Idle keep-alive connections do not count: their (daemon) threads end with the process.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away mid-response: nothing to report
        super().handle_error(request, client_address)


class RequestHandler(BaseHTTPRequestHandler):
    server: HelloServer
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm on, a kept-alive
    # connection waits for the client's delayed ACK (40 ms) before every body.
    disable_nagle_algorithm = True
    server_version = "hello-service"
    sys_version = ""
    timeout = _SOCKET_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version

    def handle_one_request(self) -> None:
        self._started = time.perf_counter()
        super().handle_one_request()

    # http.server looks up do_<METHOD>; every method goes through the same dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self.server.request_started()
        try:
            self._handle()
        finally:
            self.server.request_finished()

    def _handle(self) -> None:
        app = self.server.app
        try:
            body = b""
            if self.command in ("POST", "PUT", "PATCH"):
                body_or_error = self._read_body()
                if isinstance(body_or_error, Response):
                    self._send(body_or_error)
                    return
                body = body_or_error
            resp = app.route(self.command, self.path, body, self.headers.get("Content-Type", ""))
            if body == b"" and self.headers.get("Content-Length", "0").strip() not in ("", "0"):
                # A body we did not read (GET, DELETE…): close rather than misread it as
                # the next request.
                resp.close = True
        except Exception as exc:
            self.log_message("internal error: %r", exc)
            resp = error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            resp.close = True
        finally:
            app.db.close()
        self._send(resp)

    def _read_body(self) -> bytes | Response:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            resp = error(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported")
            resp.close = True
            return resp
        raw = self.headers.get("Content-Length")
        if raw is None:
            resp = error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            resp.close = True
            return resp
        try:
            length = int(raw.strip())
        except ValueError:
            length = -1
        if length < 0:
            resp = error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            resp.close = True
            return resp
        if length > MAX_BODY_BYTES:
            resp = error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body is {length} bytes, the limit is {MAX_BODY_BYTES}",
                limit=MAX_BODY_BYTES,
            )
            resp.close = True
            if length <= _MAX_DRAIN_BYTES:
                self._drain(length)
            return resp
        body = self.rfile.read(length)
        if len(body) != length:
            resp = error(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length")
            resp.close = True
            return resp
        return body

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it (``Expect: 100-continue``)."""
        try:
            length = int(self.headers.get("Content-Length", "0").strip())
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            resp = error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body is {length} bytes, the limit is {MAX_BODY_BYTES}",
                limit=MAX_BODY_BYTES,
            )
            resp.close = True
            self._send(resp)
            return False
        return super().handle_expect_100()

    def _drain(self, length: int) -> None:
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            return

    def _send(self, resp: Response, *, with_body: bool | None = None) -> None:
        body = resp.body()
        if with_body is None:
            with_body = self.command != "HEAD"
        self.send_response(resp.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*SECURITY_HEADERS, *resp.headers):
            self.send_header(name, value)
        if resp.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if with_body:
            self.wfile.write(body)
        self._log_request(resp.status, len(body) if with_body else 0)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, header too long…) as JSON."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        resp = error(status, message or status.description)
        resp.close = True
        if getattr(self, "command", None) is None:
            self.command = ""
        # Before the request line was parsed there is no version: answer with HTTP/1.1 framing.
        if not hasattr(self, "request_version"):
            self.request_version = "HTTP/1.1"
        self._send(resp)

    # -- logging: one line per request on the server's log stream (stdout) -----------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: :meth:`_log_request` writes the line once the response is sent."""

    def _log_request(self, status: int, size: int) -> None:
        started = getattr(self, "_started", None)
        ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        request = getattr(self, "requestline", "") or "-"
        line = f'"{_printable(request)}" {status} {size} {ms:.1f}ms'
        self._write_log(f"{self.address_string()} {line}")

    def log_message(self, format: str, *args: Any) -> None:
        self._write_log(f"{self.address_string()} {_printable(format % args)}")

    def _write_log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            self.server.log.write(f"{stamp} {line}\n")
            self.server.log.flush()
        except (OSError, ValueError):
            pass


def _printable(text: str) -> str:
    """Request lines come from the network: escape control characters before logging."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:500]


def make_server(
    host: str, port: int, db: Database, *, version: str | None = None, log: IO[str] | None = None
) -> HelloServer:
    """Bind ``host:port`` (``port=0`` picks a free one) serving :class:`App` over ``db``."""
    db.ensure_schema()
    return HelloServer((host, port), App(db, version), log)
