"""Email notifications against a real SMTP server on loopback (aiosmtpd, a test extra):
STARTTLS with a login, the plain-text and HTML parts, and a refused login recorded as a
failure while the deployment goes on (issue 21)."""

from __future__ import annotations

import email
import socket
import ssl
from collections.abc import Iterator
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest

from ashat.notify.config import parse_targets
from ashat.notify.delivery import Dispatcher
from ashat.notify.messages import render
from ashat.workflow.models import Change, Deployment
from ashat.workflow.states import State

USER, PASSWORD = "ashat-bot", "smtp-pass-9c1e"


def change() -> Change:
    dep = Deployment(
        "hello-001", State.COMPLETED, "first <release>", "alice", "2030-01-01T00:00:00Z",
        "2030-01-01T00:01:00Z", reason=None, details={},
    )  # fmt: skip
    return Change(dep, State.DISTRIBUTING, "bob", "2030-01-01T00:01:00Z")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Any]:
    aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="pip install -e '.[test]'")
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from process_fixtures import _tls_files

    cert, key = _tls_files(tmp_path)
    received: list[EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = _free_port()
    controller = aiosmtpd.Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        yield port, cert, received
    finally:
        controller.stop()


def send(table: dict[str, Any]) -> tuple[Dispatcher, list[str]]:
    (target,) = parse_targets([{"format": "email", "events": ["*"], **table}])
    failures: list[str] = []
    dispatcher = Dispatcher(lambda m, t, why, n: failures.append(why))
    dispatcher.submit(target, render(change(), "shop", "email"))
    assert dispatcher.flush(20) == 0
    return dispatcher, failures


def test_an_email_goes_out_over_starttls_with_a_login(
    smtp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert, received = smtp
    monkeypatch.setenv("SMTP_USER", USER)
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    table = {
        "smtp": f"127.0.0.1:{port}",
        "from": "ashat@example.com",
        "to": ["ops@example.com", "oncall@example.com"],
        "username_env": "SMTP_USER",
        "password_env": "SMTP_PASSWORD",
        "ca_cert": str(cert),
    }
    dispatcher, failures = send(table)
    assert failures == [] and dispatcher.delivered == 1
    (msg,) = received
    assert msg["Subject"] == "[shop] hello-001 is completed"
    assert msg["To"] == "ops@example.com, oncall@example.com"
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in msg.walk()
        if not p.is_multipart()
    }
    assert "State: completed" in parts["text/plain"] and "By: bob" in parts["text/plain"]
    assert "first &lt;release&gt;" in parts["text/html"]  # escaped

    # A wrong password: refused, recorded as a failure, never retried, the password unsaid.
    monkeypatch.setenv("SMTP_PASSWORD", "not-it")
    dispatcher, failures = send(table)
    assert dispatcher.failed == 1 and len(received) == 1
    assert failures == ["the SMTP server refused the login (535)"]


def test_bad_email_settings_are_refused_naming_the_key() -> None:
    from ashat.errors import InvalidInput

    base = {"format": "email", "smtp": "mail.example.com:587", "from": "a@example.com",
            "to": ["b@example.com"]}  # fmt: skip
    for key, value, needle in [
        ("smtp", "mail.example.com", ".smtp must be HOST:PORT"),
        ("tls", "ssl", ".tls must be one of starttls, tls, none"),
        ("from", "nobody", ".from must be an email address"),
        ("to", [], ".to must be a list of email addresses"),
        ("url", "https://x.example", "unknown key(s) url"),
        ("username_env", "SMTP_USER", "username_env and password_env together"),
    ]:
        with pytest.raises(InvalidInput, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_targets([{**base, key: value}])
