"""The agent's server-side checks (``ashat.agent.checks``) on real release trees: real
interpreters importing real modules, real SQLite files, PostgreSQL on loopback when there
is one, and real OSV advisory files."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ashat.agent.checks import UnknownCheck, run_check

SERVICE_SRC = Path(__file__).resolve().parents[2] / "examples" / "hello-service"
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_PASSWORD = "s3cretpw"

# Fake credentials, assembled so that this file itself holds none in one piece.
PEM_HEADER = "-----BEGIN RSA " + "PRIVATE KEY-----"
AWS_KEY = "AKIA" + "Q3EXAMPL7ZZWQ4TRN6BV".replace("EXAMPL", "K2M9PL")[:16]
GITHUB_TOKEN = "ghp_" + "x9Kq2LmZ7pR4tV8wY1bN3cD5fG6hJ0kQ2sT4"
SLACK_TOKEN = "xoxb-" + "2048611372-9876543210123-Zr7Qk4Lp"
PASSWORD_VALUE = "Tr0ub4dor&3-horse"


def app_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HELLO_DB")}
    env.update(extra)
    return env


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    root.mkdir()
    return root


def shown(result: dict[str, Any]) -> str:
    """Everything the control side would store and show."""
    return json.dumps(result)


# -- dispatch --------------------------------------------------------------------------------


def test_unknown_check_is_a_key_error(release: Path) -> None:
    with pytest.raises(KeyError) as info:
        run_check("telepathy", release, {}, {})
    assert isinstance(info.value, UnknownCheck)
    assert info.value.status == 404
    assert "telepathy" in str(info.value)


@pytest.mark.parametrize("name", ["modules", "database", "security"])
@pytest.mark.parametrize(
    ("body", "field"),
    [({"timeout_s": "soon"}, "timeout_s"), ({"timeout_s": -1}, "timeout_s"), ([], "JSON object")],
)
def test_a_bad_body_is_an_error_result_naming_the_field(
    release: Path, name: str, body: Any, field: str
) -> None:
    result = run_check(name, release, body, {})
    assert result["status"] == "error"
    assert field in result["summary"]


# -- modules ---------------------------------------------------------------------------------


def test_modules_that_import_pass_with_timings(release: Path) -> None:
    write(release, "app/__init__.py", "")
    write(release, "app/views.py", "import os\nSETTING = os.environ['APP_SETTING']\n")
    write(release, "tool.py", "from app import views\n")
    body = {"modules": ["app", "app.views", "tool"]}

    result = run_check("modules", release, body, app_env(APP_SETTING="on"))

    assert result["status"] == "passed", result
    assert result["summary"] == "All 3 modules loaded successfully"
    modules = result["details"]["modules"]
    assert [m["name"] for m in modules] == ["app", "app.views", "tool"]
    assert all(m["ok"] is True and m["ms"] > 0 for m in modules)
    assert not list(release.rglob("__pycache__")), "the check must not write bytecode"


def test_modules_are_imported_with_the_apps_own_interpreter(release: Path) -> None:
    """Issue 17: the agent's own packages (starlette, httpx) must not make an app's missing
    dependency pass. The release's venv has none of them: importing with it fails, where
    the agent's interpreter (as before) passed."""
    venv = release / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    body = {"modules": ["starlette"]}  # as the release's signed [app] names them
    app = {"python": ".venv/bin/python", **body}
    with_venv = run_check("modules", release, body, app_env(), app=app)
    assert with_venv["status"] == "failed", with_venv
    assert "No module named 'starlette'" in with_venv["summary"]
    assert with_venv["details"]["interpreter"] == str(venv / "bin" / "python")
    # the first word of [app] run is the interpreter when it is one
    run = {"run": ".venv/bin/python serve.py --port {port}", **body}
    assert run_check("modules", release, body, app_env(), app=run)["status"] == "failed"
    # without either, the agent's interpreter, as before (which has starlette)
    plain = run_check("modules", release, {}, app_env(), app={"run": "./serve", **body})
    assert plain["status"] == "passed" and plain["details"]["interpreter"] == sys.executable
    missing = run_check("modules", release, {}, app_env(), app={"python": "venv2/bin/py", **body})
    assert missing["status"] == "failed"
    assert "the app's interpreter venv2/bin/py does not exist" in missing["summary"]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_bare_interpreter_name_is_looked_up_where_the_app_looks_it_up(
    release: Path, tmp_path: Path
) -> None:
    """``run = "python3 serve.py"``: the app, in its sandbox, finds python3 on its PATH
    among the directories the sandbox shows. The check looked it up outside the sandbox,
    found one in a directory the sandbox hides (here under /tmp, a pyenv shim under /root
    in the demo), and failed every module ("failed to execute …: No such file or
    directory") of an app that ran."""
    from ashat.agent.confine import Jail

    hidden = tmp_path / "bin"  # /tmp is an empty tmpfs in the sandbox
    hidden.mkdir()
    (hidden / "python3").symlink_to(sys.executable)
    write(release, "fine.py", "")
    (tmp_path / "shared").mkdir()  # the app's one writable directory (else all of /tmp)
    env = app_env(
        PATH=os.pathsep.join([str(hidden), os.path.dirname(sys.executable), "/usr/bin"]),
        ASHAT_SHARED_DIR=str(tmp_path / "shared"),
    )
    jail = Jail("bwrap", bwrap=shutil.which("bwrap"))
    app = {"run": "python3 serve.py --port {port}", "modules": ["fine"]}
    result = run_check("modules", release, {}, env, jail, app=app)
    assert result["status"] == "passed", result
    assert result["details"]["interpreter"] == "python3"
    missing = run_check("modules", release, {}, {**env, "PATH": "/nowhere"}, jail, app=app)
    assert missing["status"] == "failed"
    assert "the app's interpreter 'python3' is not on its PATH" in missing["summary"]


def test_a_module_that_raises_is_reported_with_its_traceback(release: Path) -> None:
    write(release, "fine.py", "")
    write(
        release,
        "broken.py",
        "def load():\n    raise RuntimeError('config file missing: /etc/broken.conf')\n\nload()\n",
    )

    result = run_check("modules", release, {"modules": ["fine", "broken"]}, app_env())

    assert result["status"] == "failed"
    assert "broken" in result["summary"] and "fine" not in result["summary"]
    assert "RuntimeError: config file missing" in result["summary"]
    fine, broken = result["details"]["modules"]
    assert fine == {"name": "fine", "ok": True, "ms": fine["ms"]}
    assert broken["ok"] is False
    assert broken["error"] == "RuntimeError: config file missing: /etc/broken.conf"
    assert 'broken.py", line 2, in load' in broken["traceback"]
    assert len(broken["traceback"].splitlines()) <= 30


def test_a_missing_module_fails(release: Path) -> None:
    result = run_check("modules", release, {"modules": ["no_such_module_here"]}, app_env())
    assert result["status"] == "failed"
    [entry] = result["details"]["modules"]
    assert entry["error"] == "ModuleNotFoundError: No module named 'no_such_module_here'"


def test_the_app_environment_is_used_and_its_secrets_are_not_shown(release: Path) -> None:
    write(
        release,
        "leaky.py",
        "import os\nraise SystemExit('cannot log in with ' + os.environ['DB_PASSWORD'])\n",
    )
    env = app_env(DB_PASSWORD="hunter2-but-longer")
    result = run_check("modules", release, {"modules": ["leaky"]}, env)
    assert result["status"] == "failed"
    assert "cannot log in with ***" in result["details"]["modules"][0]["traceback"]
    assert "hunter2-but-longer" not in shown(result)


@pytest.mark.parametrize(
    "bad", ["os; rm -rf /", "__import__('os').system('touch pwned')", "a..b", "", "1abc", "x y"]
)
def test_a_name_that_is_not_a_module_is_never_executed(release: Path, bad: str) -> None:
    write(release, "marker.py", "open('imported', 'w').close()\n")
    result = run_check("modules", release, {"modules": ["marker", bad]}, app_env())
    assert result["status"] == "error"
    assert "modules" in result["summary"]
    assert not (release / "imported").exists()
    assert not (release / "pwned").exists()


def test_modules_must_be_a_list_of_names(release: Path) -> None:
    result = run_check("modules", release, {"modules": "app"}, app_env())
    assert result["status"] == "error"
    assert "modules must be a list" in result["summary"]
    assert run_check("modules", release, {"modules": []}, app_env())["status"] == "skipped"


def test_an_import_that_hangs_is_killed_at_the_timeout(release: Path) -> None:
    write(release, "slow.py", "import time\ntime.sleep(60)\n")
    write(release, "quick.py", "")
    started = time.monotonic()
    result = run_check(
        "modules", release, {"modules": ["slow", "quick"], "timeout_s": 1.5}, app_env()
    )
    assert time.monotonic() - started < 5
    assert result["status"] == "failed"
    slow, quick = result["details"]["modules"]
    assert "did not finish within 1.5 s" in slow["error"]
    assert quick["ok"] is True


# -- database: SQLite ------------------------------------------------------------------------


def make_sqlite(path: Path, version: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.close()


SCHEMA_QUERY = "SELECT version FROM schema_version"


def test_sqlite_relative_to_the_release_with_schema_version(release: Path) -> None:
    make_sqlite(release / "var" / "app.db", 3)
    body = {
        "url": "sqlite:///var/app.db",
        "schema_version_query": SCHEMA_QUERY,
        "expect_schema_version": 3,
    }
    result = run_check("database", release, body, app_env())
    assert result["status"] == "passed", result
    details = result["details"]
    assert details["backend"] == "sqlite"
    assert details["path"] == str(release.resolve() / "var" / "app.db")
    assert details["schema_version"] == 3
    assert details["latency_ms"] >= 0 and details["connect_ms"] >= 0
    assert "schema version 3" in result["summary"]


def test_sqlite_schema_version_mismatch_fails(release: Path, tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "app.db"
    make_sqlite(db, 2)
    body = {"url": f"sqlite:///{db}", "schema_version_query": SCHEMA_QUERY}
    assert run_check("database", release, body, app_env())["status"] == "passed"
    result = run_check("database", release, {**body, "expect_schema_version": "3"}, app_env())
    assert result["status"] == "failed"
    assert result["summary"] == "schema version is 2, expected '3'"
    assert result["details"]["schema_version"] == 2


def test_a_missing_sqlite_file_fails_and_is_not_created(release: Path) -> None:
    result = run_check("database", release, {"url": "sqlite:///data/none.db"}, app_env())
    assert result["status"] == "failed"
    assert result["summary"].startswith("database file ")
    assert result["summary"].endswith("data/none.db does not exist")
    assert not (release / "data").exists()


def test_the_schema_query_runs_read_only(release: Path) -> None:
    make_sqlite(release / "app.db", 1)
    body = {"url": "sqlite:///app.db", "schema_version_query": "DELETE FROM schema_version"}
    result = run_check("database", release, body, app_env())
    assert result["status"] == "failed"
    assert "readonly" in result["summary"]
    conn = sqlite3.connect(release / "app.db")
    assert conn.execute(SCHEMA_QUERY).fetchall() == [(1,)]
    conn.close()


def test_url_env_unset_fails_naming_the_variable(release: Path) -> None:
    result = run_check("database", release, {"url_env": "APP_DATABASE_URL"}, app_env())
    assert result["status"] == "failed"
    assert "APP_DATABASE_URL is not set" in result["summary"]


def test_url_env_is_read_from_the_app_environment(release: Path) -> None:
    make_sqlite(release / "app.db", 5)
    env = app_env(APP_DATABASE_URL="sqlite:///app.db")
    body = {"url_env": "APP_DATABASE_URL", "schema_version_query": SCHEMA_QUERY}
    result = run_check("database", release, body, env)
    assert result["status"] == "passed", result
    assert result["details"]["source"] == "url_env"
    assert result["details"]["url_env"] == "APP_DATABASE_URL"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": 5}, "url must be a string"),
        ({"url": "sqlite:///x.db", "expect_schema_version": [1]}, "expect_schema_version"),
        ({"url": f"mysql://app:{PG_PASSWORD}@db/app"}, "unsupported database URL"),
    ],
)
def test_bad_database_requests_are_errors(release: Path, body: dict[str, Any], field: str) -> None:
    result = run_check("database", release, body, app_env())
    assert result["status"] == "error"
    assert field in result["summary"]
    assert PG_PASSWORD not in shown(result)


def test_no_database_configured_is_skipped(release: Path) -> None:
    assert run_check("database", release, {}, app_env())["status"] == "skipped"


# -- database: PostgreSQL --------------------------------------------------------------------


def test_without_psycopg_postgres_is_an_error_naming_the_extra(
    release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    url = f"postgresql://app:{PG_PASSWORD}@127.0.0.1:5432/app"
    result = run_check("database", release, {"url": url}, app_env())
    assert result["status"] == "error"
    assert "pip install 'ashat[postgres]'" in result["summary"]
    assert PG_PASSWORD not in shown(result)


def postgres_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'ashat[postgres]')"
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return "no PostgreSQL listening on 127.0.0.1:5432"
    return None


needs_postgres = pytest.mark.skipif(
    postgres_reason() is not None, reason=postgres_reason() or "postgres available"
)


@needs_postgres
def test_postgres_select_1_and_schema_version(release: Path) -> None:
    body = {"url": PG_URL, "schema_version_query": "SELECT 7", "expect_schema_version": "7"}
    result = run_check("database", release, body, app_env())
    assert result["status"] == "passed", result
    assert result["details"]["backend"] == "postgresql"
    assert result["details"]["schema_version"] == 7


@needs_postgres
@pytest.mark.parametrize(
    "body",
    [
        # trust authentication ignores passwords: an unknown role and database are refused
        {"url": f"postgresql://nobody_here:{PG_PASSWORD}@127.0.0.1:5432/postgres"},
        {"url": f"postgres://postgres:{PG_PASSWORD}@127.0.0.1:5432/no_such_database"},
        {"url": f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:1/postgres", "timeout_s": 3},
        # the server echoes the password back in its error message
        {
            "url": f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:5432/postgres",
            "schema_version_query": f"SELECT '{PG_PASSWORD}'::int",
        },
    ],
)
def test_postgres_failures_never_show_the_password(release: Path, body: dict[str, Any]) -> None:
    result = run_check("database", release, body, app_env())
    assert result["status"] == "failed", result
    assert PG_PASSWORD not in shown(result)
    assert ":***@" in result["details"]["url"]


@needs_postgres
def test_postgres_url_from_the_app_environment_is_not_shown(release: Path) -> None:
    env = app_env(DATABASE_URL=f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:5432/nope_db")
    result = run_check("database", release, {"url_env": "DATABASE_URL"}, env)
    assert result["status"] == "failed"
    assert PG_PASSWORD not in shown(result)


# -- security --------------------------------------------------------------------------------


def test_each_kind_of_secret_is_found_and_masked(release: Path) -> None:
    write(release, "keys/server.pem", f"{PEM_HEADER}\nMIIEowIBAAKCAQEA\n-----END RSA KEY-----\n")
    write(release, "deploy.sh", f"export AWS_ACCESS_KEY_ID={AWS_KEY}\n")
    write(release, "ci/notify.py", f"GH = '{GITHUB_TOKEN}'\n\nSLACK = \"{SLACK_TOKEN}\"\n")
    write(release, "settings.py", f'DEBUG = False\ndb_password = "{PASSWORD_VALUE}"\n')
    write(release, ".env", f"API_KEY={PASSWORD_VALUE}x\n")

    result = run_check("security", release, {"allow": []}, app_env())

    assert result["status"] == "failed"
    found = {(s["path"], s["line"], s["kind"]) for s in result["details"]["secrets"]}
    assert found == {
        ("keys/server.pem", 1, "private_key"),
        ("deploy.sh", 1, "aws_access_key_id"),
        ("ci/notify.py", 1, "github_token"),
        ("ci/notify.py", 3, "slack_token"),
        ("settings.py", 2, "assignment"),
        (".env", 1, "assignment"),
    }
    # the summary says where (the file and line of the first three), never what
    assert re.fullmatch(
        r"6 secrets \([^,]+:\d+, [^,]+:\d+, [^,]+:\d+ and 3 more\), 0 world-writable files, "
        r"0 vulnerable dependencies",
        result["summary"],
    ), result["summary"]
    text = shown(result)
    for secret in (AWS_KEY, GITHUB_TOKEN, SLACK_TOKEN, PASSWORD_VALUE, AWS_KEY[4:]):
        assert secret not in text
    matches = {s["kind"]: s["match"] for s in result["details"]["secrets"]}
    assert matches["aws_access_key_id"] == "AKIA****"
    assert matches["github_token"] == "ghp_****"


def test_placeholders_and_lookups_are_not_secrets(release: Path) -> None:
    write(
        release,
        "config.py",
        "import os\n"
        "password = os.environ['DB_PASSWORD']\n"
        'token = os.environ.get("TOKEN", "")\n'
        'api_key = ""\n'
        'SECRET_KEY = "changeme-changeme"\n'
        'password = "<your password here>"\n'
        'token = "GITHUB_TOKEN"\n'
        'status = {"token": "configured"}\n'
        'AWS = "AKIAIOSFODNN7EXAMPLE"\n'
        'if password == "literal-compare-1":\n    pass\n',
    )
    write(release, "app.yaml", "db:\n  password: ${DB_PASSWORD}\n  token: '{{ vault_token }}'\n")
    result = run_check("security", release, {}, app_env())
    assert result["status"] == "passed", result["details"]["secrets"]


def test_allow_globs_drop_findings(release: Path) -> None:
    write(release, "tests/fixtures/key.pem", PEM_HEADER + "\n")
    write(release, "docs/example.env", f"TOKEN={PASSWORD_VALUE}\n")
    body = {"allow": ["tests/fixtures/*.pem", "docs"]}
    result = run_check("security", release, body, app_env())
    assert result["status"] == "passed", result
    assert result["details"]["allowed"] == 2
    result = run_check("security", release, {"allow": ["tests/*.txt"]}, app_env())
    assert result["details"]["counts"]["secrets"] == 2


def test_world_writable_paths_are_found(release: Path) -> None:
    write(release, "run.sh", "echo hi\n").chmod(0o666)
    (release / "cache").mkdir()
    (release / "cache").chmod(0o777)
    write(release, "tmp/scratch.txt", "x\n").chmod(0o646)
    result = run_check("security", release, {"allow": ["tmp/*"]}, app_env())
    assert result["status"] == "failed"
    assert result["details"]["world_writable"] == [
        {"path": "cache", "type": "directory", "mode": "0o777"},
        {"path": "run.sh", "type": "file", "mode": "0o666"},
    ]
    assert result["summary"] == "0 secrets, 2 world-writable files, 0 vulnerable dependencies"


def test_symlinks_large_and_binary_files_are_not_read(release: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", "secrets.env", f"PASSWORD={PASSWORD_VALUE}\n")
    outside.chmod(0o666)
    (release / "linked.env").symlink_to(outside)
    (release / "linked_dir").symlink_to(outside.parent, target_is_directory=True)
    (release / "blob.bin").write_bytes(b"\x00\x01" + f"PASSWORD={PASSWORD_VALUE}".encode())
    with (release / "huge.env").open("w") as f:
        f.write(f"PASSWORD={PASSWORD_VALUE}\n")
        f.write("#" * (5 * 1024 * 1024))
    result = run_check("security", release, {}, app_env())
    assert result["status"] == "passed", result
    assert result["details"]["skipped"] == {"large": 1, "binary": 1, "unreadable": 0}


# -- security: dependencies against OSV advisories -------------------------------------------


def osv(ident: str, name: str, *, versions: list[str] | None = None, events: Any = None) -> Any:
    affected: dict[str, Any] = {"package": {"ecosystem": "PyPI", "name": name}}
    if versions is not None:
        affected["versions"] = versions
    if events is not None:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": events}]
    return {"id": ident, "summary": f"{name} is vulnerable", "affected": [affected]}


@pytest.fixture
def advisories(tmp_path: Path) -> Path:
    directory = tmp_path / "osv"
    directory.mkdir()
    records = {
        "GHSA-aaaa-0001.json": osv("GHSA-aaaa-0001", "Werkzeug", versions=["2.0.0", "2.0.1"]),
        "PYSEC-2023-77.json": osv(
            "PYSEC-2023-77", "requests", events=[{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]
        ),
        "GHSA-cccc-0003.json": osv(
            "GHSA-cccc-0003", "pyyaml", events=[{"introduced": "0"}, {"last_affected": "5.3.1"}]
        ),
    }
    for filename, record in records.items():
        (directory / filename).write_text(json.dumps(record), encoding="utf-8")
    (directory / "README.txt").write_text("not an advisory", encoding="utf-8")
    return directory


REQUIREMENTS = """\
# pinned for production
werkzeug==2.0.0 --hash=sha256:0123abcd
Requests[socks] == 2.28.1 ; python_version >= "3.8"
PyYAML==5.4
flask>=2.0
-r more-requirements.txt
--index-url https://pypi.example/simple
"""


def test_pins_matched_by_versions_list_and_by_range(release: Path, advisories: Path) -> None:
    write(release, "requirements.txt", REQUIREMENTS)
    result = run_check("security", release, {}, app_env(), advisories=advisories)

    assert result["status"] == "failed"
    vulnerable = {v["name"]: v for v in result["details"]["vulnerable"]}
    assert set(vulnerable) == {"werkzeug", "requests"}
    assert vulnerable["werkzeug"]["advisories"][0]["id"] == "GHSA-aaaa-0001"
    assert vulnerable["requests"]["advisories"][0]["fixed"] == ["2.31.0"]
    assert vulnerable["requests"]["line"] == 3
    assert result["summary"] == (
        "0 secrets, 0 world-writable files, 2 vulnerable dependencies "
        "(werkzeug 2.0.0: GHSA-aaaa-0001; requests 2.28.1: PYSEC-2023-77)"
    )
    assert result["details"]["advisories"]["count"] == 3
    pins = {(d["name"], d["version"]) for d in result["details"]["dependencies"]}
    assert pins == {("werkzeug", "2.0.0"), ("requests", "2.28.1"), ("pyyaml", "5.4")}


def test_one_secret_and_one_vulnerable_pin(release: Path, advisories: Path) -> None:
    write(release, "requirements-prod.txt", "werkzeug==2.0.1\n")
    write(release, "app.py", f'api_key = "{PASSWORD_VALUE}"\n')
    result = run_check("security", release, {}, app_env(), advisories=advisories)
    assert result["summary"] == (
        "1 secret (app.py:1), 0 world-writable files, 1 vulnerable dependency "
        "(werkzeug 2.0.1: GHSA-aaaa-0001)"
    )


def test_fixed_versions_pass_and_the_summary_counts_what_was_checked(
    release: Path, advisories: Path
) -> None:
    write(release, "requirements.txt", "werkzeug==2.0.2\nrequests==2.31.0\npyyaml==5.4\n")
    result = run_check("security", release, {}, app_env(), advisories=advisories)
    assert result["status"] == "passed", result
    assert result["summary"] == (
        "no secrets, no world-writable files, 3 dependencies checked against 3 advisories"
    )


def test_advisories_may_live_in_the_release(release: Path, advisories: Path) -> None:
    shutil.copytree(advisories, release / "security" / "osv")
    write(release, "requirements.txt", "pyyaml==5.3.1\n")
    result = run_check("security", release, {"advisories": "security/osv"}, app_env())
    assert result["status"] == "failed"
    assert result["details"]["vulnerable"][0]["advisories"][0]["id"] == "GHSA-cccc-0003"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"summary": "no id"}),
        json.dumps({"id": "X-1", "affected": [{"ranges": [{"type": "ECOSYSTEM", "events": {}}]}]}),
    ],
)
def test_a_malformed_advisory_is_an_error_naming_the_file(
    release: Path, advisories: Path, content: str
) -> None:
    (advisories / "broken-advisory.json").write_text(content, encoding="utf-8")
    result = run_check("security", release, {}, app_env(), advisories=advisories)
    assert result["status"] == "error"
    assert "malformed advisory file broken-advisory.json" in result["summary"]


def test_a_missing_advisories_directory_is_an_error(release: Path, tmp_path: Path) -> None:
    result = run_check("security", release, {"advisories": "nowhere"}, app_env())
    assert result["status"] == "error"
    assert "does not exist" in result["summary"]
    # the agent's own snapshot, not there yet: no advisories, not an error
    result = run_check("security", release, {}, app_env(), advisories=tmp_path / "none")
    assert result["status"] == "passed" and "no advisories configured" in result["summary"]


@pytest.mark.parametrize("named", ["/etc", "../../etc", "osv/../../.."])
def test_a_request_cannot_name_a_directory_of_the_agents_machine(
    release: Path, advisories: Path, named: str
) -> None:
    """Issue 18: `advisories` in ashat.toml named a directory on PUBLIC; now only the
    release's own, besides the snapshot its operator keeps."""
    result = run_check("security", release, {"advisories": named}, app_env())
    assert result["status"] == "error"
    assert "not a directory of the release" in result["summary"]
    assert "ashat advisories update" in result["summary"]


def test_the_snapshot_and_the_releases_advisories_are_both_checked(
    release: Path, advisories: Path
) -> None:
    shipped = release / "security" / "osv"
    shipped.mkdir(parents=True)
    (shipped / "X-9.json").write_text(
        json.dumps(osv("X-9", "flask", versions=["2.0.0"])), encoding="utf-8"
    )
    (advisories / "SOURCE").write_text(
        json.dumps({"fetched_at": "2026-12-01T06:00:00Z"}), encoding="utf-8"
    )
    write(release, "requirements.txt", "flask==2.0.0\nwerkzeug==2.0.0\n")
    body = {"advisories": "security/osv"}
    result = run_check("security", release, body, app_env(), advisories=advisories)
    assert {v["name"] for v in result["details"]["vulnerable"]} == {"flask", "werkzeug"}
    assert result["details"]["advisories"]["count"] == 4
    assert result["details"]["advisories"]["fetched_at"] == "2026-12-01T06:00:00Z"
    assert "(fetched 2026-12-01)" in result["summary"]


def test_a_built_virtual_environment_is_not_scanned(release: Path) -> None:
    """Issue 17: the scan walked .venv and reported package metadata as secrets."""
    venv = release / ".venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    (venv / "lib" / "METADATA").write_text(f'password = "{PASSWORD_VALUE}"\n')
    (release / "pkg" / "__pycache__").mkdir(parents=True)
    result = run_check("security", release, {}, app_env())
    assert result["status"] == "passed", result
    assert result["details"]["environments_skipped"] == [".venv", "pkg/__pycache__"]
    assert "2 built environments not scanned" in result["summary"]


@pytest.mark.parametrize(
    ("body", "field"), [({"allow": "*.pem"}, "allow"), ({"advisories": 3}, "advisories")]
)
def test_bad_security_requests_are_errors(release: Path, body: dict[str, Any], field: str) -> None:
    result = run_check("security", release, body, app_env())
    assert result["status"] == "error"
    assert field in result["summary"]


# -- examples/hello-service passes all three -------------------------------------------------


def test_hello_service_passes_all_three(tmp_path: Path) -> None:
    service = tmp_path / "release"
    shutil.copytree(SERVICE_SRC, service, ignore=shutil.ignore_patterns("data", "__pycache__"))
    with (service / "ashat.toml").open("rb") as f:
        config = tomllib.load(f)
    shared = tmp_path / "shared"  # $ASHAT_SHARED_DIR: where the app keeps its data
    shared.mkdir()
    env = {**app_env(), "ASHAT_SHARED_DIR": str(shared)}
    # The service creates its database on first use; do that as it would, under ashat.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from hello_service.db import Database, db_path_from_env\n"
            "Database(db_path_from_env()).ensure_schema()",
        ],
        cwd=service,
        env=env,
        check=True,
        timeout=30,
    )
    database = config["verify"]["database"]
    bodies = {
        "modules": {"modules": config["app"]["modules"]},
        "database": {**database, "expect_schema_version": 1},
        "security": {"allow": config["verify"]["security"]["allow"]},
    }
    results = {
        name: run_check(name, service, {**body, "timeout_s": 20}, env)
        for name, body in bodies.items()
    }
    assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(bodies, "passed"), results
    assert results["modules"]["summary"] == "All 3 modules loaded successfully"
    assert results["database"]["details"]["schema_version"] == 1
    assert results["security"]["summary"] == (
        "no secrets, no world-writable files, no advisories configured"
    )


def test_the_releases_advisories_directory_cannot_lead_out_of_it(
    release: Path, advisories: Path
) -> None:
    """Found in review: a symlink in the release could make the agent read a directory of
    its machine as advisories."""
    (release / "osv").symlink_to(advisories)
    result = run_check("security", release, {"advisories": "osv"}, app_env())
    assert result["status"] == "error" and "leads out of the release" in result["summary"]
