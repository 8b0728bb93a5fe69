"""The ``[[notify]]`` tables of ``ashat.toml``, checked (pure).

::

    [[notify]]
    url = "https://hooks.example.com/ashat"   # or url_env = "NAME" (a Slack URL is a secret)
    events = ["verification_failed", "approved", "completed", "rolled_back"]  # or ["*"]
    format = "json"                            # or "slack", "teams"
    secret_env = "ASHAT_WEBHOOK_SECRET"        # or secret = "..."; signs the body (HMAC-SHA256)
    retries = 3                                # after the first attempt
    timeout_s = 5                              # per attempt

``ashat.toml`` travels in every bundle, so a secret is better named by ``*_env`` (read on
the machine that sends) than written in the file. A variable that is unset there does not
stop anything: the delivery fails, and the failure is an audit event.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ashat.errors import InvalidInput
from ashat.notify.trackers import TrackerUpdate
from ashat.workflow.states import State

FORMATS = ("json", "slack", "teams", "email", "sms")
TWILIO_API = "https://api.twilio.com"
TLS_MODES = ("starttls", "tls", "none")
ALL_EVENTS = "*"
MAX_RETRIES = 10
MAX_TIMEOUT_S = 60.0
KEYS = frozenset(
    {"url", "url_env", "events", "format", "secret", "secret_env", "retries", "timeout_s"}
)
SMS_KEYS = frozenset(
    {"url", "account_sid_env", "auth_token_env", "from", "to", "events", "format"}
    | {"retries", "timeout_s"}
)
EMAIL_KEYS = frozenset(
    {"smtp", "tls", "from", "to", "username_env", "password_env", "ca_cert", "events", "format"}
    | {"retries", "timeout_s"}
)


@dataclass(frozen=True)
class Mail:
    """Where an ``email`` target sends: an SMTP server (``host:port``), how it is secured,
    the envelope, and the variables holding the login (read on the machine that sends)."""

    host: str
    port: int
    tls: str  # starttls | tls | none
    sender: str
    to: tuple[str, ...]
    username_env: str | None = None
    password_env: str | None = None
    ca_cert: str | None = None

    def login(self, index: int) -> tuple[str, str] | None:
        """(user, password) from the environment, or None; raises when one is unset."""
        if self.username_env is None:
            return None
        user = os.environ.get(self.username_env, "")
        password = os.environ.get(self.password_env or "", "")
        if not user or not password:
            raise InvalidInput(
                f"[[notify]] #{index + 1}: ${self.username_env} and ${self.password_env} "
                "must both be set"
            )
        return user, password


@dataclass(frozen=True)
class Sms:
    """Where an ``sms`` target sends: a provider with Twilio's Messages API (``api``, its
    base URL), the sender and recipients (E.164 numbers), and the variables holding the
    account SID and auth token (read on the machine that sends)."""

    api: str
    sender: str
    to: tuple[str, ...]
    account_sid_env: str
    auth_token_env: str

    def credentials(self, index: int) -> tuple[str, str]:
        sid = os.environ.get(self.account_sid_env, "")
        token = os.environ.get(self.auth_token_env, "")
        if not sid or not token:
            raise InvalidInput(
                f"[[notify]] #{index + 1}: ${self.account_sid_env} and "
                f"${self.auth_token_env} must both be set"
            )
        return sid, token


@dataclass(frozen=True)
class Target:
    """One webhook. ``url``/``secret`` are literal values or, with ``*_env``, variable names."""

    index: int  # its position among the [[notify]] tables, for messages
    events: frozenset[str]
    format: str = "json"
    url: str | None = None
    url_env: str | None = None
    secret: str | None = None
    secret_env: str | None = None
    retries: int = 3
    timeout_s: float = 5.0
    mail: Mail | None = None  # format "email"
    sms: Sms | None = None  # format "sms"
    tracker: TrackerUpdate | None = None  # a [[tasks.update]] (format "tracker")

    def wants(self, state: str) -> bool:
        return ALL_EVENTS in self.events or state in self.events

    def resolve_url(self) -> str:
        """The URL to post to; raises :class:`InvalidInput` when its variable is unset."""
        if self.url is not None:
            return self.url
        value = os.environ.get(self.url_env or "", "").strip()
        if not value:
            raise InvalidInput(f"[[notify]] #{self.index + 1}: ${self.url_env} is not set")
        return _check_url(value, self.index)

    def resolve_secret(self) -> str | None:
        """The HMAC key, or None; raises :class:`InvalidInput` when its variable is unset."""
        if self.secret_env is None:
            return self.secret
        value = os.environ.get(self.secret_env, "")
        if not value:
            raise InvalidInput(f"[[notify]] #{self.index + 1}: ${self.secret_env} is not set")
        return value

    def label(self) -> str:
        """Where it goes, safe to record: scheme and host only (the path may be a secret)."""
        if self.mail is not None:
            return f"smtp://{self.mail.host}:{self.mail.port}"
        if self.sms is not None:
            return urlsplit(self.sms.api).netloc
        if self.tracker is not None:
            return self.tracker.label()
        if self.url is None:
            return f"${self.url_env}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else self.url


def _check_url(url: str, index: int) -> str:
    where = f"[[notify]] #{index + 1}"
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise InvalidInput(f"{where}: invalid url: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{where}: url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise InvalidInput(f"{where}: url must not carry credentials")
    return url


def _env_name(value: Any, key: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise InvalidInput(f"{where}.{key} must name an environment variable")
    return value


def parse_targets(tables: Any) -> list[Target]:
    """The ``[[notify]]`` array (None when absent); raise naming the first wrong key."""
    if tables is None:
        return []
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InvalidInput("notify in ashat.toml must be an array of tables: [[notify]]")
    known = {s.value for s in State}
    targets = []
    for i, t in enumerate(tables):
        where = f"[[notify]] #{i + 1}"
        email, sms = t.get("format") == "email", t.get("format") == "sms"
        allowed = EMAIL_KEYS if email else SMS_KEYS if sms else KEYS
        unknown_keys = set(t) - allowed
        if unknown_keys:
            raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown_keys))}")
        url, url_env = t.get("url"), _env_name(t.get("url_env"), "url_env", where)
        if sms and url is None:
            url = TWILIO_API
        if not email and (url is None) == (url_env is None):
            raise InvalidInput(f"{where}: give url or url_env (one of them)")
        if url is not None:
            if not isinstance(url, str):
                raise InvalidInput(f"{where}.url must be a string")
            url = _check_url(url, i)
        events = t.get("events", [ALL_EVENTS])
        if (
            not isinstance(events, list)
            or not all(isinstance(e, str) for e in events)
            or not events
        ):
            raise InvalidInput(f"{where}.events must be a list of deployment states, or ['*']")
        bad = [e for e in events if e != ALL_EVENTS and e not in known]
        if bad:
            raise InvalidInput(
                f"{where}.events: unknown state(s) {', '.join(bad)}; expected '*' or some of "
                f"{', '.join(s.value for s in State)}"
            )
        fmt = t.get("format", "json")
        if fmt not in FORMATS:
            raise InvalidInput(f"{where}.format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        secret, secret_env = t.get("secret"), _env_name(t.get("secret_env"), "secret_env", where)
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise InvalidInput(f"{where}.secret must be a non-empty string")
        if secret is not None and secret_env is not None:
            raise InvalidInput(f"{where}: give secret or secret_env, not both")
        retries = t.get("retries", 3)
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise InvalidInput(f"{where}.retries must be an integer 0-{MAX_RETRIES}")
        if not 0 <= retries <= MAX_RETRIES:
            raise InvalidInput(f"{where}.retries must be an integer 0-{MAX_RETRIES}")
        timeout = t.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidInput(f"{where}.timeout_s must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise InvalidInput(f"{where}.timeout_s must be in (0, {MAX_TIMEOUT_S:g}]")
        targets.append(
            Target(
                index=i,
                events=frozenset(events),
                format=fmt,
                url=url,
                url_env=url_env,
                secret=secret,
                secret_env=secret_env,
                retries=retries,
                timeout_s=float(timeout),
                mail=_mail(t, where) if email else None,
                sms=_sms(t, url or TWILIO_API, where) if sms else None,
            )
        )
    return targets


ADDRESS = r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+"


def _mail(t: dict[str, Any], where: str) -> Mail:
    import re

    smtp = t.get("smtp")
    m = re.fullmatch(r"([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})", str(smtp or ""))
    if not isinstance(smtp, str) or m is None or not 0 < int(m.group(2)) < 65536:
        raise InvalidInput(f"{where}.smtp must be HOST:PORT of an SMTP server, not {smtp!r}")
    tls = t.get("tls", "starttls")
    if tls not in TLS_MODES:
        raise InvalidInput(f"{where}.tls must be one of {', '.join(TLS_MODES)}, not {tls!r}")
    sender, to = _envelope(t, ADDRESS, "an email address", "email addresses", where)
    user_env = _env_name(t.get("username_env"), "username_env", where)
    pass_env = _env_name(t.get("password_env"), "password_env", where)
    if (user_env is None) != (pass_env is None):
        raise InvalidInput(f"{where}: give username_env and password_env together")
    ca = t.get("ca_cert")
    if ca is not None and (not isinstance(ca, str) or not ca):
        raise InvalidInput(f"{where}.ca_cert must be the path of a CA certificate")
    host = m.group(1).strip("[]")
    return Mail(host, int(m.group(2)), tls, sender, to, user_env, pass_env, ca)


E164 = r"\+[1-9][0-9]{6,14}"


def _envelope(
    t: dict[str, Any], pattern: str, one: str, many: str, where: str
) -> tuple[str, tuple[str, ...]]:
    """``from`` and ``to`` (one or a list), each matching ``pattern``; raises naming the key."""
    import re

    sender, to = t.get("from"), t.get("to")
    if not isinstance(sender, str) or not re.fullmatch(pattern, sender):
        raise InvalidInput(f"{where}.from must be {one}, not {sender!r}")
    to = [to] if isinstance(to, str) else to
    if (
        not isinstance(to, list)
        or not to
        or not all(isinstance(a, str) and re.fullmatch(pattern, a) for a in to)
    ):
        raise InvalidInput(f"{where}.to must be a list of {many}, not {to!r}")
    return sender, tuple(to)


def _sms(t: dict[str, Any], api: str, where: str) -> Sms:
    sender, to = _envelope(
        t, E164, "a phone number like +15005550006", "phone numbers like +15005550006", where
    )
    sid_env = _env_name(t.get("account_sid_env"), "account_sid_env", where)
    token_env = _env_name(t.get("auth_token_env"), "auth_token_env", where)
    if sid_env is None or token_env is None:
        raise InvalidInput(f"{where}: give account_sid_env and auth_token_env")
    return Sms(api.rstrip("/"), sender, to, sid_env, token_env)
