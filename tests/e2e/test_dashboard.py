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
waves = [34, 67, 100]
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


WIDTHS = (1280, 1400)
OVERFLOW_JS = """() => {
  const out = [];
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1)
    out.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
  for (const el of document.querySelectorAll('main *')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || el.clientWidth <= 1) continue;  // hidden, or .sr-only
    if (el.scrollWidth > el.clientWidth + 1 && style.overflowX !== 'visible') {
      const cls = typeof el.className === 'string' && el.className
        ? '.' + el.className.split(' ').join('.') : '';
      const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls;
      out.push(`${name} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  return out;
}"""


def assert_fits(pg: Any, shots: Path, name: str) -> None:
    """At each of WIDTHS, neither the page nor any box in it scrolls sideways: nothing is
    cut off (a table in a scrolling box whose last column is out of sight counts)."""
    for width in WIDTHS:
        pg.set_viewport_size({"width": width, "height": 900})
        pg.wait_for_timeout(50)
        over = pg.evaluate(OVERFLOW_JS)
        if over:
            pg.screenshot(path=str(shots / f"overflow-{name}-{width}.png"), full_page=True)
        assert not over, f"{name} at {width} px overflows: {over}"
    pg.set_viewport_size({"width": 1280, "height": 900})


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
    long = [  # what real checks say: long names, paths and URLs with no place to break
        ("security", "Security Scan", "warning", "3 secrets found: config/settings/production_"
         "overrides.py:112 aws_access_key AKIA…MPLE; src/app/very/deep/package/module/with/"
         "a/long/name.py:9 private_key -----BEGIN…"),
        ("performance", "Performance Check", "passed", "p95 41.2 ms over 400 requests to "
         "http://127.0.0.1:48251/api/v1/some/rather/long/endpoint?with=query&and=more (baseline"
         " 39.8 ms, median of the last 5 runs, spread 37.1–44.0 ms)"),
        ("database", "Database Connectivity", "passed", "SELECT 1 on postgresql://app@db.intern"
         "al.example.com:5432/app_production_database_with_a_long_name in 12 ms"),
    ]  # fmt: skip
    store.record_checks(
        "v1",
        [
            {"name": n, "title": t, "status": st, "summary": sm, "duration_s": 12.345}
            for n, t, st, sm in long
        ],
        "alice",
        "2026-12-05T12:00:00.000000Z",
    )
    store.close()
    serve = serve_process(root)
    vera, alice = serve.add_user("vera", "viewer"), serve.add_user("alice", "approver")
    pg = page

    pg.goto(serve.url + "/deployments/v1")
    assert_fits(pg, shots, "login")
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
    assert "Security Scan" in pg.locator("#checks").inner_text()
    assert_fits(pg, shots, "checks")
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
    assert_fits(pg, shots, "approve")
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
    assert_fits(pg, shots, "deployment")
    assert fleet.currents() == ["hello-001"] * 3

    pg.get_by_role("link", name="Mainframes").click()
    assert pg.locator("tbody tr").count() == 3
    assert pg.get_by_role("cell", name="hello-001").count() == 3
    pg.screenshot(path=str(shots / "mainframes.png"), full_page=True)
    assert_fits(pg, shots, "mainframes")
    pg.get_by_role("link", name="Servers").click()
    assert pg.get_by_text("reachable", exact=True).count() == 2
    pg.screenshot(path=str(shots / "servers.png"), full_page=True)
    assert_fits(pg, shots, "servers")
    pg.goto(serve.url + "/passkeys")
    assert_fits(pg, shots, "passkeys")
    pg.goto(serve.url + "/")
    live = pg.locator("tbody tr", has_text="hello-001").locator("[data-live]")
    assert live.all_inner_texts() == ["PUBLIC", "OMEGA", "fleet 3/3"]
    assert_fits(pg, shots, "deployments")
