"""Bad input a review found the CLIs mishandled: refused now with exit 2 or 3, naming what
is wrong, echoing no secret and leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import REPO, ashat, deploy, enter_hello_project

SECRET = "s3cretpw"


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_hello_project(tmp_path / "alpha", monkeypatch, tmp_path / "no.key")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@[::1/db",  # libpq: "... in URI: \"postgresql://u:pw@[::1/db\""
        f"postgresql://u:{SECRET}%zz@127.0.0.1:1/db",  # "invalid percent-encoded token: ..."
        f"postgresql://u:{SECRET}/x@127.0.0.1:1/db",  # a / unescaped in the password
        f"postgresql://u:{SECRET}?x@127.0.0.1:1/db",
        f"postgresql://u:{SECRET}#x@127.0.0.1:1/db",
    ],
)
def test_a_malformed_ashat_db_never_prints_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    pytest.importorskip("psycopg")
    _project(tmp_path, monkeypatch)
    monkeypatch.setenv("ASHAT_DB", url)
    res = deploy("status")
    assert res.exit_code == 2, res.output
    assert SECRET not in res.output


@pytest.mark.parametrize(
    "url",
    [
        f"http://u:{SECRET}@127.0.0.1:99999",
        f"http://u:{SECRET}@[::1",
        f"ftp://u:{SECRET}@example.com",
        f"http://u:{SECRET}@",
        f"http://u:{SECRET}/x@example.com",  # a / unescaped in the password
        f"http://u:{SECRET}?x@example.com:99999",
    ],
)
def test_configure_never_echoes_the_credentials_of_a_url_it_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A URL with credentials alone is refused without echoing it; the same URL also wrong
    in another way is echoed whole, password included."""
    _project(tmp_path, monkeypatch)
    res = deploy("configure", "public", url, "Staging")
    assert res.exit_code == 2, res.output
    assert SECRET not in res.output


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc", "http://[::1"])
def test_via_a_malformed_url_is_bad_input_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    _project(tmp_path, monkeypatch)
    monkeypatch.setenv("ASHAT_TOKEN", "tok")
    res = deploy("--via", url, "status")
    assert res.exit_code == 2, res.output
    assert "internal error" not in res.output and "Traceback" not in res.output


def test_via_never_echoes_the_credentials_in_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path, monkeypatch)
    monkeypatch.delenv("ASHAT_TOKEN", raising=False)
    monkeypatch.delenv("ASHAT_TOKEN_FILE", raising=False)
    res = deploy("--via", f"http://u:{SECRET}@127.0.0.1:9", "status")
    assert res.exit_code == 2, res.output
    assert SECRET not in res.output
    res = deploy("--via", f"http://u:{SECRET}/x@127.0.0.1:9", "status")
    assert res.exit_code == 2 and SECRET not in res.output, res.output
    monkeypatch.setenv("ASHAT_TOKEN", "tok")
    res = deploy("--via", f"http://u:{SECRET}@127.0.0.1:9", "status")
    assert SECRET not in res.output


def test_keys_generate_refuses_an_empty_name(tmp_path: Path) -> None:
    """``ashat keys generate "$NAME"`` with NAME empty wrote None.key and None.pub, exit 0."""
    res = ashat("keys", "generate", "", "--dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "None.key").exists()


def test_ashat_serve_outside_any_project_makes_no_store(tmp_path: Path) -> None:
    """As every deploy verb (test_cli.py, test_a_verb_outside_any_project_says_so_and_makes_no_
    store): in the wrong directory, ashat serve made ./.ashat/ashat.db and served an empty
    store. It exits 2 now, naming the directory."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ASHAT_HELPER": "off"}
    env.pop("ASHAT_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ashat.cli.ashat", "serve", "--listen", "127.0.0.1:0"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        code = proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    assert code == 2, f"ashat serve still running (or exit {code}) in {tmp_path}"
    assert not (tmp_path / ".ashat").exists()


def test_approve_after_completion_does_not_ignore_to_and_comment(hello_fleet: Any) -> None:
    """The guide: once the approval is complete, "a --to naming other mainframes is refused
    (exit 3), whoever gives it"; a --comment with control characters is exit 2. After the
    rollout completed, both exit 0 with "Deployment completed successfully!"."""
    fleet = hello_fleet(n=1)
    fleet.ship("h-1", "1.0.1")
    res = deploy("approve", "h-1", "--as", "bob")
    assert res.exit_code == 0, res.output
    res = deploy("approve", "h-1", "--as", "carol", "--to", "ring=canary")
    assert res.exit_code == 3, res.output
    res = deploy("approve", "h-1", "--as", "carol", "--comment", "x\x1b[2J")
    assert res.exit_code == 2, res.output
