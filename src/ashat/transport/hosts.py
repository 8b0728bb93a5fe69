"""Which hosts a redirect may lead a client to (a mainframe's ``--blob-host``).

A mainframe follows OMEGA's redirects for blobs and packs, to a mirror or a CDN. A hostile
OMEGA, or anyone on a path without TLS, could send it to an address inside its own network
instead (the bytes would never install: they are checked against the signed manifest; but
the request is made). A site that lists the hosts its mirrors live on keeps its mainframes
from being sent anywhere else: OMEGA's own address and the site cache's always pass.

Pure: no network, no httpx (the transport asks :meth:`HostList.allows` of each redirect).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# a DNS name or an IPv4 address, or an IPv6 address in brackets; then an optional port
_HOST_RE = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
DEFAULT_PORTS = {"http": 80, "https": 443}


class HostListError(ValueError):
    """A host that is not ``HOST`` or ``HOST:PORT`` (the message says which)."""


@dataclass(frozen=True)
class HostList:
    """Hosts, each with its port or with any (None); names compared case-insensitively."""

    entries: frozenset[tuple[str, int | None]]

    @classmethod
    def parse(cls, hosts: Iterable[str], *origins: str) -> HostList:
        """``hosts`` (``HOST`` for any port, ``HOST:PORT``), and the URLs ``origins`` (their
        own host and port only). Raises :class:`HostListError`."""
        entries: set[tuple[str, int | None]] = set()
        for text in hosts:
            m = _HOST_RE.fullmatch(text.strip())
            port = int(m["port"]) if m and m["port"] else None
            if m is None or (port is not None and not 0 < port < 65536):
                raise HostListError(
                    f"{text!r} is not a host: expected HOST or HOST:PORT, e.g. "
                    "mirror.example.com or [2001:db8::1]:8443"
                )
            entries.add((m["host"].strip("[]").lower(), port))
        for url in origins:
            parts = urlsplit(url)
            if parts.hostname:
                entries.add((parts.hostname.lower(), parts.port or DEFAULT_PORTS.get(parts.scheme)))
        return cls(frozenset(entries))

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a redirect to ``scheme://host:port`` may be followed."""
        host = host.lower()
        port = port or DEFAULT_PORTS.get(scheme)
        return (host, port) in self.entries or (host, None) in self.entries
