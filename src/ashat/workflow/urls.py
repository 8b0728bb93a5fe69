"""Validation of server URLs given to ``deploy configure`` (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ashat.errors import InvalidInput


def validate_server_url(url: str) -> str:
    """Return the normalized URL (no trailing slash) or raise :class:`InvalidInput`.

    Accepted: ``http`` or ``https``, a host, an optional port, an optional path prefix;
    no credentials, query or fragment (a token belongs in ``--token-file``).
    """
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:  # before echoing any of it (a password may hold / ? or #)
        raise InvalidInput(
            "invalid server URL: it contains credentials (an '@'); pass a token with "
            "--token-file instead"
        )
    if not url or any(c.isspace() for c in url) or not url.isprintable():
        raise InvalidInput(
            f"invalid server URL {url!r}: it is empty or contains whitespace or control characters"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidInput(f"invalid server URL {url!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"invalid server URL {url!r}: the scheme must be http or https, "
            f"not {parts.scheme or 'missing'!r}"
        )
    if not parts.hostname:
        raise InvalidInput(f"invalid server URL {url!r}: it names no host")
    if "?" in url or "#" in url:  # also an empty query or fragment ('http://h?')
        raise InvalidInput(f"invalid server URL {url!r}: no query or fragment is allowed")
    if port is None and parts.netloc.endswith(":"):
        raise InvalidInput(f"invalid server URL {url!r}: the port after ':' is empty")
    if port == 0:
        raise InvalidInput(f"invalid server URL {url!r}: port 0 is not a port")
    return url.rstrip("/")
