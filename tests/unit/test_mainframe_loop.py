"""The mainframe loop's own state (ashat.fleet.mainframe): the report queue kept in
``fleet.json``, what ``/v1/health`` shows of OMEGA, and refusals logged once per reason."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from ashat.agent.config import AgentConfig, AgentRole, MainframeConfig
from ashat.agent.core import Agent
from ashat.bundle.keys import SigningKey
from ashat.errors import InvalidInput
from ashat.fleet.mainframe import (
    LicenseRefusedByOmega,
    Mainframe,
    OmegaError,
    ReportQueue,
    omega_tls,
)

KEY = SigningKey.generate()


def mainframe_config(**over: object) -> MainframeConfig:
    args: dict = {
        "omega_url": "http://omega.test:8700",
        "license": "license.x.y",
        "mainframe_id": "mf-1",
        "license_id": "lic-1",
        "trusted_omega": {KEY.keyid: KEY.public},
        **over,
    }
    return MainframeConfig(**args)


def make_mainframe(data: Path, **over: object) -> Mainframe:
    """A mainframe's loop over a real agent in ``data`` (``over``: MainframeConfig fields)."""
    config = AgentConfig(
        role=AgentRole.MAINFRAME,
        data=data,
        host="127.0.0.1",
        port=0,
        token="t",
        trusted={KEY.keyid: KEY.public},
        mainframe=mainframe_config(**over),
        app_user=os.environ.get("ASHAT_APP_USER"),
    )
    agent = Agent(config)
    agent.open()
    return Mainframe(agent, config.mainframe)  # type: ignore[arg-type]


@pytest.fixture
def mainframe(tmp_path: Path) -> Mainframe:
    return make_mainframe(tmp_path / "data")


def report(rollout: str, status: str = "installed") -> dict:
    return {"rollout_id": rollout, "update_id": "u-1", "status": status, "reason": None}


def test_report_queue_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    q = ReportQueue(path)
    q.put(report("ro-1", "failed"))
    q.put(report("ro-2"))
    q.put(report("ro-1", "installed"))  # replaces the earlier one for ro-1
    again = ReportQueue(path)
    assert [(r["rollout_id"], r["status"]) for r in again.items] == [
        ("ro-2", "installed"),
        ("ro-1", "installed"),
    ]
    again.done(again.items[0])
    assert [r["rollout_id"] for r in ReportQueue(path).items] == ["ro-1"]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", ["{not json", "[]", '{"pending_reports": 3}'])
def test_a_corrupt_queue_starts_empty(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(text)
    assert ReportQueue(path).items == []
    assert "fleet.json" in caplog.text


def test_health_before_the_first_poll(mainframe: Mainframe) -> None:
    assert mainframe.status() == {
        "omega": "http://omega.test:8700",
        "mainframe_id": "mf-1",
        "license_id": "lic-1",
        "last_poll": None,
        "last_authenticated": None,
        "last_error": None,
        "license_status": "unknown",
        "last_install": None,
        "blobs_from": None,  # no install yet
        "root_version": None,  # started without --root
        "root_expires": None,
        "pending_reports": 0,
    }
    assert mainframe.agent.health()["fleet"] == mainframe.status()


def test_a_refusal_is_logged_once_per_reason(
    mainframe: Mainframe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ashat.fleet")
    expired = LicenseRefusedByOmega("expired", "license lic-1 expired at 2030-01-01")
    for _ in range(3):
        asyncio.run(mainframe._note_refusal(expired))
    revoked = LicenseRefusedByOmega("revoked", "license lic-1 has been revoked")
    asyncio.run(mainframe._note_refusal(revoked))
    asyncio.run(mainframe._note_refusal(revoked))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "license refused by OMEGA: expired — keeping no release (license lic-1 expired at "
        "2030-01-01)",
        "license refused by OMEGA: revoked — keeping no release (license lic-1 has been revoked)",
    ]
    status = mainframe.status()
    assert status["license_status"] == "revoked" and "revoked" in status["last_error"]

    mainframe._note_ok()  # a poll accepted again
    assert mainframe.status()["license_status"] == "ok"
    assert mainframe.status()["last_error"] is None
    assert caplog.records[-1].getMessage() == "license accepted by OMEGA again"
    asyncio.run(mainframe._note_refusal(revoked))  # refused again later: said again
    assert caplog.records[-1].getMessage().startswith("license refused by OMEGA: revoked")


def test_connection_errors_are_logged_when_they_change(
    mainframe: Mainframe, caplog: pytest.LogCaptureFixture
) -> None:
    for message in ["cannot reach OMEGA: refused"] * 3 + ["OMEGA did not answer in time"]:
        mainframe._note_unreachable(OmegaError(message))
    assert [r.getMessage() for r in caplog.records] == [
        "cannot reach OMEGA: refused; retrying",
        "OMEGA did not answer in time; retrying",
    ]
    assert mainframe.status()["last_error"] == "OMEGA did not answer in time"


def test_mainframe_config_refuses_bad_values() -> None:
    with pytest.raises(InvalidInput, match="http"):
        mainframe_config(omega_url="ftp://omega")
    with pytest.raises(InvalidInput, match="--poll-wait"):
        mainframe_config(poll_wait_s=61)
    with pytest.raises(InvalidInput, match="--trust-omega"):
        mainframe_config(trusted_omega={})
    assert "license.x.y" not in repr(mainframe_config())


def test_only_a_mainframe_has_a_mainframe_config(tmp_path: Path) -> None:
    base = {
        "data": tmp_path,
        "host": "127.0.0.1",
        "port": 0,
        "token": "t",
        "trusted": {KEY.keyid: KEY.public},
    }
    with pytest.raises(InvalidInput, match="only a mainframe"):
        AgentConfig(role=AgentRole.MAINFRAME, **base)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="only a mainframe"):
        AgentConfig(role=AgentRole.PUBLIC, mainframe=mainframe_config(), **base)  # type: ignore[arg-type]


def test_a_bad_omega_ca_cert_is_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(InvalidInput, match="--omega-ca-cert"):
        omega_tls(mainframe_config(omega_ca_cert=bad))
    # no CA file: the system's CAs, loaded once per process (and per SSL_CERT_* setting)
    from ashat.transport.outgoing import system_tls

    assert omega_tls(mainframe_config()) is system_tls()


def test_an_answer_dripped_slowly_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow retrieval: a byte every 50 ms never trips the read timeout, but a request has a
    total deadline (its wait plus TOTAL_S; 0.5 s here), and OMEGA is then 'unreachable'."""
    import http.server
    import threading
    import time

    from ashat.fleet import mainframe as mainframe_module

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(mainframe_module, "TOTAL_S", 0.5)
    mf = make_mainframe(tmp_path / "data", omega_url=f"http://127.0.0.1:{server.server_address[1]}")

    async def go() -> None:
        async with mf._client() as http_client:
            await mf._request(http_client, "GET", "/v1/fleet/poll")

    started = time.monotonic()
    try:
        with pytest.raises(OmegaError) as e:
            asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()
    assert "took more than 0.5s" in e.value.message
    assert time.monotonic() - started < 5


def test_omegas_error_text_reaches_the_log_without_terminal_escapes(
    mainframe: Mainframe,
) -> None:
    """A review: a 403's ``error`` holding ``\\x1b[31m…`` (or a cursor move) was logged and
    shown in /v1/health as it came."""
    said = mainframe._error_of(403, {"error": "license \x1b[31mrevoked\x1b[0m\r\x1b[2Kok"})
    assert "\x1b" not in said and "\r" not in said, repr(said)
    assert said.startswith("license ") and "revoked" in said
