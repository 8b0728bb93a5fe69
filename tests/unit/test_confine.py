"""How the app is confined (ashat.agent.confine): which jail an agent picks, what the bwrap
command holds, and — with the real bwrap — that the app sees what it should and no more."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ashat.agent.confine import AppUser, Jail, app_environment, choose_jail
from ashat.agent.processes import REAPER
from ashat.errors import InvalidInput

ROOT = os.geteuid() == 0


def test_the_environment_is_minimal() -> None:
    agent_env = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "CREDENTIALS_DIRECTORY": "/run/credentials/ashat-public.service",
        "PGPASSWORD": "hunter2",
        "ASHAT_TOKEN": "secret",
        "HOME": "/root",
    }
    env = app_environment({"DB_URL": "sqlite:///x"}, {"PORT": "8000"}, base=agent_env)
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "DB_URL": "sqlite:///x", "PORT": "8000"}


@pytest.mark.skipif(not ROOT, reason="the agent runs as root only when the tests do")
def test_an_agent_running_as_root_needs_an_app_user(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="give --app-user NAME"):
        choose_jail("auto", None, data=tmp_path)
    with pytest.raises(InvalidInput, match="--app-user 'root' is root"):
        choose_jail("auto", "root", data=tmp_path)
    with pytest.raises(InvalidInput, match="no such user"):
        choose_jail("auto", "no-such-user-here", data=tmp_path)
    jail = choose_jail("none", "nobody", data=tmp_path)
    assert jail.mode == "user" and jail.user is not None and jail.user.name == "nobody"
    launch = jail.launch(["python3", "app.py"], tmp_path, tmp_path, {"SECRET": "s3cr3t"})
    ids = ["--uid", str(jail.user.uid), "--gid", str(jail.user.gid)]
    assert launch.argv[-7:] == [*ids, "--", "python3", "app.py"]  # the reaper drops to nobody
    assert str(REAPER) in launch.argv and "s3cr3t" not in str(launch.env)
    launch.close()
    assert jail.isolated and jail.warning is None


def test_an_unprivileged_agent_cannot_switch_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(InvalidInput, match="only an agent running as root"):
        choose_jail("none", "nobody", data=tmp_path)
    jail = choose_jail("none", None, data=tmp_path)
    assert jail.mode == "none" and not jail.isolated
    assert jail.describe()["warning"].startswith("the app runs as the agent's own user")


def test_sandbox_bwrap_where_it_cannot_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InvalidInput, match="--sandbox bwrap: bwrap cannot run here: it is not"):
        choose_jail("bwrap", "nobody" if ROOT else None, data=tmp_path)
    assert choose_jail("auto", "nobody" if ROOT else None, data=tmp_path).mode in ("user", "none")
    with pytest.raises(InvalidInput, match="--sandbox 'maybe'"):
        choose_jail("maybe", None, data=tmp_path)


def test_the_bwrap_command_shows_the_release_read_only_and_hides_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    release, shared = data / "releases" / "r1", data / "shared"
    jail = Jail(
        "bwrap",
        AppUser("nobody", 65534, 65534) if ROOT else None,
        "/usr/bin/bwrap",
        "/usr/bin/setpriv",
        hidden=(Path("/etc/hostname"),),
        data=data,
    )
    argv = jail.command(["python3", "serve.py"], release, shared)
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--ro-bind", str(release), str(release)) in pairs
    assert ("--bind", str(shared), str(shared)) in pairs
    assert ("--ro-bind", "/dev/null", "/etc/hostname") in pairs  # under the bound /etc
    assert ("--bind", str(data), str(data)) not in pairs  # the data directory is never shown
    assert argv[-3:] == ["--", "python3", "serve.py"]
    if ROOT:
        assert "--reuid=65534" in argv and "--bounding-set=-all" in argv


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_in_the_real_sandbox_the_app_sees_its_release_and_shared_dir_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    release, shared = data / "releases" / "r1", data / "shared"
    release.mkdir(parents=True)
    shared.mkdir()
    (release / "VERSION").write_text("1\n")
    (data / "state.json").write_text("{}")
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    jail = choose_jail("bwrap", "nobody" if ROOT else None, data=data, hidden=(secret,))
    if ROOT:
        os.chown(shared, 65534, -1)
    script = (
        "import os, pathlib; print(open('VERSION').read().strip()); "
        "pathlib.Path(os.environ['S'], 'ok').write_text('x'); "
        "print(sorted(os.listdir(os.path.dirname(os.environ['S'])))); "
        "print(os.path.exists(os.environ['T'])); "
        "\ntry:\n open('VERSION', 'w')\nexcept OSError as e:\n print(type(e).__name__)"
    )
    done = subprocess.run(
        jail.command(["python3", "-c", script], release, shared),
        cwd=release,
        env={"PATH": os.environ["PATH"], "S": str(shared), "T": str(secret)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1"
    assert lines[1] == "['releases', 'shared']"  # no state.json, blobs, logs
    assert lines[2] == "False"  # the token file is not there
    assert lines[3] in ("OSError", "PermissionError")  # read-only
    assert (shared / "ok").read_text() == "x"
