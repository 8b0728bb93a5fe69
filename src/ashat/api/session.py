"""Dashboard sessions: a signed cookie naming the signed-in user, never holding their token.

The cookie value is ``<payload>.<mac>``, both URL-safe base64: the payload is JSON
``{"u": user, "f": token fingerprint, "c": CSRF token, "t": issued at}`` and the mac its
HMAC-SHA256 under a key derived from the server's secret. The secret is 32 random bytes in
``.ashat/secrets/session.key`` (mode 0600), made on first start, so sessions outlive a
restart and every ``ashat serve`` of one project accepts the others' cookies.

The fingerprint is an HMAC of the user's stored token *hash*: when their token is replaced
or the user removed, the fingerprint no longer matches and every session of theirs ends.
Signing out ends one session everywhere: its :attr:`Session.id` is kept in the store's
``ended_sessions`` until the cookie would have expired.
Decoding is pure (bytes in, a :class:`Session` or None out); only :func:`load_secret`
touches the disk.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request

from ashat.errors import InvalidInput
from ashat.store.users import User

COOKIE = "ashat_session"
MAX_AGE_S = 12 * 3600  # a session's lifetime, seconds: then sign in again
MAX_COOKIE_CHARS = 2048  # longer values are refused unread
CLOCK_SKEW_S = 60  # a cookie issued this far "in the future" is still accepted
SECRET_BYTES = 32
SECRET_NAME = "session.key"


@dataclass(frozen=True)
class Session:
    user: str
    fingerprint: str  # of the user's token hash when they signed in
    csrf: str  # the token every form of this session carries
    issued_at: int  # seconds since the epoch

    @property
    def id(self) -> str:
        """A name for the session that gives nothing of it away (its CSRF token's sha256),
        by which signing out ends it for every copy of the cookie."""
        return hashlib.sha256(self.csrf.encode("ascii")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Makes, signs and checks sessions with keys derived from one server secret."""

    def __init__(self, secret: bytes, max_age_s: int = MAX_AGE_S) -> None:
        if len(secret) < 16:
            raise ValueError("a session secret needs at least 16 bytes")
        self._sign_key = hmac.digest(secret, b"ashat-session/sign", "sha256")
        self._print_key = hmac.digest(secret, b"ashat-session/token-fingerprint", "sha256")
        self.max_age_s = max_age_s

    def fingerprint(self, token_hash: str) -> str:
        return hmac.new(self._print_key, token_hash.encode("ascii"), hashlib.sha256).hexdigest()

    def new(self, user: User, now: float) -> Session:
        """A fresh session (and CSRF token) for ``user``, who has a token."""
        assert user.token_hash is not None  # only a user who signed in with a token
        return Session(
            user.name, self.fingerprint(user.token_hash), secrets.token_urlsafe(32), int(now)
        )

    def expires_at(self, session: Session) -> int:
        return session.issued_at + self.max_age_s

    def belongs_to(self, session: Session, user: User | None) -> bool:
        """Whether ``session`` is still ``user``'s: same name, same token as at sign-in."""
        if user is None or user.token_hash is None or user.name != session.user:
            return False
        return hmac.compare_digest(self.fingerprint(user.token_hash), session.fingerprint)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.digest(self._sign_key, payload.encode("ascii"), "sha256"))

    def encode(self, session: Session) -> str:
        body = {
            "u": session.user,
            "f": session.fingerprint,
            "c": session.csrf,
            "t": session.issued_at,
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}"

    def decode(self, value: str | None, now: float) -> Session | None:
        """The session in a cookie value, or None: missing, forged, malformed or expired."""
        if not value or len(value) > MAX_COOKIE_CHARS or not value.isascii():
            return None
        payload, dot, mac = value.partition(".")
        if not dot or not hmac.compare_digest(self._mac(payload), mac):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(body, dict):
            return None
        user, fingerprint, csrf, issued = body.get("u"), body.get("f"), body.get("c"), body.get("t")
        if not (isinstance(user, str) and isinstance(fingerprint, str) and isinstance(csrf, str)):
            return None
        if not isinstance(issued, int) or isinstance(issued, bool):
            return None
        if not issued - CLOCK_SKEW_S <= now <= issued + self.max_age_s:
            return None
        return Session(user, fingerprint, csrf, issued)


def csrf_matches(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(
        session.csrf.encode("ascii"), (submitted or "").encode("utf-8", "replace")
    )


def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this server (``Origin``, else ``Referer``).

    A request naming neither is not a browser's cross-site request; the CSRF token decides.
    """
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == expected


def load_secret(state_dir: Path) -> bytes:
    """The server's session secret, made (0600) on first use.

    Two servers starting at once agree: the file appears complete or not at all (written
    aside, then hard-linked into place, which fails if the other one won). Raises
    :class:`InvalidInput` when the file cannot be read or written, is malformed, or is open
    to others.
    """
    path = state_dir / "secrets" / SECRET_NAME
    try:
        try:
            return _read_secret(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{SECRET_NAME}.", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_hex(SECRET_BYTES).encode("ascii") + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return _read_secret(path)
    except OSError as e:
        raise InvalidInput(
            f"cannot keep the dashboard's session secret {path}: {e.strerror}"
        ) from e


def _read_secret(path: Path) -> bytes:
    with path.open("rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise InvalidInput(
                f"{path} is open to others (mode {mode:o}): 'chmod 600' it, or delete it to "
                "make a new one (which signs everyone out)"
            )
        raw = f.read(200)
    try:
        secret = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) < 16:
        raise InvalidInput(f"{path} is not a session secret: delete it to make a new one")
    return secret
