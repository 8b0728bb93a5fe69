"""The deployed app is an attacker (issue 15). A hostile release, pushed with ``deploy push``
like any other, runs on PUBLIC before anyone reviewed it, then on OMEGA and a mainframe once
approved; on each it tries what a real one did:

- read the agent's command line from ``/proc`` and open the files it names (``--token-file``,
  ``--omega-key``, ``--license``, ``--app-env``), and files whose paths it guessed;
- read the agent's data directory (its state, the blob store) and its environment;
- rewrite its own release and older ones in place, putting the mtime back.

Each attempt fails on every role, and nothing changed. Where the app could still have
written a release (an agent with no sandbox), the next activation or rollback finds it:
:func:`test_a_release_altered_on_disk_is_never_installed_and_is_fetched_again`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import deploy, project_maker, wait_for

SPY = r'''"""A hostile app: it loots, tampers, writes what it found, then serves health."""
import http.server
import json
import os
from pathlib import Path

FLAGS = ("--token-file", "--omega-key", "--license", "--app-env", "--verifier-key",
         "--data", "--db", "--blob-dir", "--tls-key")


def read(path):
    try:
        p = Path(path)
        if p.is_dir():
            return {"listing": sorted(os.listdir(p))}
        return {"text": p.read_text(errors="replace")[:4096]}
    except OSError as e:
        return {"refused": e.strerror}


def loot():
    found = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag in FLAGS:
                found[value] = read(value)
    for path in json.loads(Path("targets.json").read_text()):
        found[path] = read(path)
    shared = Path(os.environ["ASHAT_SHARED_DIR"])
    for guess in (shared.parent, shared.parent / "blobs", shared.parent / "state.json",
                  shared.parent / "releases"):
        found[str(guess)] = read(guess)
    return found


def tamper():
    done = {}
    shared = Path(os.environ["ASHAT_SHARED_DIR"])
    targets = [Path("VERSION").resolve()]
    try:
        targets += [p / "VERSION" for p in (shared.parent / "releases").iterdir()]
    except OSError as e:
        done["releases/"] = "refused: " + e.strerror
    for t in targets:
        try:
            st = t.stat()
            with open(t, "r+b") as f:
                f.write(b"X" * st.st_size)
            os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))
            done[str(t)] = "written"
        except OSError as e:
            done[str(t)] = "refused: " + e.strerror
    return done


report = {"loot": loot(), "env": dict(os.environ), "tamper": tamper(), "uid": os.getuid()}
out = Path(os.environ["ASHAT_SHARED_DIR"]) / ("spy-" + os.environ["ASHAT_RELEASE"] + ".json")
out.write_text(json.dumps(report))


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
'''

SPY_TOML = """[app]
name = "spy"
run = "python3 spy.py --port {port}"
health_path = "/"

[verify]
disabled = ["modules", "api", "database", "performance", "security"]

[approval]
required = 1
allow_self_approval = false

[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 60
auto_rollback = false
"""
ALLOWED_ENV = {"PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "HOME"}
ALLOWED_ENV |= {
    "PORT",
    "ASHAT_RELEASE",
    "ASHAT_RELEASE_DIR",
    "ASHAT_SHARED_DIR",
    "PWD",
}  # PWD: bwrap


def bwrap_or_skip() -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: .ci/run installs it with apt-get")


def spy_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    files = {"spy.py": SPY, "VERSION": "1.0.0\n", "targets.json": "[]", "ashat.toml": SPY_TOML}
    return project_maker(tmp_path / "spy", monkeypatch, files)


def secrets_of(fleet: Any) -> dict[str, str]:
    """What the app must never read: each agent's token, OMEGA's private key, the
    mainframe's license (name -> the secret text)."""
    mf = fleet.mainframes[0]
    out = {
        "PUBLIC's token": fleet.public.token,
        "OMEGA's token": fleet.omega.token,
        "OMEGA's private key": fleet.omega.omega_key_path.read_text().strip(),
        "the mainframe's license": (mf.data.parent / "license").read_text().strip(),
    }
    return out


def secret_files(fleet: Any) -> list[str]:
    mf = fleet.mainframes[0]
    return [
        str(fleet.public.token_file),
        str(fleet.omega.token_file),
        str(fleet.omega.omega_key_path),
        str(mf.data.parent / "license"),
        str(fleet.public.data / "state.json"),
        str(mf.data / "state.json"),
    ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_hostile_app_reads_no_secret_and_rewrites_nothing_on_any_role(
    hello_fleet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bwrap_or_skip()
    fleet = hello_fleet(n=1, project=spy_project(tmp_path, monkeypatch))
    (fleet.root / "targets.json").write_text(json.dumps(secret_files(fleet)))
    roles = {"PUBLIC": fleet.public.data, "OMEGA": fleet.omega.data}
    roles["mainframe"] = fleet.mainframes[0].data

    for n in (1, 2):  # the second release finds the first one's tree on every host
        (fleet.root / "VERSION").write_text(f"1.0.{n}\n")
        res = deploy("push", f"spy-{n}", "a hostile release")
        assert res.exit_code == 0, res.output
        assert deploy("verify", f"spy-{n}").exit_code == 0
        res = deploy("approve", f"spy-{n}", "--as", "bob")
        assert res.exit_code == 0, res.output
        wait_for(lambda n=n: fleet.mainframes[0].current() == f"spy-{n}", 60, "the mainframe")

    secrets = secrets_of(fleet)
    for role, data in roles.items():
        for n in (1, 2):
            report_file = data / "shared" / f"spy-spy-{n}.json"
            text = report_file.read_text()
            for name, secret in secrets.items():
                assert secret not in text, f"the app on {role} read {name}"
            report = json.loads(text)
            assert report["uid"] != 0, f"the app ran as root on {role}"
            assert set(report["env"]) <= ALLOWED_ENV, f"{role}: {set(report['env']) - ALLOWED_ENV}"
            for path, seen in report["loot"].items():
                assert "text" not in seen, f"the app on {role} read {path}"
                # all it may see of the data directory: its own release and shared/
                visible = {"releases", "shared", f"spy-{n}"}
                assert set(seen.get("listing", [])) <= visible, f"{role}: {path}: {seen}"
            written = [t for t, how in report["tamper"].items() if how == "written"]
            assert written == [], f"the app on {role} rewrote {written}"
        for n in (1, 2):
            assert (data / "releases" / f"spy-{n}" / "VERSION").read_text() == f"1.0.{n}\n"

    for agent in (fleet.public, fleet.omega):
        with agent.client() as client:
            isolation = client.health()["app_isolation"]
        assert isolation["mode"] == "bwrap" and "warning" not in isolation


def tamper_in_place(path: Path) -> None:
    """What an unconfined app did: same size, different bytes, mtime put back."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"X" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_release_altered_on_disk_is_never_installed_and_is_fetched_again(
    hello_fleet: Any,
) -> None:
    """A file of an older release rewritten in place (as an app without a sandbox could):
    rolling back to it quarantines the altered blob, fetches it again from OMEGA and
    installs the signed bytes; OMEGA never serves a blob that does not hash to its name."""
    fleet = hello_fleet(n=1)
    mf = fleet.mainframes[0]
    for n in (1, 2):
        fleet.ship(f"hello-00{n}", f"1.0.{n}")
        res = deploy("approve", f"hello-00{n}", "--as", "bob")
        assert res.exit_code == 0, res.output
        wait_for(lambda n=n: mf.current() == f"hello-00{n}", 60, "the mainframe")
    old = mf.data / "releases" / "hello-001" / "VERSION"
    signed = digest(old)
    tamper_in_place(old)

    res = deploy("rollback", "hello-002")
    assert res.exit_code == 0, res.output
    wait_for(lambda: mf.current() == "hello-001", 60, "the mainframe to roll back")
    assert old.read_text() == "1.0.1\n" and digest(old) == signed
    log = mf.output()
    assert "hello-001: 1 file(s) are not the signed bytes (VERSION)" in log
    assert "fetching it again from OMEGA" in log
    assert "does not hash to its name: moved to quarantine/" in log
    assert len(list((mf.data / "blobs" / "quarantine").iterdir())) == 1

    # OMEGA's copy of a blob altered in place is never served, and is quarantined.
    blob = fleet.omega.data / "blobs" / "sha256" / signed[:2] / signed
    tamper_in_place(blob)
    answer = httpx.get(
        f"{fleet.omega.url}/v1/blobs/{signed}",
        headers={"Authorization": f"Bearer {fleet.omega.token}"},
    )
    assert answer.status_code == 404, answer.text
    assert not blob.exists()


def test_fsck_reports_what_was_altered(hello_fleet: Any) -> None:
    """``ashat agent fsck --data DIR`` checks every blob and release tree of a data directory."""
    from support import ashat

    fleet = hello_fleet(n=1)
    fleet.ship("hello-001", "1.0.1")
    res = ashat("agent", "fsck", "--data", str(fleet.public.data))
    assert res.exit_code == 0, res.output
    assert "clean" in res.output
    release = fleet.public.data / "releases" / "hello-001"
    tamper_in_place(release / "VERSION")
    (release / "hello_service" / "sitecustomize.py").write_text("import evil\n")  # added
    (release / "README.md").unlink()  # and removed
    res = ashat("agent", "fsck", "--data", str(fleet.public.data))
    assert res.exit_code == 1, res.output
    assert "hello-001: VERSION is not the signed bytes" in res.output
    assert "hello-001: hello_service/sitecustomize.py is not the signed bytes" in res.output
    assert "hello-001: README.md is not the signed bytes" in res.output
    assert "does not hash to its name" in res.output  # VERSION's blob: the same inode
    res = ashat("agent", "fsck", "--data", str(fleet.public.data), "--json")
    assert json.loads(res.output)["clean"] is False


def _environment(tree: Path, lock_text: str) -> dict[str, Any]:
    """``app.environment`` naming ``tree``'s lock with ``lock_text``."""
    lock = tree / "requirements.lock"
    lock.write_text(lock_text)
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    (tree / "app.py").write_text("print('never runs')\n")
    return {"lock": "requirements.lock", "sha256": digest}


def _activate(agent: Any, update_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {agent.token}"}
    return httpx.post(f"{agent.url}/v1/releases/{update_id}/activate", headers=headers, timeout=60)


def test_a_release_cannot_name_its_own_file_as_the_interpreter_the_agent_builds_with(
    agent_factory: Any, tmp_path: Path
) -> None:
    """A review: the agent builds a release's Python environment itself, outside the
    sandbox, with ``[app] python`` — which the release names. A release naming an
    executable it ships ran it as root: the token, the keys, all in reach."""
    agent = agent_factory()
    loot = tmp_path / "loot.txt"
    tree = tmp_path / "pwn"
    tree.mkdir()
    evil = tree / "evil.sh"
    evil.write_text(f"#!/bin/sh\n{{ id; cat {agent.token_file}; }} > {loot}\nexit 1\n")
    evil.chmod(0o755)
    for where in (f"{agent.data}/releases/pwn-1/evil.sh", f"{agent.data}/shared/evil.sh"):
        if "shared" in where:  # what an earlier app could have left there
            Path(where).parent.mkdir(exist_ok=True)
            shutil.copy2(evil, where)
        update_id = "pwn-1" if "releases" in where else "pwn-2"
        app = {"run": "python3 app.py", "health_path": "/", "health_timeout_s": 5,
               "environment": _environment(tree, "# nothing\n"), "python": where}  # fmt: skip
        agent.stage(tree, update_id, app=app, sequence=1 if update_id == "pwn-1" else 2)
        r = _activate(agent, update_id)
        assert r.status_code == 422, r.text
        assert "a file of the agent's data directory" in r.json()["error"], r.text
        assert not loot.exists()


def test_a_lock_is_ashats_format_and_nothing_pip_would_also_take(
    agent_factory: Any, tmp_path: Path
) -> None:
    """A review: the lock is a requirements file the agent's pip reads, outside the sandbox:
    ``-r FILE`` included any file of the host, and pip's error quoted it back in the
    activation's answer (the agent's token, here)."""
    agent = agent_factory()
    tree = tmp_path / "rd"
    tree.mkdir()
    app = {"run": "python3 app.py", "health_path": "/", "health_timeout_s": 5,
           "environment": _environment(tree, f"-r {agent.token_file}\n")}  # fmt: skip
    agent.stage(tree, "rd-1", app=app)
    r = _activate(agent, "rd-1")
    assert r.status_code == 422, r.text
    assert "line 1: not 'name==version --hash=sha256:…'" in r.json()["error"], r.text
    assert agent.token not in r.text


def test_an_interpreter_others_could_have_written_is_not_run_by_the_agent(tmp_path: Path) -> None:
    """Outside the data directory too: an interpreter in a directory another user may
    write (group- or world-writable, not sticky) could be anyone's code."""
    import sys

    from ashat.agent.environments import check_base_python
    from ashat.agent.errors import ActivationFailed

    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    python = open_dir / "python3"
    python.symlink_to(sys.executable)
    shutil.copy(sys.executable, open_dir / "copied")
    with pytest.raises(ActivationFailed) as e:
        check_base_python(str(open_dir / "copied"), tmp_path / "data")
    assert "could be written by another user" in e.value.message
    check_base_python(str(python), tmp_path / "data")  # a link to an installed one: its target


def test_a_health_answer_is_never_quoted_and_a_dripped_one_holds_no_one(tmp_path: Path) -> None:
    """A review: the probe's reason quoted the app's status line (``HTTP/1.1 <a secret of
    its environment>``), and that reason went to the agent's log, to the mainframe's open
    /v1/health and to OMEGA; and a status line dripped a byte a second never timed out."""
    import socket
    import threading
    import time

    from ashat.agent.supervisor import status_line

    secret = "sk_live_never_quoted_4242"

    done = threading.Event()

    def serve(sock: socket.socket, drip: bool) -> None:
        try:
            conn, _ = sock.accept()
            with conn:
                conn.recv(1024)
                for byte in f"HTTP/1.1 {secret}\r\n\r\n".encode():
                    if done.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    if drip:
                        time.sleep(0.5)
        except OSError:  # the probe gave up and closed: what it is meant to do
            pass

    for drip in (False, True):
        with socket.create_server(("127.0.0.1", 0)) as sock:
            threading.Thread(target=serve, args=(sock, drip), daemon=True).start()
            started = time.monotonic()
            why = status_line(sock.getsockname()[1], "/healthz", 1.5)
            took = time.monotonic() - started
        assert isinstance(why, str) and secret not in why, why
        assert took < 5, f"the probe took {took:.1f}s"  # its 1.5 s, on a busy machine
    done.set()
    assert why == "no status line within 1.5s"
