"""``ashat agent --role mainframe`` on its own (the fleet with a real OMEGA is test_fleet.py):
its options, a closed bearer API without --token-file, OMEGA's state in /v1/health, and a
prompt, clean stop with a long poll in flight."""

from __future__ import annotations

import datetime as dt
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ashat.bundle.keys import generate_keypair, load_private_key
from ashat.cli.agent_cmd import agent as agent_command
from ashat.cli.output import AshatGroup
from ashat.fleet.license import issue
from support import BlackHole, wait_for

MainframeFactory = Any  # the fixture's type (tests/ is not a package)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    _, alpha_pub = generate_keypair("alpha", tmp_path)
    _, omega_pub = generate_keypair("omega", tmp_path)
    license_key, _ = generate_keypair("license", tmp_path)
    token, lic = issue(
        load_private_key(license_key),
        "mf-solo",
        "ACME",
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    license_file = tmp_path / "license"
    license_file.write_text(token + "\n")
    return {
        "alpha_pub": alpha_pub,
        "omega_pub": omega_pub,
        "license": license_file,
        "token": token,
        "license_id": lic.license_id,
    }


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def run_cli(*args: str) -> tuple[int, str]:
    group = AshatGroup(name="ashat", commands=[agent_command])
    result = CliRunner().invoke(group, ["agent", *args])
    return result.exit_code, result.output


def mainframe_args(tmp_path: Path, keys: dict[str, Any], **overrides: str | None) -> list[str]:
    opts: dict[str, str | None] = {
        "--role": "mainframe",
        "--data": str(tmp_path / "data"),
        "--trust": str(keys["alpha_pub"]),
        "--omega": "http://127.0.0.1:9",
        "--license": str(keys["license"]),
        "--trust-omega": str(keys["omega_pub"]),
        **overrides,
    }
    return [x for k, v in opts.items() if v is not None for x in (k, v)]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"--omega": None}, "--role mainframe needs --omega"),
        ({"--license": None, "--trust-omega": None}, "needs --license, --trust-omega"),
        ({"--omega": "omega.example:8700"}, "expected an http(s) URL"),
        ({"--poll-wait": "0"}, "--poll-wait"),
        ({"--poll-wait": "61"}, "--poll-wait"),
        ({"--license": "{alpha_pub}"}, "does not hold a license"),
        ({"--trust-omega": "{license}"}, "expected one line 'ashat-ed25519"),
        ({"--omega-ca-cert": "{alpha_pub}"}, "cannot load --omega-ca-cert"),
        ({"--role": "public"}, "only for --role mainframe"),
    ],
)
def test_bad_mainframe_options_exit_2(
    tmp_path: Path, keys: dict[str, Any], overrides: dict[str, str | None], needle: str
) -> None:
    names = {k: str(v) for k, v in keys.items()}
    args = mainframe_args(
        tmp_path, keys, **{k: v.format(**names) if v else v for k, v in overrides.items()}
    )
    code, out = run_cli(*args)
    assert code == 2, out
    assert needle in out
    assert keys["token"] not in out  # the license token is never shown
    assert not (tmp_path / "data").exists()


def test_other_roles_still_need_a_token_file(tmp_path: Path, keys: dict[str, Any]) -> None:
    code, out = run_cli(
        "--role", "public", "--data", str(tmp_path / "d"), "--trust", str(keys["alpha_pub"])
    )
    assert code == 2 and "--role public needs --token-file" in out


def test_mainframe_without_token_serves_health_only_and_stops_promptly(
    mainframe_factory: MainframeFactory, keys: dict[str, Any], black_hole: BlackHole
) -> None:
    mf = mainframe_factory(
        omega=f"http://127.0.0.1:{black_hole.port}",
        license_token=keys["token"],
        mainframe_id="mf-solo",
        trust=keys["alpha_pub"],
        trust_omega=keys["omega_pub"],
        poll_wait=30,
    )
    health = mf.health()
    assert health["role"] == "mainframe" and health["current"] is None
    fleet = health["fleet"]
    assert fleet["mainframe_id"] == "mf-solo" and fleet["license_id"] == keys["license_id"]
    assert fleet["omega"] == f"http://127.0.0.1:{black_hole.port}"
    assert fleet["license_status"] == "unknown" and fleet["last_poll"] is None
    assert httpx.get(f"{mf.url}/metrics", timeout=5).status_code == 200
    for auth in ({}, {"Authorization": "Bearer x"}, {"Authorization": f"License {keys['token']}"}):
        r = httpx.get(f"{mf.url}/v1/releases", headers=auth, timeout=5)
        assert r.status_code == 401

    # The long poll OMEGA holds: licensed, naming what runs (nothing), the wait, and a
    # fresh nonce that OMEGA's signed "no directive" must name.
    request = wait_for(lambda: black_hole.received, 10, "the poll")[0].decode("latin-1")
    assert re.match(
        r"GET /v1/fleet/poll\?current=&sequence=0&wait=30&nonce=[A-Za-z0-9_-]{24}"
        r"&app=none&restarts=0"
        # and what it is, for OMEGA's selectors (issue 19)
        r"&os=[a-z]+&arch=\w+&python=[\d.]+&ashat=[\w.+-]+&free_disk=\d+ HTTP/1.1",
        request,
    ), request
    assert f"authorization: license {keys['token']}".lower() in request.lower()
    started = time.monotonic()
    assert mf.stop(signal.SIGTERM) == 0
    # the poll asked OMEGA to hold it 30 s; a shutdown that waited for it would take that long
    # (the bound leaves room for a loaded machine: the suite runs two processes)
    assert time.monotonic() - started < 5, "a poll in flight held up the shutdown"


def test_unreachable_omega_shows_in_health_and_the_loop_goes_on(
    mainframe_factory: MainframeFactory, keys: dict[str, Any], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        dead = s.getsockname()[1]  # closed once we leave: connection refused
    token_file = tmp_path / "token"
    token_file.write_text("mf-token\n")
    mf = mainframe_factory(
        omega=f"http://127.0.0.1:{dead}",
        license_token=keys["token"],
        mainframe_id="mf-solo",
        trust=keys["alpha_pub"],
        trust_omega=keys["omega_pub"],
        token_file=token_file,
    )

    def error() -> str | None:
        return mf.health()["fleet"]["last_error"]

    message = wait_for(error, 10, "the connection error in /v1/health")
    assert f"cannot reach OMEGA at http://127.0.0.1:{dead}" in message
    r = httpx.get(f"{mf.url}/v1/releases", headers={"Authorization": "Bearer mf-token"}, timeout=5)
    assert r.status_code == 200  # with --token-file, the bearer API is there
    assert mf.output().count("cannot reach OMEGA") == 1  # logged once, not per retry
