"""The dashboard in a real browser (headless Chromium, Playwright): signing in and out, what a
viewer sees, a refusal shown on the page, and — with real PUBLIC, OMEGA and three Licensed
Mainframes — approving a verified deployment from the page and watching its rollout
progress, wave by wave, until it is ``completed``, without the page ever reloading."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ashat.store.db import Database, default_sqlite_url
from ashat.store.store import Store
from ashat.workflow.service import Workflow
from ashat.workflow.states import State

THREE_WAVES = """[distribution]
waves = [25, 50, 100]
max_failure_ratio = 0.34
wave_timeout_s = 60
auto_rollback = true
"""
TIMEOUT_MS = 15_000


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    # a refused page (4xx) is reported by the browser as a failed load: that one is expected
    unexpected = [e for e in errors if "status of 4" not in e]
    assert not unexpected, unexpected


def sign_in(pg: Any, url: str, token: str) -> None:
    pg.goto(url + "/")
    assert "/login" in pg.url  # no session: to the login first
    pg.get_by_label("API token").fill(token)
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(url + "/")


def test_sign_in_look_refusal_and_sign_out(
    tmp_path: Path, serve_process: Any, page: Any, shots: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text("")
    store = Store(Database(default_sqlite_url(root)))
    wf = Workflow(store, "alice")
    wf.create("v1", "first release")
    for state in (State.PUSHED, State.VERIFYING, State.VERIFIED):
        wf.move("v1", state)
    store.close()
    serve = serve_process(root)
    vera, alice = serve.add_user("vera", "viewer"), serve.add_user("alice", "approver")
    pg = page

    pg.goto(serve.url + "/deployments/v1")
    pg.get_by_label("API token").fill("ashat_not-a-token")
    pg.get_by_role("button", name="Sign in").click()
    assert "unknown or replaced token" in pg.get_by_role("alert").inner_text()
    pg.screenshot(path=str(shots / "login-refused.png"))

    # a viewer sees everything and no button
    pg.get_by_label("API token").fill(vera)
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(serve.url + "/deployments/v1")  # back where they were going
    assert pg.locator("[data-state]").inner_text() == "verified"
    assert pg.locator("[data-action]").count() == 0
    assert "You can look" in pg.locator("#actions").inner_text()
    cookies = pg.context.cookies()
    assert [c["name"] for c in cookies] == ["ashat_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert vera not in cookies[0]["value"]
    assert pg.evaluate("document.cookie") == ""  # out of reach of scripts
    pg.get_by_role("button", name="Sign out").click()
    assert "You are signed out" in pg.get_by_role("status").inner_text()
    pg.goto(serve.url + "/")
    assert "/login" in pg.url

    # alice may approve, but not what she pushed herself: the refusal is on the page
    sign_in(pg, serve.url, alice)
    pg.get_by_role("link", name="v1").click()
    pg.get_by_role("link", name="Approve…").click()
    pg.get_by_label("Comment (optional)").fill("my own")
    pg.get_by_role("button", name="Approve v1").click()
    alert = pg.get_by_role("alert").inner_text()
    assert "not configured" in alert or "alice" in alert, alert
    assert pg.get_by_label("Comment (optional)").input_value() == "my own"  # kept for a retry
    pg.screenshot(path=str(shots / "approve-refused.png"), full_page=True)
    pg.get_by_role("link", name="Back").click()
    assert pg.locator("[data-state]").inner_text() == "verified"  # nothing changed


def test_approve_from_the_page_and_watch_the_rollout_complete(
    hello_fleet: Any, serve_process: Any, page: Any, shots: Path
) -> None:
    fleet = hello_fleet(3, THREE_WAVES)
    fleet.ship("hello-001", "1.0.0")
    serve = serve_process(fleet.root)
    pg = page
    sign_in(pg, serve.url, serve.add_user("bob", "approver"))

    pg.get_by_label("State").select_option("verified")  # the filter submits itself
    pg.wait_for_url("**/?state=verified*")
    pg.get_by_role("link", name="hello-001").click()
    assert pg.locator("[data-state]").inner_text() == "verified"
    assert "Health Check" in pg.locator("#checks").inner_text()
    pg.get_by_role("link", name="Approve…").click()
    pg.get_by_label("Comment (optional)").fill("ship it")
    pg.screenshot(path=str(shots / "approve-confirm.png"), full_page=True)
    pg.get_by_role("button", name="Approve hello-001").click()
    pg.wait_for_url("**/deployments/hello-001?done=approved")
    assert "rollout started" in pg.get_by_role("status").first.inner_text()

    # from here on the page is never reloaded: it asks /live and swaps what changed
    pg.evaluate("window.__sameDocument = true")
    seen: list[tuple[str, str]] = []
    mid_shot = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = pg.locator("[data-state]").inner_text()
        installed = pg.locator("#rollout-body [data-installed]").first.inner_text()
        if not seen or seen[-1] != (state, installed):
            seen.append((state, installed))
        if state == "distributing" and installed in ("1", "2") and not mid_shot:
            pg.screenshot(path=str(shots / "rollout-live.png"), full_page=True)
            mid_shot = True
        if state == "completed":
            break
        time.sleep(0.1)
    assert seen[-1] == ("completed", "3"), seen
    assert ("distributing", "0") in seen or any(
        s == "distributing" and i in ("1", "2") for s, i in seen
    ), seen  # the rollout was watched while it ran
    assert pg.evaluate("window.__sameDocument") is True
    waves = pg.locator("#rollout-body table.waves tbody tr")
    assert waves.count() == 3
    assert [waves.nth(i).locator("td").first.inner_text() for i in range(3)] == ["done"] * 3
    pg.wait_for_function(
        "document.getElementById('live-status').textContent.startsWith('Finished')"
    )
    # the sections swapped in place tell the rest
    assert "ship it" in pg.locator("#approvals").inner_text()
    assert "completed" in pg.locator("#steps").inner_text()
    assert "deployment.completed" in pg.locator("#events").inner_text()
    assert pg.locator("[data-action]").all_inner_texts() == ["Roll back…"]
    pg.screenshot(path=str(shots / "rollout-completed.png"), full_page=True)
    assert fleet.currents() == ["hello-001"] * 3

    pg.get_by_role("link", name="Mainframes").click()
    assert pg.locator("tbody tr").count() == 3
    assert pg.get_by_role("cell", name="hello-001").count() == 3
    pg.screenshot(path=str(shots / "mainframes.png"), full_page=True)
    pg.get_by_role("link", name="Servers").click()
    assert pg.get_by_text("reachable", exact=True).count() == 2
    pg.screenshot(path=str(shots / "servers.png"), full_page=True)
