"""Issue 17: Python dependencies are part of the release.

``[app] requirements`` makes ``deploy push`` build the wheels once on ALPHA and ship them as
blobs; each server builds the app's environment from those exact wheels, offline and
hash-checked, and reuses it while the lock is unchanged. Real agents, a real mainframe, a
real pip; the wheels come from a local wheelhouse (no package index is reachable here, and
none is needed by the servers: they never ask one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from process_fixtures import HelloFleet
from support import configure, deploy, make_wheel, project_maker, wait_for

TOML = """[app]
name = "greeter"
run = "python serve.py {port}"
health_path = "/"
modules = ["greetdep", "tinydep"]
requirements = "requirements.txt"

[verify]
disabled = ["api", "database", "performance", "security"]

[approval]
required = 1
allow_self_approval = false

[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 60
auto_rollback = false
"""

SERVE = """import http.server, json, sys
import greetdep

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"word": greetdep.word(), "prefix": sys.prefix}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """greetdep 1.0 (needs tinydep) and tinydep 2.0, as pip on ALPHA finds them."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    make_wheel(house, "tinydep", "2.0", "WORD = 'tiny 2.0'\n", ())
    code = "import tinydep\n\ndef word():\n    return 'greet 1.0 + ' + tinydep.WORD\n"
    make_wheel(house, "greetdep", "1.0", code, ("tinydep==2.0",))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    return house


def greeter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    files = {"serve.py": SERVE, "VERSION": "1\n", "requirements.txt": "greetdep==1.0\n"}
    return project_maker(tmp_path / "greeter", monkeypatch, {**files, "ashat.toml": TOML})


def answer(port: int) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json())


def envs(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "envs").iterdir()) if (data / "envs").is_dir() else []


def test_a_release_ships_its_dependencies_and_every_server_installs_them_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheelhouse: Path, hello_fleet: Any
) -> None:
    fleet: HelloFleet = hello_fleet(n=1, project=greeter(tmp_path, monkeypatch))
    res = deploy("push", "g-001", "with greetdep", "--json")
    assert res.exit_code == 0, res.output
    pushed = json.loads(res.stdout)
    # The wheels travel in the bundle, beside the lock that names them by digest.
    manifest = json.loads((fleet.root / ".ashat" / "manifests" / "g-001.json").read_bytes())
    paths = {f["path"] for f in manifest["files"]}
    shipped = {".ashat/wheels/greetdep-1.0-py3-none-any.whl", ".ashat/wheels/requirements.lock"}
    assert shipped <= paths
    assert manifest["app"]["environment"]["lock"] == ".ashat/wheels/requirements.lock"
    public_app = answer(pushed["app"]["port"])
    assert public_app["word"] == "greet 1.0 + tiny 2.0"
    assert public_app["prefix"].startswith(str(fleet.public.data / "envs"))

    # The Module Load Test imports with the app's environment: both modules load.
    res = deploy("verify", "g-001", "--json")
    assert res.exit_code == 0, res.output
    modules = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "modules")
    assert modules["status"] == "passed", modules
    assert modules["details"]["interpreter"].startswith(str(fleet.public.data / "envs"))

    # The mainframe has no package index either: it builds from the shipped wheels.
    res = deploy("approve", "g-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    mf = fleet.mainframes[0]
    wait_for(lambda: mf.current() == "g-001", 60, "the mainframe installed g-001")
    assert len(envs(mf.data)) == 1
    log = (mf.data / "logs" / "g-001.log").read_text()
    assert "--no-index" in log and "--require-hashes" in log

    # An unchanged lock: no wheel moves, no environment is built again.
    (fleet.root / "VERSION").write_text("2\n")
    built_before = envs(fleet.public.data)
    res = deploy("push", "g-002", "same dependencies", "--json")
    assert res.exit_code == 0, res.output
    second = json.loads(res.stdout)
    assert second["blobs_sent"] == 1, second  # VERSION only
    assert envs(fleet.public.data) == built_before
    assert "make the environment" not in (fleet.public.data / "logs" / "g-002.log").read_text()


def test_a_requirement_pip_cannot_get_fails_the_push_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheelhouse: Path, agent_factory: Any
) -> None:
    public = agent_factory()
    root = greeter(tmp_path, monkeypatch)(public.key_path)
    configure("public", public)
    (root / "requirements.txt").write_text("nosuchdep==9.9\n")
    res = deploy("push", "g-001", "a dependency nobody has")
    assert res.exit_code == 1, res.output
    assert "pip could not get the wheels of requirements.txt" in res.output
    assert "nosuchdep" in res.output  # pip's own words, from the log tail
    assert deploy("status", "g-001").exit_code == 2  # nothing was recorded
    assert not list((root / ".ashat" / "wheels").glob(".*"))  # no half-made wheelhouse
