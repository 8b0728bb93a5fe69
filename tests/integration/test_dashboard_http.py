"""The web dashboard of ``ashat serve`` over HTTP, against a real ``ashat serve`` process:
signing in and out, what each role sees, actions refused (signed out, no or a wrong CSRF
token, another origin, a role too weak) with nothing changed, actions done as the signed-in
user, and — with real PUBLIC, OMEGA and mainframes — approving and rolling back from the
pages while the live endpoint reports the rollout."""

from __future__ import annotations

import contextlib
import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.store.db import Database, default_sqlite_url
from ashat.store.store import Store
from ashat.workflow.service import Workflow
from ashat.workflow.states import State

ROLES = ("viewer", "deployer", "approver", "admin")
PEOPLE = {"viewer": "vera", "deployer": "dave", "approver": "bob", "admin": "ada"}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
TO_VERIFIED = (State.PUSHED, State.VERIFYING, State.VERIFIED)


def csrf_of(page: str) -> str:
    m = CSRF_RE.search(page)
    assert m, "no CSRF field on the page"
    return m.group(1)


def alert_of(page: str) -> str:
    m = re.search(r'class="alert bad" role="alert"[^>]*>([^<]*)<', page)
    assert m, "no error shown on the page"
    return html.unescape(m.group(1))


def actions_on(page: str) -> set[str]:
    return set(re.findall(r'data-action="(\w+)"', page))


@dataclass
class Site:
    root: Path
    url: str
    tokens: dict[str, str]  # by role

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False, headers=headers)

    @contextlib.contextmanager
    def signed_in(self, role: str) -> Iterator[httpx.Client]:
        with self.client() as c:
            res = c.post("/login", data={"token": self.tokens[role], "next": "/"})
            assert res.status_code == 303, res.text
            yield c

    def store(self) -> Store:
        return Store(Database(default_sqlite_url(self.root)))

    def state(self, update_id: str) -> str:
        s = self.store()
        try:
            return s.require(update_id).state.value
        finally:
            s.close()

    def snapshot(self) -> dict[str, Any]:
        s = self.store()
        try:
            return {
                "audit": s.db.query("SELECT seq, hash FROM audit_head"),
                "deployments": [(d.id, d.state.value, d.updated_at) for d in s.list(1000)],
                "approvals": s.db.query("SELECT * FROM approvals ORDER BY deployment_id"),
            }
        finally:
            s.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, module_serve_process: Any) -> Site:
    root = tmp_path_factory.mktemp("dash") / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text("[approval]\nrequired = 2\n")
    store = Store(Database(default_sqlite_url(root)))
    wf = Workflow(store, "alice")
    for update_id in ("p1", "p2", "p3"):
        wf.create(update_id, f"pushed {update_id}")
        wf.move(update_id, State.PUSHED)
    for update_id in ("v1", "v2"):
        wf.create(update_id, f"release <b>{update_id}</b>")
        for state in TO_VERIFIED:
            wf.move(update_id, state)
    store.close()
    serve = module_serve_process(root)
    tokens = {role: serve.add_user(PEOPLE[role], role) for role in ROLES}
    return Site(root, serve.url, tokens)


# == signing in and out ===================================================================


def test_pages_need_a_session(site: Site) -> None:
    with site.client() as c:
        for path in ("/", "/deployments/v1", "/servers", "/mainframes", "/deployments/v1/approve"):
            res = c.get(path)
            assert res.status_code == 303, path
            assert res.headers["location"].startswith("/login?next=/"), res.headers
        res = c.get("/deployments/v1/live")
        assert res.status_code == 401 and res.json()["kind"] == "unauthenticated"
        res = c.get("/login?next=/deployments/v1")
        assert res.status_code == 200 and 'name="token"' in res.text
        assert 'value="/deployments/v1"' in res.text


def test_login_sets_a_signed_session_cookie_that_holds_no_token(site: Site) -> None:
    token = site.tokens["approver"]
    with site.client() as c:
        res = c.post("/login", data={"token": token, "next": "/deployments/v1"})
        assert res.status_code == 303 and res.headers["location"] == "/deployments/v1"
        cookie = res.headers["set-cookie"]
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert cookie.startswith("ashat_session=")
        assert {"httponly", "samesite=strict", "path=/"} <= set(attrs), cookie
        assert token not in cookie and token.removeprefix("ashat_") not in cookie
        page = c.get("/deployments/v1")
        assert page.status_code == 200 and "bob" in page.text and "approver" in page.text
        # a cookie changed by one character is no session at all
        value = c.cookies["ashat_session"]
        forged = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    with site.client() as c:
        c.cookies.set("ashat_session", forged)
        assert c.get("/").status_code == 303


def test_behind_a_tls_proxy_on_loopback_the_cookie_is_secure_and_https_is_the_origin(
    site: Site,
) -> None:
    """``--forwarded-allow-ips`` (default 127.0.0.1): a proxy there says the client used
    https; the session cookie is then Secure, and the form's https origin is this site's."""
    host = site.url.removeprefix("http://")
    proxied = {"X-Forwarded-Proto": "https", "Origin": f"https://{host}"}
    with site.client() as c:
        res = c.post("/login", data={"token": site.tokens["viewer"]}, headers=proxied)
        assert res.status_code == 303, res.text
        attrs = [a.strip().lower() for a in res.headers["set-cookie"].split(";")]
        assert "secure" in attrs
        # without the proxy's word, an https origin is another site's
        res = c.post(
            "/login",
            data={"token": site.tokens["viewer"]},
            headers={"Origin": f"https://{host}"},
        )
        assert res.status_code == 403


def test_login_refusals(site: Site) -> None:
    with site.client() as c:
        for bad in ("", "nope", "ashat_" + "A" * 43):
            res = c.post("/login", data={"token": bad})
            assert res.status_code == 401 and "unknown or replaced token" in alert_of(res.text)
            assert "set-cookie" not in res.headers
        res = c.post(
            "/login",
            data={"token": site.tokens["viewer"]},
            headers={"Origin": "http://evil.example"},
        )
        assert res.status_code == 403 and "set-cookie" not in res.headers
        res = c.post(
            "/login", content=b'{"token": "x"}', headers={"Content-Type": "application/json"}
        )
        assert res.status_code == 400
        # where to go afterwards is a path on this server, never another site
        for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            res = c.post("/login", data={"token": site.tokens["viewer"], "next": evil})
            assert res.headers["location"] == "/", evil


def test_logout_needs_the_csrf_token_and_clears_the_cookie(site: Site) -> None:
    with site.signed_in("viewer") as c:
        csrf = csrf_of(c.get("/").text)
        copied = c.cookies["ashat_session"]  # as stolen from the browser before signing out
        assert c.post("/logout", data={}).status_code == 403
        assert c.get("/").status_code == 200  # still signed in
        res = c.post("/logout", data={"csrf": csrf})
        assert res.status_code == 303 and res.headers["location"] == "/login?out=1"
        assert (
            'ashat_session=""' in res.headers["set-cookie"]
            or "Max-Age=0" in (res.headers["set-cookie"])
        )
        assert c.get("/").status_code == 303
        assert "You are signed out" in c.get("/login?out=1").text
    with site.client() as c:  # signing out ended the session itself, not just this cookie
        c.cookies.set("ashat_session", copied)
        assert c.get("/").status_code == 303
        assert c.get("/deployments/v1/live").status_code == 401
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303  # again: harmless
    with site.signed_in("viewer") as c:  # a new session of the same user is not ended
        assert c.get("/").status_code == 200


def test_a_replaced_token_or_a_removed_user_ends_the_session(site: Site) -> None:
    from ashat.ops.project import Project
    from ashat.ops.users import add_user, issue_token, remove_user

    project = Project(site.root)
    try:
        add_user(project, "tim", "viewer", actor="test")
        token = issue_token(project, "tim", actor="test")[1]
        with site.client() as c:
            assert c.post("/login", data={"token": token}).status_code == 303
            assert c.get("/").status_code == 200
            issue_token(project, "tim", actor="test")  # replaces the token
            assert c.get("/").status_code == 303
        token = issue_token(project, "tim", actor="test")[1]
        with site.client() as c:
            assert c.post("/login", data={"token": token}).status_code == 303
            remove_user(project, "tim", actor="test")
            assert c.get("/").status_code == 303
    finally:
        project.close()


# == what each role sees ==================================================================


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_for_every_role(site: Site, role: str) -> None:
    with site.signed_in(role) as c:
        listing = c.get("/")
        assert listing.status_code == 200
        assert {"v1", "v2", "p1"} <= set(re.findall(r'href="/deployments/([\w.-]+)"', listing.text))
        page = c.get("/deployments/v1")
        assert page.status_code == 200
        assert "release &lt;b&gt;v1&lt;/b&gt;" in page.text  # escaped, never markup
        assert "0 of 2 required" in page.text
        assert 'data-live="/deployments/v1/live"' in page.text
        expected = {
            "viewer": set(),
            "deployer": {"cancel"},
            "approver": {"approve", "rollback", "cancel"},
            "admin": {"approve", "rollback", "cancel"},
        }[role]
        assert actions_on(page.text) == expected
        live = c.get("/deployments/v1/live").json()
        assert live["state"] == "verified" and live["poll_ms"] == 5000
        assert "No rollout" in live["html"]["rollout"]
        servers = c.get("/servers")
        assert servers.status_code == 200 and "No servers yet" in servers.text
        mainframes = c.get("/mainframes")
        assert mainframes.status_code == 400  # as the API answers: OMEGA is not configured
        assert "OMEGA is not configured" in alert_of(mainframes.text)
        for action in ("approve", "rollback", "cancel"):
            confirm = c.get(f"/deployments/v1/{action}")
            assert confirm.status_code == (200 if action in expected else 403), (role, action)


def test_pages_are_not_cached_or_framed(site: Site) -> None:
    with site.signed_in("viewer") as c:
        res = c.get("/deployments/v1")
        csp = res.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert res.headers["cache-control"] == "no-store"
        assert res.headers["x-frame-options"] == "DENY"
        assert c.get("/static/dashboard.js").status_code == 200
        assert "text/css" in c.get("/static/dashboard.css").headers["content-type"]


def test_the_list_filters_by_state(site: Site) -> None:
    with site.signed_in("viewer") as c:
        res = c.get("/?state=verified&limit=20")
        ids = set(re.findall(r'href="/deployments/([\w.-]+)"', res.text))
        assert ids == {"v1", "v2"}
        res = c.get("/?state=sleeping")
        assert res.status_code == 400 and "unknown state 'sleeping'" in alert_of(res.text)
        assert c.get("/deployments/nope").status_code == 404
        assert c.get("/deployments/BAD!").status_code == 400


# == actions: refused, changing nothing ===================================================

ACTIONS = [
    ("/deployments/p1/cancel", {"reason": "no"}, "deployer"),
    ("/deployments/v1/approve", {"comment": "ok"}, "approver"),
    ("/deployments/p2/rollback", {"reason": "no"}, "approver"),
]


@pytest.mark.parametrize(("path", "form", "needs"), ACTIONS)
@pytest.mark.parametrize(
    "how", ["signed out", "no csrf", "wrong csrf", "other origin", "too weak", "json body"]
)
def test_actions_are_refused_and_change_nothing(
    site: Site, path: str, form: dict[str, str], needs: str, how: str
) -> None:
    role = ROLES[ROLES.index(needs) - 1] if how == "too weak" else needs
    with site.client() if how == "signed out" else site.signed_in(role) as c:
        csrf = "x" * 43 if how == "signed out" else csrf_of(c.get("/").text)
        body = dict(form)
        headers = {}
        if how != "no csrf":
            body["csrf"] = "x" * 43 if how == "wrong csrf" else csrf
        if how == "other origin":
            headers["Origin"] = "http://evil.example"
        before = site.snapshot()
        if how == "json body":
            res = c.post(path, json=body, headers=headers)
        else:
            res = c.post(path, data=body, headers=headers)
        expected = {"signed out": 401, "json body": 400}.get(how, 403)
        assert res.status_code == expected, res.text
        assert alert_of(res.text)
        if how == "too weak":
            assert f"needs {needs} or higher" in alert_of(res.text)
        assert site.snapshot() == before


def test_a_refusal_of_the_state_machine_is_shown_and_changes_nothing(site: Site) -> None:
    with site.signed_in("approver") as c:
        confirm = c.get("/deployments/p3/approve")
        assert "p3 is pushed: it cannot be approved now" in confirm.text
        assert '<form method="post" action="/deployments/p3/approve"' not in confirm.text
        before = site.snapshot()
        res = c.post("/deployments/p3/approve", data={"csrf": csrf_of(confirm.text)})
        assert res.status_code == 409
        assert "pushed" in alert_of(res.text) and "approve" in alert_of(res.text)
        res = c.post(
            "/deployments/v2/cancel", data={"csrf": csrf_of(confirm.text), "reason": "x" * 501}
        )
        assert res.status_code == 400 and "reason" in alert_of(res.text)
        assert site.snapshot() == before


def test_cancel_and_a_first_approval_are_done_as_the_signed_in_user(site: Site) -> None:
    with site.signed_in("deployer") as c:
        confirm = c.get("/deployments/p1/cancel")
        assert confirm.status_code == 200 and "Cancel deployment p1" in confirm.text
        # a textarea's line breaks come as CRLF (a review: refused as control characters)
        reason = "wrong branch\r\nsee INC-12"
        res = c.post(
            "/deployments/p1/cancel", data={"csrf": csrf_of(confirm.text), "reason": reason}
        )
        assert res.status_code == 303, res.text
        assert res.headers["location"] == "/deployments/p1?done=cancelled"
        page = c.get(res.headers["location"])
        assert 'role="status">Cancelled.' in page.text and "wrong branch see INC-12" in page.text
    assert site.state("p1") == "cancelled"
    # [approval] required = 2: bob's approval is recorded and nothing is released yet
    with site.signed_in("approver") as c:
        confirm = c.get("/deployments/v2/approve")
        res = c.post(
            "/deployments/v2/approve", data={"csrf": csrf_of(confirm.text), "comment": "looks good"}
        )
        assert res.status_code == 400  # PUBLIC and OMEGA are not configured: checked first
        assert "not configured" in alert_of(res.text)
    s = site.store()
    try:
        events = s.events("p1")
        assert events[-1].kind == "deployment.cancelled" and events[-1].actor == "dave"
        assert s.approvals("v2") == []
    finally:
        s.close()


# == with real agents: approve, watch, roll back ==========================================


def test_approve_and_roll_back_from_the_dashboard(hello_fleet: Any, serve_process: Any) -> None:
    fleet = hello_fleet(2)
    fleet.ship("hello-001", "1.0.0")
    serve = serve_process(fleet.root)
    site = Site(
        fleet.root,
        serve.url,
        {"approver": serve.add_user("bob", "approver"), "viewer": serve.add_user("vera", "viewer")},
    )

    with site.signed_in("viewer") as c:
        servers = c.get("/servers").text
        assert servers.count("reachable</span>") == 2 and "unreachable" not in servers
        assert "<code>hello-001</code>" in servers  # PUBLIC runs it
        mainframes = c.get("/mainframes").text
        assert "mf-0" in mainframes and "mf-1" in mainframes and "ACME" in mainframes
        assert mainframes.count(">ok</span>") == 2

    with site.signed_in("approver") as c:
        seen = approve_and_follow(c, "hello-001", "ship it")
        live = seen[-1]
        assert live["poll_ms"] is None  # the page stops asking
        assert live["rollout"]["totals"]["installed"] == 2
        assert [w["state"] for w in live["rollout"]["waves"]] == ["done", "done"]
        assert "<strong data-installed>2</strong>" in live["html"]["rollout"]
        # what each mainframe should run, and why (issue 19)
        mainframes = c.get("/mainframes").text
        assert mainframes.count('data-desired="hello-001"') == 2
        assert "channel stable: ro-" in mainframes and "os=linux" in mainframes
        assert any(s["state"] == "distributing" and s["rollout"] for s in seen)
        page = c.get("/deployments/hello-001").text
        assert "ship it" in page and "approval.recorded" in page
        assert actions_on(page) == {"rollback"}

        # the first release has nothing before it: the refusal is on the page
        before = site.snapshot()
        confirm = c.get("/deployments/hello-001/rollback")
        assert "OMEGA and every mainframe" in confirm.text
        res = c.post(
            "/deployments/hello-001/rollback",
            data={"csrf": csrf_of(confirm.text), "reason": "why not"},
        )
        assert res.status_code == 409  # OMEGA's refusal (409) stays a refusal, exit 3
        assert "nothing to roll back to" in alert_of(res.text)
        assert site.snapshot() == before

        fleet.ship("hello-002", "2.0.0")
        approve_and_follow(c, "hello-002", None)
        assert fleet.currents() == ["hello-002", "hello-002"]
        confirm = c.get("/deployments/hello-002/rollback")
        res = c.post(
            "/deployments/hello-002/rollback",
            data={"csrf": csrf_of(confirm.text), "reason": "customer report"},
        )
        assert res.status_code == 303, res.text
        assert res.headers["location"] == "/deployments/hello-002?done=rolled-back"
        page = c.get(res.headers["location"]).text
        assert "Rolled back." in page and "customer report" in page
        # the page keeps the forward rollout and shows the rollback beside it (issue 18, 3)
        assert "Rollout <code>" in page and "Rollback <code>" in page, page
        assert "to <code>hello-001</code>" in page
        assert page.count('class="grid waves"') == 2
    assert site.state("hello-002") == "rolled_back"
    assert fleet.currents() == ["hello-001", "hello-001"]
    s = site.store()
    try:
        actors = {e.kind: e.actor for e in s.events("hello-002")}
        assert actors["approval.recorded"] == "bob"
        assert actors["deployment.rolled_back"] == "bob"
        assert [a["comment"] for a in s.approvals("hello-001")] == ["ship it"]
    finally:
        s.close()


def approve_and_follow(c: httpx.Client, update_id: str, comment: str | None) -> list[Any]:
    """Approve through the confirmation page, then poll the live endpoint until completed."""
    confirm = c.get(f"/deployments/{update_id}/approve")
    assert "1 of 1 passed" in confirm.text
    res = c.post(
        f"/deployments/{update_id}/approve",
        data={"csrf": csrf_of(confirm.text), "comment": comment or ""},
    )
    assert res.status_code == 303, res.text
    assert res.headers["location"] == f"/deployments/{update_id}?done=approved"
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.append(c.get(f"/deployments/{update_id}/live").json())
        if seen[-1]["state"] != "distributing":
            break
        time.sleep(0.1)
    assert seen[-1]["state"] == "completed", seen[-1]
    return seen
