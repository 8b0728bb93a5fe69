"""The one way ashat makes an outgoing HTTP request: every client is built here.

In the spirit of python-tuf's ``FetcherInterface``: one place owns how a connection is
made and what a failure means, and each client (the agent and control clients, a
mainframe's OMEGA client and blob downloader, the verify probes, notifications, the
advisory download) only says what it sends and how it reads the answer.

- **TLS**: the system's CAs, or one CA file (:func:`tls`); a file that cannot be loaded
  is :class:`~ashat.errors.InvalidInput` naming the option it came from.
- **Timeouts**: :data:`CONNECT_S` to connect, a read timeout per pause
  (:data:`TIMEOUT_S` unless a client says otherwise), and a total time from an answer's
  headers to its last byte (:data:`TOTAL_S`: a server dripping bytes just fast enough never
  to trip the read timeout is cut off: slow retrieval).
- **Size**: an answer read whole is refused past :data:`MAX_ANSWER_BYTES`
  (:func:`read_answer`, :func:`aread_answer`). Every request asks for ``Accept-Encoding:
  identity`` and an answer with any other ``Content-Encoding`` is refused before its body
  is read: httpx would decode it whatever was asked, a piece at a time with no bound, so a
  few hundred bytes of nested gzip from a hostile server (a mirror, a cache, the deployed
  app) became hundreds of MiB in memory before any of our limits saw them.
- **Errors**: httpx's never leave this module's callers; :func:`failure` is the one map from
  an httpx error to :mod:`.errors` (no route, a timeout or a broken connection:
  :class:`Unreachable`, transient; a certificate: :class:`TLSFailure`).

Retries and backoff belong to the client that knows what may be sent again (the agent
client's v1 routes are idempotent; a mainframe's loop backs off with jitter; a
notification counts its tries).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashat import __version__
from ashat.errors import InvalidInput
from ashat.transport.errors import BadResponse, TLSFailure, TransportError, Unreachable

if TYPE_CHECKING:
    import ssl

    import httpx

    from ashat.transport.hosts import HostList

CONNECT_S = 10.0  # seconds to connect
TIMEOUT_S = 30.0  # seconds of silence while waiting for or reading an answer
TOTAL_S = 60.0  # seconds from an answer's headers to its last byte (beyond any wait asked)
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # bytes of an answer read whole (JSON, an error)
MAX_ERROR_CHARS = 300  # of an error's text kept in a message
USER_AGENT = f"ashat/{__version__}"


def tls(ca_file: str | Path | None, option: str) -> ssl.SSLContext | bool:
    """How to check a server's certificate: the system's CAs, or ``ca_file`` only.
    Raises :class:`InvalidInput` naming ``option`` if the file cannot be loaded."""
    import ssl

    if ca_file is None or ca_file == "":
        return system_tls()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError, ValueError) as e:
        raise InvalidInput(f"cannot load {option} {ca_file}: {e}") from e


def tls_for(url: str, ca_file: str | Path | None, option: str) -> ssl.SSLContext | bool:
    """:func:`tls` for a server at ``url``. A plain ``http://`` server is never spoken TLS
    to (a proxy's connection has its own context), so it gets a context that trusts no
    certificate instead of the system's CAs, which took a command ~25 ms to load (issue 20).
    """
    if (ca_file is None or ca_file == "") and url[:7].lower() == "http://":
        return _trusts_nothing()
    return tls(ca_file, option)


@functools.lru_cache(maxsize=1)
def _trusts_nothing() -> ssl.SSLContext:
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and knows no CA to verify by


def system_tls() -> ssl.SSLContext:
    """The system's CAs, as httpx loads them for ``verify=True`` (it honours
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), made once per process and setting: each load
    parses the whole CA bundle (~30 ms here), and a warm helper's children
    (:mod:`ashat.cli.helper`) inherit the one it made."""
    import os

    return _system_tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _system_tls(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """Raises :class:`InvalidInput` when the CAs ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` name
    cannot be loaded (a failure is not cached)."""
    import ssl

    import httpx

    try:
        return httpx.create_ssl_context()  # it reads the two variables itself
    except (OSError, ssl.SSLError, ValueError) as e:
        named = " and ".join(
            f"{name}={value}"
            for name, value in (("SSL_CERT_FILE", cert_file), ("SSL_CERT_DIR", cert_dir))
            if value
        )
        raise InvalidInput(f"cannot load the system's CAs ({named or 'the default'}): {e}") from e


def timeout(read_s: float = TIMEOUT_S, connect_s: float = CONNECT_S) -> httpx.Timeout:
    import httpx

    return httpx.Timeout(read_s, connect=min(connect_s, read_s))


def _settings(
    base_url: str,
    headers: Mapping[str, str] | None,
    verify: ssl.SSLContext | bool,
    timeout_s: float,
    max_connections: int,
    follow_redirects: bool,
) -> dict[str, Any]:
    import httpx

    return {
        "base_url": base_url,
        "headers": {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})},
        "verify": verify,
        "timeout": timeout(timeout_s),
        # as many kept alive as may be open: a pool of workers reuses its connections
        "limits": httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        "follow_redirects": follow_redirects,
    }


def client(
    *,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout_s: float = TIMEOUT_S,
    max_connections: int = 8,
    follow_redirects: bool = False,
) -> httpx.Client:
    """A synchronous client with our policy (close it, or use it in ``with``)."""
    import httpx

    from ashat.transport.redirects import RedirectsUnread

    settings = _settings(base_url, headers, verify, timeout_s, max_connections, follow_redirects)
    inner = httpx.HTTPTransport(verify=verify, limits=settings["limits"])
    return httpx.Client(
        **settings,
        transport=RedirectsUnread(inner),
        event_hooks={"response": [refuse_encoded]},
    )


def async_client(
    *,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout_s: float = TIMEOUT_S,
    max_connections: int = 8,
    follow_redirects: bool = False,
    redirect_hosts: HostList | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """An asynchronous client with our policy (use it in ``async with``); given
    ``redirect_hosts``, a redirect elsewhere raises
    :class:`~ashat.transport.redirects.RedirectRefused`; ``auth`` authenticates each
    request (httpx drops what it set on a redirect to another host)."""
    import httpx

    from ashat.transport.redirects import AsyncRedirectsUnread

    async def refuse(response: httpx.Response) -> None:
        refuse_encoded(response)

    settings = _settings(base_url, headers, verify, timeout_s, max_connections, follow_redirects)
    inner = httpx.AsyncHTTPTransport(verify=verify, limits=settings["limits"])
    return httpx.AsyncClient(
        **settings,
        transport=AsyncRedirectsUnread(inner, redirect_hosts),
        event_hooks={"response": [refuse]},
        auth=auth,
    )


# What httpx decodes (an answer in another coding it passes on as it came, undecoded).
_DECODED = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})


def refuse_encoded(response: httpx.Response) -> None:
    """Refuse an answer httpx would decode (``Content-Encoding`` gzip, deflate, br, zstd)
    though identity was asked for: called on its headers, before any of its body is read
    or decoded (a redirect's too, whose body httpx reads whole). A request that asked for
    an encoding itself (a ``[[verify.api]]`` header) gets it. Raises
    ``httpx.DecodingError``, which :func:`failure` maps to :class:`BadResponse`."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    if not coding or coding == "identity":
        return
    if response.request.headers.get("accept-encoding", "identity") != "identity":
        return  # asked for
    if not {c.strip() for c in coding.split(",")} & _DECODED:
        return  # nothing httpx decodes: the bytes come as they are
    import httpx

    raise httpx.DecodingError(
        f"answer refused: Content-Encoding {coding[:40]!r}, though identity was asked for "
        "(a compressed answer is decoded without bound)",
        request=response.request,
    )


def short(e: BaseException) -> str:
    """An exception in one short line: its type and the first line of its text."""
    text = str(e).splitlines()[0] if str(e) else ""
    return (f"{type(e).__name__}: {text}" if text else type(e).__name__)[:MAX_ERROR_CHARS]


def failure(e: Exception, url: str, who: str | None = None) -> TransportError:
    """The one map from an httpx error (or a total-time ``TimeoutError``) talking to ``url``
    (``who``, if named: "OMEGA") to ours: :class:`TLSFailure`, :class:`Unreachable`
    (transient) or :class:`BadResponse`."""
    import httpx

    url = f"{who} at {url}" if who else url
    if isinstance(e, httpx.ConnectError):
        if "CERTIFICATE" in str(e).upper() or "SSL" in str(e).upper():
            return TLSFailure(f"TLS failure talking to {url}: {short(e)}")
        return Unreachable(f"cannot reach {url}: {short(e)}")
    if isinstance(e, (httpx.TimeoutException, TimeoutError)):
        return Unreachable(f"{url} did not answer in time ({type(e).__name__})")
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return Unreachable(f"connection to {url} broke: {short(e)}")
    if isinstance(e, httpx.TransportError):
        return Unreachable(f"cannot talk to {url}: {short(e)}")
    return BadResponse(f"request to {url} failed: {short(e)}")


def read_answer(
    resp: httpx.Response, url: str, *, max_bytes: int | None = None, total_s: float | None = None
) -> bytes:
    """The whole body of ``resp``; :class:`BadResponse` past ``max_bytes`` or ``total_s``
    (:data:`MAX_ANSWER_BYTES`, :data:`TOTAL_S` unless given)."""
    max_bytes = MAX_ANSWER_BYTES if max_bytes is None else max_bytes
    total_s = TOTAL_S if total_s is None else total_s
    chunks, got = [], 0
    deadline = time.monotonic() + total_s
    for chunk in resp.iter_bytes():
        got += len(chunk)
        if got > max_bytes:
            raise BadResponse(f"{url} sent more than {max_bytes} bytes (over the limit); refused")
        if time.monotonic() > deadline:
            raise BadResponse(f"{url} took more than {total_s:g}s to send its answer; refused")
        chunks.append(chunk)
    return b"".join(chunks)


async def aread_answer(
    resp: httpx.Response, url: str, *, max_bytes: int = MAX_ANSWER_BYTES
) -> bytes:
    """The whole body of ``resp``, asynchronously; :class:`BadResponse` past ``max_bytes``
    (the caller bounds the total time with ``asyncio.timeout``)."""
    raw = bytearray()
    async for chunk in resp.aiter_bytes():
        raw += chunk
        if len(raw) > max_bytes:
            raise BadResponse(f"{url} sent more than {max_bytes} bytes (over the limit); refused")
    return bytes(raw)
