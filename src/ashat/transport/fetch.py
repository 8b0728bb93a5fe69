"""Fetching a file over HTTP(S) to disk: the one place outside the agent and control
clients that downloads (OSV's advisory data for ``ashat advisories update``).

A size limit, a total-time limit and TLS from the system's or a given CA file; every
failure is one of :mod:`.errors` (httpx's never leave here): no route or a timeout is
:class:`Unreachable` (exit 4), an HTTP error status or too many bytes :class:`BadResponse`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ashat.transport.errors import BadResponse, TLSFailure, Unreachable

CHUNK = 1 << 20


def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    total_s: float = 600.0,
    connect_s: float = 10.0,
    ca_file: str | None = None,
) -> int:
    """GET ``url`` into ``dest`` (created or truncated); the bytes written. Following
    redirects (object stores answer with them); ``dest`` is removed on any failure."""
    import ssl

    import httpx

    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=ca_file)
    timeout = httpx.Timeout(connect_s * 3, connect=connect_s)
    deadline = time.monotonic() + total_s
    written = 0
    try:
        with (
            httpx.Client(timeout=timeout, verify=verify, follow_redirects=True) as http,
            http.stream("GET", url) as r,
        ):
            if r.status_code >= 400:
                raise BadResponse(f"{url} answered HTTP {r.status_code}", status=r.status_code)
            with dest.open("wb") as f:
                for chunk in r.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise BadResponse(f"{url} sent more than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise Unreachable(f"{url} took longer than {total_s:g} s")
                    f.write(chunk)
    except httpx.ConnectError as e:
        dest.unlink(missing_ok=True)
        if "CERTIFICATE" in str(e).upper() or "SSL" in str(e).upper():
            raise TLSFailure(f"TLS with {url} failed: {e}") from e
        raise Unreachable(f"cannot reach {url}: {e}") from e
    except httpx.TimeoutException as e:
        dest.unlink(missing_ok=True)
        raise Unreachable(f"{url} did not answer in time ({type(e).__name__})") from e
    except httpx.HTTPError as e:
        dest.unlink(missing_ok=True)
        raise BadResponse(f"fetching {url} failed: {e}") from e
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written
