"""Fetching a file over HTTP(S) to disk: the one place outside the agent and control
clients that downloads (OSV's advisory data for ``ashat advisories update``).

A size limit, a total-time limit and TLS from the system's or a given CA file; every
failure is one of :mod:`.errors` (httpx's never leave here): no route or a timeout is
:class:`Unreachable` (exit 4), an HTTP error status or too many bytes :class:`BadResponse`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ashat.transport import outgoing
from ashat.transport.errors import BadResponse, Unreachable

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
    import httpx

    verify = outgoing.tls(ca_file, "CA file")
    deadline = time.monotonic() + total_s
    written = 0
    try:
        with (
            outgoing.client(verify=verify, timeout_s=connect_s * 3, follow_redirects=True) as http,
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
    except httpx.HTTPError as e:
        dest.unlink(missing_ok=True)
        raise outgoing.failure(e, url) from e
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written
