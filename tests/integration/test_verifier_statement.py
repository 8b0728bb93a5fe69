"""PUBLIC's verification statement says what PUBLIC's own checks ran, not what its caller
claims (DESIGN §10): whoever holds PUBLIC's bearer token — or a hostile ``ashat serve`` —
cannot have the verifier key sign a release as verified by running the server-side checks
with inputs of its own choosing (other modules, an ``allow`` that hides every finding) and
reporting other words. Found in a review: before, each of these was signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle.keys import generate_keypair

PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
OTHERS = [
    {"name": "health", "status": "skipped", "summary": "no app to run"},
    {"name": "api", "status": "passed", "summary": "3 endpoints ok"},
    {"name": "performance", "status": "passed", "summary": "p95 12 ms"},
]


@pytest.fixture
def public(agent_factory: Any, tmp_path: Path) -> Any:
    """PUBLIC with a verifier key, running bad-1: its signed [app] names a module that
    does not import, and it ships a private key."""
    key, _ = generate_keypair("verifier", tmp_path / "keys")
    agent = agent_factory(args=("--verifier-key", str(key)))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "brokenapp.py").write_text("raise ImportError('this release is broken')\n")
    (tree / "id_ed25519").write_text(PRIVATE_KEY)
    agent.deploy(tree, "bad-1", sequence=1, app={"modules": ["brokenapp"]})
    return agent


def _http(agent: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {agent.token}"}
    return httpx.Client(base_url=agent.url, headers=headers, timeout=60)


def _attest(h: httpx.Client, results: list[dict[str, Any]], **settings: Any) -> httpx.Response:
    body = {"results": [*OTHERS, *results], "required": [], "settings": settings}
    return h.post("/v1/releases/bad-1/attest", json=body)


def test_the_module_load_test_loads_the_releases_signed_modules_only(public: Any) -> None:
    with _http(public) as h:
        other = h.post("/v1/releases/bad-1/checks/modules", json={"modules": ["json"]}).json()
        assert other["status"] == "error", other
        assert "not the release's signed [app] modules ['brokenapp']" in other["summary"]
        own = h.post("/v1/releases/bad-1/checks/modules", json={}).json()
        assert own["status"] == "failed" and "brokenapp" in own["summary"], own
        r = _attest(h, [{"name": "modules", "status": "passed", "summary": "Module brokenapp "
                         "loaded successfully"}])  # fmt: skip
        assert r.status_code == 409 and "PUBLIC saw failed" in r.json()["error"], r.text


def test_a_summary_public_did_not_say_is_not_signed(public: Any) -> None:
    with _http(public) as h:
        scan = h.post("/v1/releases/bad-1/checks/security", json={"allow": ["*"]}).json()
        assert scan["status"] == "passed", scan
        made_up = {"name": "security", "status": "passed", "summary": "nothing found at all"}
        r = _attest(h, [made_up])
        assert r.status_code == 409, r.text
        assert "PUBLIC's own scan of bad-1 said" in r.json()["error"]
        # the control side's words after PUBLIC's own are its headers and certificate
        honest = {**made_up, "summary": f"{scan['summary']}; 2 security headers present"}
        assert _attest(h, [honest]).status_code == 200


def test_the_statement_shows_the_allow_list_public_scanned_with(public: Any) -> None:
    """An ``allow = ["*"]`` that hid the private key is in what approvers read and sign,
    whatever settings the caller reported."""
    with _http(public) as h:
        honest = h.post("/v1/releases/bad-1/checks/security", json={}).json()
        assert honest["status"] == "failed" and "id_ed25519" in str(honest["details"]), honest
        hidden = h.post("/v1/releases/bad-1/checks/security", json={"allow": ["*"]}).json()
        result = {"name": "security", "status": "passed", "summary": hidden["summary"]}
        r = _attest(h, [result], security={"allow": [], "require_headers": ["X-Frame-Options"]})
        assert r.status_code == 200, r.text
        settings = r.json()["signed"]["settings"]
        assert settings["security"] == {"allow": ["*"], "require_headers": ["X-Frame-Options"]}


def test_a_database_password_is_never_signed_into_the_statement(public: Any) -> None:
    url = "postgresql://bob:hunter2-secret@127.0.0.1:1/app"
    with _http(public) as h:
        db = h.post("/v1/releases/bad-1/checks/database", json={"url": url}).json()
        assert db["status"] == "failed", db
        result = {"name": "database", "status": "failed", "summary": db["summary"]}
        r = _attest(h, [result], database={"url": url, "expect_schema_version": 3})
        assert r.status_code == 200, r.text
        assert "hunter2" not in r.text
        shown = r.json()["signed"]["settings"]["database"]
        assert shown["url"].startswith("postgresql://bob:") and "127.0.0.1:1/app" in shown["url"]
        assert "expect_schema_version" not in shown  # PUBLIC's run was not asked for one
        assert shown == {"url": shown["url"]}


def test_the_database_check_opens_the_apps_database_never_the_agents_own(public: Any) -> None:
    """A review: the check opens ``sqlite:////any/path`` with the agent's rights and returns
    the first row of a query its caller names — a way for PUBLIC's token to read the
    agent's own files (OMEGA's fleet database, on OMEGA). The app's database is in its
    release or its shared directory."""
    import sqlite3

    own = public.data / "own.db"
    with sqlite3.connect(own) as db:
        db.execute("CREATE TABLE secrets (v TEXT)")
        db.execute("INSERT INTO secrets VALUES ('the agent''s own')")
    shared = public.data / "shared"
    shared.mkdir(exist_ok=True)
    with sqlite3.connect(shared / "app.db") as db:
        db.execute("CREATE TABLE schema_version (version INTEGER)")
        db.execute("INSERT INTO schema_version VALUES (7)")
    query = "SELECT v FROM secrets"
    with _http(public) as h:
        for url in (f"sqlite:///{own}", "sqlite:///../../own.db"):
            answer = h.post(
                "/v1/releases/bad-1/checks/database",
                json={"url": url, "schema_version_query": query},
            ).json()
            assert answer["status"] == "error", answer
            assert "a file of the agent's data directory, not the app's" in answer["summary"]
            assert "the agent's own" not in str(answer)
        app = h.post(
            "/v1/releases/bad-1/checks/database",
            json={"url": "sqlite:///app.db", "schema_version_query": "SELECT version FROM "
                  "schema_version", "expect_schema_version": 7},
        ).json()  # fmt: skip
        assert app["status"] == "passed", app
