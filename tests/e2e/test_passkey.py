"""Approving with a passkey from the dashboard (issue 14), in headless Chromium with a
virtual WebAuthn authenticator (the Chrome DevTools Protocol's ``WebAuthn`` domain, through
Playwright): bob registers a passkey, a root key holder adds it to root, carol approves with
her key from the CLI and bob from the page; OMEGA and both mainframes check bob's assertion
offline against the root and install the release."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ashat, configure, deploy, wait_for

TIMEOUT_MS = 20_000


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context and page with a virtual platform authenticator (user verified)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    cdp = context.new_cdp_session(pg)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def test_a_passkey_approves_from_the_page_and_the_fleet_checks_it(
    make_chain: Any,
    serve_process: Any,
    page: Any,
    shots: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite, then PostgreSQL."""
    chain = make_chain(approvers=("carol",), k=1)
    monkeypatch.setenv("ASHAT_DB", db_url)
    configure("public", chain.public)
    configure("omega", chain.omega)
    serve = serve_process(chain.root, db_url=db_url)
    # WebAuthn wants a domain, not an IP address, as the relying party
    url = serve.url.replace("127.0.0.1", "localhost")
    bob = serve.add_user("bob", "approver")
    pg = page

    pg.goto(url + "/")
    pg.get_by_label("API token").fill(bob)
    pg.get_by_role("button", name="Sign in").click()
    pg.get_by_role("link", name="Passkeys").click()
    pg.get_by_role("button", name="Register a passkey").click()
    pg.wait_for_url("**/passkeys?done=registered")
    assert "Passkey registered" in pg.locator("#passkey-done").inner_text()
    href = pg.locator("a.passkey-line").get_attribute("href")
    line = pg.context.request.get(url + href).text().strip()
    assert line.startswith(f"webauthn ES256 {url} ")  # the dashboard's exact origin
    pg.screenshot(path=str(shots / "passkey-registered.png"), full_page=True)

    # a root key holder adds bob's passkey; now two approvals are needed
    (chain.root / "bob-passkey.pub").write_text(line + "\n")
    res = ashat("trust", "add-key", "approvers", "bob-passkey.pub", "--name", "bob",
                "--threshold", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert ashat("trust", "sign", "--key", chain.key("root")).exit_code == 0
    (chain.root / "bob-passkey.pub").unlink()

    chain.ship("hello-001", "1.0.1")
    res = deploy("approve", "hello-001", "--key", chain.key("carol"))
    assert res.exit_code == 0 and "Waiting for 1 more" in res.stdout, res.output

    pg.goto(url + "/deployments/hello-001")
    pg.get_by_role("link", name="Approve…").click()
    pg.get_by_label("Comment (optional)").fill("checked on staging")
    pg.get_by_role("button", name="Approve hello-001").click()
    assert "Sign the approval of" in pg.locator("h1").inner_text()
    assert "checked on staging" in pg.locator(".facts").inner_text()
    pg.screenshot(path=str(shots / "passkey-sign.png"), full_page=True)
    pg.get_by_role("button", name="Sign with a passkey and approve").click()
    pg.wait_for_url("**/deployments/hello-001?done=*")
    wait_for(
        lambda: pg.locator("[data-state]").inner_text().strip() == "completed",
        60,
        "the page to show the rollout completed",
    )
    assert chain.currents() == ["hello-001", "hello-001"]
    for mf in chain.mainframes:
        assert mf.health()["fleet"]["root_version"] == 2
    log = deploy("log", "hello-001").stdout
    assert "approval.recorded" in log and "bob" in log
