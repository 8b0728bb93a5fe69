"""``deploy verify`` against a real PUBLIC agent running examples/hello-service: it passes all
six checks, and each check can fail (exit 1, naming the check and why)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ashat.store.db import Database, default_sqlite_url
from ashat.store.store import Store
from support import configure, deploy, deploy_json, enter_hello_project, wait_for

PEM_KEY = (  # split so that this file itself does not look like a leaked key
    "-----BEGIN " + "PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ+fake+but+shaped+like+a+key+abcdefghij\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.fixture
def pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> Callable[..., Path]:
    """Push (a variant of) hello-service as ``hello-001``; return the project root."""

    def make(
        edit: Callable[[Path], None] | None = None, *, tls: bool = False, extra_toml: str = ""
    ) -> Path:
        agent = agent_factory(tls=tls)
        root = enter_hello_project(tmp_path / "alpha", monkeypatch, agent.key_path)
        if extra_toml:
            (root / "ashat.toml").write_text((root / "ashat.toml").read_text() + extra_toml)
        if edit:
            edit(root)
        configure("public", agent, "Staging")
        res = deploy("push", "hello-001", "for verification")
        assert res.exit_code == 0, res.output
        return root

    return make


def by_name(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in out["checks"]}


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_hello_service_passes_all_six_checks(pushed: Any) -> None:
    pushed()
    res = deploy("verify", "hello-001")
    assert res.exit_code == 0, res.output
    assert "ASHAT Deployment Verification" in res.stdout
    for title in (
        "Health Check", "Module Load Test", "API Endpoint Test", "Database Connection",
        "Performance Baseline", "Security Scan",
    ):  # fmt: skip
        assert f"✅ {title}:" in res.stdout
    assert "Verification PASSED!" in res.stdout
    _, status = deploy_json("status", "hello-001")
    assert status["deployment"]["state"] == "verified"
    assert {c["status"] for c in status["checks"]} == {"passed"}
    log = deploy("log", "hello-001").stdout
    assert "check.performance" in log and "baseline.updated" in log


def test_json_prints_every_result_and_only_reruns_chosen_checks(pushed: Any) -> None:
    pushed()
    code, out = deploy_json("verify", "hello-001")
    assert code == 0 and out["passed"] and len(out["results"]) == 6
    for r in out["results"]:
        assert set(r) >= {"name", "title", "status", "summary", "details", "duration_s"}
    code, out = deploy_json("verify", "hello-001", "--only", "health", "--only", "api")
    assert code == 0 and [r["name"] for r in out["results"]] == ["health", "api"]
    assert len(out["checks"]) == 6  # the others kept from the first run
    res = deploy("verify", "hello-001", "--only", "nonsense")
    assert res.exit_code == 2 and "unknown check" in res.stderr


def _fails(check: str, fragment: str) -> None:
    code, out = deploy_json("verify", "hello-001")
    assert code == 1, out
    result = by_name(out)[check]
    assert result["status"] == "failed", result
    assert fragment in result["summary"], result["summary"]
    assert out["state"] == "verification_failed"
    human = deploy("verify", "hello-001", "--only", check)
    assert human.exit_code == 1
    assert "Verification FAILED" in human.stdout and result["title"] in human.stdout


def with_a_broken_module(root: Path) -> None:
    """A module that raises on import, listed in ``[app] modules``."""
    (root / "hello_service" / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    replace_in(
        root / "ashat.toml",
        '"hello_service.db"]',
        '"hello_service.db", "hello_service.broken"]',
    )


def test_module_that_raises_on_import_fails_the_module_check(pushed: Any) -> None:
    pushed(with_a_broken_module)
    _fails("modules", "hello_service.broken")


def test_endpoint_with_wrong_status_or_shape_fails_the_api_check(pushed: Any) -> None:
    pushed(extra_toml='\n[[verify.api]]\nmethod = "GET"\npath = "/api/nope"\nexpect_status = 200\n')
    _fails("api", "/api/nope")


def test_json_schema_mismatch_fails_the_api_check(pushed: Any) -> None:
    extra = (
        '\n[[verify.api]]\npath = "/api/items"\n'
        '[verify.api.schema]\ntype = "object"\nrequired = ["total_count"]\n'
    )
    pushed(extra_toml=extra)
    _fails("api", "schema")


def test_unreachable_database_fails_the_database_check(pushed: Any) -> None:
    def edit(root: Path) -> None:
        replace_in(
            root / "ashat.toml",
            'url = "sqlite:///hello.db"',
            'url = "sqlite:///missing.db"',
        )

    pushed(edit)
    _fails("database", "does not exist")


def test_slow_endpoint_over_the_limit_fails_performance(pushed: Any) -> None:
    def edit(root: Path) -> None:
        replace_in(root / "ashat.toml", "max_p95_ms = 250", "max_p95_ms = 0.001")

    pushed(edit)
    _fails("performance", "over max_p95_ms")


@pytest.mark.alone  # judges a p95 against a baseline (tests/alone.py)
def test_regression_against_a_stored_baseline_fails_and_keeps_the_baseline(pushed: Any) -> None:
    def strict(root: Path) -> None:  # any p95 over the 1 ms floor is a regression
        replace_in(root / "ashat.toml", "max_regression = 0.5", "max_regression = 0.0")

    root = pushed(strict)
    assert deploy("verify", "hello-001").exit_code == 0
    store = Store(Database(default_sqlite_url(root)))
    try:
        # A baseline of 0 must neither divide by zero nor let any p95 pass as "no regression"
        # (three runs of it: the median of the history is what a run is judged against).
        for day in ("01", "02", "03"):
            at = f"2030-01-{day}T00:00:00Z"
            store.set_baseline("public", "/api/items", 0.0, "hello-000", "test", at)
    finally:
        store.close()
    code, out = deploy_json("verify", "hello-001", "--only", "performance")
    assert code == 1
    perf = by_name(out)["performance"]
    assert perf["status"] == "failed" and "regressed" in perf["summary"]
    store = Store(Database(default_sqlite_url(root)))
    try:
        runs = store.baselines("public")["/api/items"]
        assert runs[:3] == [0.0, 0.0, 0.0] and len(runs) == 4  # only a passed run is added
    finally:
        store.close()


def test_private_key_in_the_tree_fails_the_security_scan(pushed: Any) -> None:
    # A file named like a key is refused by the push itself (test_push.py); the scan finds
    # one whatever its name.
    pushed(lambda root: (root / "settings.txt").write_text(PEM_KEY))
    _fails("security", "1 secret")
    # Issue 18: the human output said "1 secret" but not where; now file:line, masked.
    res = deploy("verify", "hello-001", "--only", "security")
    assert "     settings.txt:1  " in res.output, res.output
    assert PEM_KEY.splitlines()[1] not in res.output  # never the secret itself


def test_vulnerable_pin_fails_the_security_scan(pushed: Any, tmp_path: Path) -> None:
    """Against advisories the release ships (PUBLIC's own snapshot: below)."""
    advisories = tmp_path / "osv"
    advisories.mkdir()
    (advisories / "GHSA-test.json").write_text(
        json.dumps(
            {
                "id": "GHSA-test-0001",
                "summary": "remote code execution",
                "affected": [
                    {"package": {"ecosystem": "PyPI", "name": "werkzeug"}, "versions": ["2.0.1"]}
                ],
            }
        )
    )

    def edit(root: Path) -> None:
        (root / "requirements.txt").write_text("werkzeug==2.0.1\n")
        shutil.copytree(advisories, root / "security" / "osv")
        replace_in(root / "ashat.toml", "allow = []", 'allow = []\nadvisories = "security/osv"')

    pushed(edit)
    _fails("security", "GHSA-test-0001")


def test_missing_security_header_fails_the_security_scan(pushed: Any) -> None:
    def edit(root: Path) -> None:
        replace_in(
            root / "ashat.toml",
            '"Content-Security-Policy"]',
            '"Content-Security-Policy", "X-Not-Sent"]',
        )

    pushed(edit)
    _fails("security", "X-Not-Sent")


def test_https_certificate_close_to_expiry_fails_the_security_scan(pushed: Any) -> None:
    # The test agent's certificate is valid for one day; the default minimum is 14 days.
    pushed(tls=True)
    _fails("security", "certificate expires in")


def test_verify_is_refused_outside_the_allowed_states(pushed: Any) -> None:
    pushed()
    assert deploy("cancel", "hello-001").exit_code == 0
    res = deploy("verify", "hello-001")
    assert res.exit_code == 3 and "cancelled" in res.stderr
    assert deploy("verify", "nope-404").exit_code == 2


PLUGIN = """
from ashat.verify.base import CheckContext, Outcome


class MarkerCheck:
    name = "marker"
    title = "Marker File"

    def run(self, ctx: CheckContext) -> Outcome:
        found = (ctx.project_root / "MARKER").is_file()
        return Outcome.passed("MARKER present") if found else Outcome.failed("MARKER missing")
"""


def test_a_plugin_check_from_an_entry_point_runs_with_the_others(
    pushed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    dist = plugins / "marker_check-1.0.dist-info"
    dist.mkdir(parents=True)
    (plugins / "marker_check.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: marker-check\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ashat.checks]\nmarker = marker_check:MarkerCheck\n")
    monkeypatch.syspath_prepend(str(plugins))
    root = pushed()
    code, out = deploy_json("verify", "hello-001")
    assert code == 1 and by_name(out)["marker"]["summary"] == "MARKER missing"
    (root / "MARKER").write_text("")
    code, out = deploy_json("verify", "hello-001", "--only", "marker")
    assert code == 0 and out["passed"], out


def test_one_check_alone_never_makes_a_fresh_deployment_verified(pushed: Any) -> None:
    """Issue 14: ``--only security`` on a fresh deployment made it ``verified``."""
    pushed()
    code, out = deploy_json("verify", "hello-001", "--only", "security")
    assert code == 1, out
    assert out["passed"] is False and out["state"] == "verification_failed"
    assert set(out["missing"]) == {"health", "modules", "api", "database", "performance"}
    human = deploy("verify", "hello-001", "--only", "health")
    assert human.exit_code == 1
    assert "not run yet: modules, api, database, performance" in human.stdout
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 3, res.output  # still not verified: nothing to approve
    # the rest, run one by one, completes the verification
    code, out = deploy_json("verify", "hello-001", "--only", "modules", "--only", "api",
                            "--only", "database", "--only", "performance")  # fmt: skip
    assert code == 0 and out["state"] == "verified", out


def test_a_check_is_switched_off_only_in_ashat_toml(pushed: Any) -> None:
    root = pushed()
    replace_in(root / "ashat.toml", "[verify]\n", '[verify]\ndisabled = ["performance"]\n')
    code, out = deploy_json("verify", "hello-001")
    assert code == 0 and out["passed"], out
    assert "performance" not in {r["name"] for r in out["results"]}
    res = deploy("verify", "hello-001", "--only", "performance")
    assert res.exit_code == 2 and "switched off by [verify] disabled" in res.stderr
    replace_in(root / "ashat.toml", 'disabled = ["performance"]', 'disabled = ["nope"]')
    res = deploy("verify", "hello-001")
    assert res.exit_code == 2 and "unknown check(s) nope" in res.stderr


def test_a_failed_run_does_not_move_the_performance_baseline(pushed: Any) -> None:
    """Issue 15 item 5: a release that failed verification moved the baseline."""
    pushed(with_a_broken_module)
    code, out = deploy_json("verify", "hello-001")
    assert code == 1 and by_name(out)["performance"]["status"] == "passed", out
    assert "baseline.updated" not in deploy("log", "hello-001").stdout


def test_the_apps_environment_never_leaves_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> None:
    """Issue 15: a module that raised ValueError(f"invalid configuration: {cfg!r}") put
    --app-env values into the check summary, the audit trail and the API, whatever their
    names; and the control store was created 0644."""
    values = {"SETTING": "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "DB_CONN": "pw-9f3k-plain"}
    agent = agent_factory(app_env=values)
    root = enter_hello_project(tmp_path / "alpha", monkeypatch, agent.key_path)
    (root / "hello_service" / "cfg.py").write_text(
        "import os\n"
        "cfg = {k: os.environ.get(k) for k in ('SETTING', 'DB_CONN')}\n"
        "raise ValueError(f'invalid configuration: {cfg!r}')\n"
    )
    replace_in(
        root / "ashat.toml", '"hello_service.db"]', '"hello_service.db", "hello_service.cfg"]'
    )
    configure("public", agent, "Staging")
    assert deploy("push", "hello-001", "leaky").exit_code == 0
    code, out = deploy_json("verify", "hello-001", "--only", "modules")
    assert code == 1, out
    shown = (
        json.dumps(out) + deploy("log", "hello-001").stdout + deploy("status", "hello-001").stdout
    )
    assert "invalid configuration" in shown and "***" in shown
    for value in values.values():
        assert value not in shown
    mode = (root / ".ashat" / "ashat.db").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


# -- OSV advisories: PUBLIC's snapshot, fetched by `ashat advisories update` (issue 18) ------


@pytest.fixture
def osv_site(tmp_path: Path) -> Any:
    """A loopback stand-in for OSV's bucket: GET /PyPI/all.zip answers a zip in the shape
    OSV publishes (one ``<id>.json`` OSV record per member); any other path is 404."""
    import io
    import threading
    import zipfile
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    records = {
        "GHSA-wz00-0001": {
            "id": "GHSA-wz00-0001",
            "modified": "2026-11-30T00:00:00Z",
            "summary": "Werkzeug debugger allows code execution",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "werkzeug"},
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.2.3"}]}
                    ],
                }
            ],
        },
        "PYSEC-2026-1": {
            "id": "PYSEC-2026-1",
            "modified": "2026-11-30T00:00:00Z",
            "affected": [
                {"package": {"ecosystem": "PyPI", "name": "requests"}, "versions": ["2.0.0"]}
            ],
        },
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for ident, record in records.items():
            zf.writestr(f"{ident}.json", json.dumps(record))
    body = buf.getvalue()
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if self.path != "/PyPI/all.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_advisories_update_feeds_publics_security_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any, osv_site: Any
) -> None:
    from support import ashat

    url, asked = osv_site
    agent = agent_factory()
    res = ashat("advisories", "update", "--data", str(agent.data), "--from", f"{url}/PyPI/all.zip")
    assert res.exit_code == 0, res.output
    assert "2 OSV advisories for PyPI" in res.stdout and asked == ["/PyPI/all.zip"]
    snapshot = agent.data / "advisories"
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "GHSA-wz00-0001.json", "PYSEC-2026-1.json", "SOURCE"
    ]  # fmt: skip

    root = enter_hello_project(tmp_path / "alpha", monkeypatch, agent.key_path)
    (root / "requirements.txt").write_text("werkzeug==2.0.0\n")
    configure("public", agent, "Staging")
    assert deploy("push", "hello-001", "with a vulnerable pin").exit_code == 0
    res = deploy("verify", "hello-001", "--only", "security")
    assert res.exit_code == 1, res.output
    assert "werkzeug 2.0.0: GHSA-wz00-0001" in res.output
    assert "checked against 2 advisories" not in res.output  # it failed: the pin is listed
    code, out = deploy_json("verify", "hello-001", "--only", "security")
    assert code == 1
    tree = by_name(out)["security"]["details"]["tree"]
    assert tree["advisories"]["count"] == 2 and tree["advisories"]["fetched_at"]

    # No route to OSV: exit 4, how to do without, and the snapshot kept as it was.
    closed = f"http://127.0.0.1:{_closed_port()}/PyPI/all.zip"
    res = ashat("advisories", "update", "--data", str(agent.data), "--from", closed)
    assert res.exit_code == 4 and "--from all.zip" in res.stderr, res.output
    # Not a zip of OSV records: exit 2, the snapshot kept.
    (tmp_path / "notes.txt").write_text("not a zip")
    res = ashat(
        "advisories", "update", "--data", str(agent.data), "--from", str(tmp_path / "notes.txt")
    )
    assert res.exit_code == 2 and "not a zip of OSV records" in res.stderr, res.output
    assert len(list(snapshot.glob("*.json"))) == 2
    assert not [p for p in agent.data.iterdir() if p.name.startswith(".advisories-")]

    # ashat.toml may not name a directory on PUBLIC (its operator's, not the project's).
    replace_in(
        root / "ashat.toml",
        "[verify.security]\n",
        '[verify.security]\nadvisories = "/var/lib/osv"\n',
    )
    res = deploy("verify", "hello-001", "--only", "security")
    assert res.exit_code != 0 and "names a directory on PUBLIC" in res.output, res.output


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_killed_verify_runs_again_and_nothing_else_waits_on_it(
    pushed: Callable[..., Path],
) -> None:
    """A review killed ``deploy verify``: the deployment stayed ``verifying`` for ever —
    verify, cancel, rollback and approve all refused it, and a new push was told to
    "cancel" it, which was refused too. The same ``deploy verify`` now runs it again (not
    while another person's verify holds PUBLIC's lease for it)."""
    import os
    import signal
    import subprocess
    import sys

    root = pushed()
    # A verify that runs still (slowed at the same point) is not run twice, even by its
    # own user (a review: two verifies of one release ran the checks side by side).
    slow = subprocess.Popen(
        [sys.executable, "-m", "ashat.cli.deploy", "verify", "hello-001", "--only", "health"],
        env={**os.environ, "ASHAT_CRASH_AT": "verify.started:1:slow"}, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(
        lambda: deploy_json("status", "hello-001")[1]["deployment"]["state"] == "verifying",
        20, "the slow verify to start",
    )  # fmt: skip
    res = deploy("verify", "hello-001", "--only", "health")
    assert res.exit_code == 3 and "is being verified by" in res.output, res.output
    assert slow.wait(60) == 1  # --only health: not verified, and ended
    killed = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "verify", "hello-001", "--only", "health"],
        env={**os.environ, "ASHAT_CRASH_AT": "verify.started:1"}, cwd=root,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "verifying"
    (root / "VERSION").write_text("9.9.9\n")
    res = deploy("push", "hello-002", "next")
    assert res.exit_code == 3, res.output
    assert "finish it with 'deploy verify hello-001' (a verify cut short runs again)" in res.output
    other = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "verify", "hello-001"],
        env={**os.environ, "ASHAT_USER": "mallory"}, cwd=root,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert other.returncode == 3 and "is being verified by" in other.stderr, other.stderr
    res = deploy("verify", "hello-001")
    assert res.exit_code == 0, res.output
    status = deploy_json("status", "hello-001")[1]["deployment"]
    assert status["state"] == "verified", status
    log = deploy("log", "hello-001").stdout
    assert "verify.resumed" in log
