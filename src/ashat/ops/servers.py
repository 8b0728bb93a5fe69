"""The tiers' servers: configure PUBLIC or OMEGA (URL, name, token, CA certificate)."""

from __future__ import annotations

from pathlib import Path

from ashat.errors import InvalidInput
from ashat.ops.project import Project
from ashat.workflow.models import Server

MAX_CA_CERT_BYTES = 1024 * 1024  # a bundle of every public CA is about 250 KB


def check_ca_cert(path: str) -> str:
    """The absolute path of a readable PEM certificate; raise :class:`InvalidInput`."""
    from ashat.project import read_head

    p = Path(path).resolve()
    try:
        data = read_head(p, MAX_CA_CERT_BYTES)
    except OSError as e:
        raise InvalidInput(f"cannot read CA certificate {path}: {e.strerror}") from e
    if len(data) > MAX_CA_CERT_BYTES:
        raise InvalidInput(f"CA certificate {path} is larger than {MAX_CA_CERT_BYTES} bytes")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InvalidInput(f"{path} is not a PEM certificate (no BEGIN CERTIFICATE block)")
    return str(p)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, the port spelled out (what a token is given for)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _check_token(token: str) -> str:
    from ashat.project import MAX_TOKEN_BYTES

    if (
        not token
        or len(token) > MAX_TOKEN_BYTES
        or any(c.isspace() for c in token)
        or not token.isascii()
        or not token.isprintable()
    ):
        raise InvalidInput(f"the token must be one line of printable ASCII, 1-{MAX_TOKEN_BYTES}")
    return token


def configure_server(
    project: Project,
    tier: str,
    url: str,
    name: str,
    *,
    token: str | None = None,
    token_file: Path | None = None,
    ca_cert: str | None = None,
    keep_ca_cert: bool = False,
    actor: str | None = None,
) -> tuple[Server, Server | None]:
    """Set ``tier``'s server; return it and the one it replaced.

    The token (given, or read from ``token_file`` on this machine) is copied to
    ``.ashat/secrets/<tier>.token`` (mode 0600) and never shown; without one, the token
    already configured for the tier is kept. Everything is checked before anything is
    written: a refused reconfiguration leaves the old server and its token as they were.
    Without ``ca_cert``, ``keep_ca_cert`` keeps the tier's CA certificate (else none).
    Raises :class:`InvalidInput`.
    """
    from ashat.ids import validate_tier
    from ashat.project import read_token_file, write_private
    from ashat.workflow.service import validate_server_name
    from ashat.workflow.urls import validate_server_url

    validate_tier(tier)  # before it names a file
    validate_server_url(url)
    validate_server_name(name)
    if token is not None and token_file is not None:
        raise InvalidInput("give a token or a token file, not both")
    ca = check_ca_cert(ca_cert) if ca_cert else None
    wf = project.workflow(actor)
    if token_file is not None:
        token = read_token_file(token_file)
    token_path = None
    if token is not None:
        dest = project.state_dir / "secrets" / f"{tier}.token"
        write_private(dest, _check_token(token).encode("ascii") + b"\n")
        token_path = str(dest)
    old = project.store.server(tier)
    if token_path is None and old is not None and old.token_path is not None:
        if _origin(url) != _origin(old.url):  # else whoever may configure could collect it
            raise InvalidInput(
                f"{tier} moves to another server ({_origin(url)}, was {_origin(old.url)}): "
                "give its token (--token-file); the one stored is sent only where it was "
                "given for"
            )
        token_path = old.token_path  # the same server at another path keeps its token
    if ca is None and keep_ca_cert and old is not None:
        ca = old.ca_cert
    return wf.configure(tier, url, name, token_path, ca)
