"""Several apps on one agent (``ashat agent --apps FILE``): each app is a whole agent over
DATA/apps/NAME at /apps/NAME, with its own token, keys, app env and releases, and takes
only releases of its own ``[app] name``. Real agent processes on loopback."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle.keys import generate_keypair
from ashat.demo import free_port
from process_fixtures import READY_RE, START_TIMEOUT_S, agent_command, processes_in, wait_ready
from support import deploy, enter_hello_project, verify_health_only, wait_for

APPS = ("notes", "polls")
REPO = Path(__file__).resolve().parents[2]


class Host:
    """One agent process serving several apps."""

    def __init__(self, home: Path, role: str, apps_toml: str, *args: str) -> None:
        self.home = home
        self.data = home / "data"
        (home / "apps.toml").write_text(apps_toml)
        self.log = home / "agent.log"
        argv = [
            *agent_command(), "--role", role, "--data", str(self.data),
            "--listen", "127.0.0.1:0", "--apps", str(home / "apps.toml"), *args,
        ]  # fmt: skip
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, cwd=home
            )
        self.url = wait_ready(self.proc, self.log, READY_RE, "agent", START_TIMEOUT_S).group(2)

    def app_url(self, name: str) -> str:
        return f"{self.url}/apps/{name}"

    def health(self, name: str | None = None) -> dict[str, object]:
        url = self.app_url(name) if name else self.url
        answer: dict[str, object] = httpx.get(f"{url}/v1/health", timeout=10).json()
        return answer

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        wait_for(lambda: not processes_in(self.data), 5, f"no process left in {self.data}")
        return code


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in reversed(started):
        assert host.stop() == 0, host.log.read_text()


def _token(path: Path) -> str:
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _app_project(root: Path, monkeypatch: pytest.MonkeyPatch, key: Path, name: str) -> Path:
    enter_hello_project(root, monkeypatch, key)
    toml = root / "ashat.toml"
    toml.write_text(toml.read_text().replace('name = "hello-service"', f'name = "{name}"', 1))
    return verify_health_only(root)


def test_two_apps_on_one_agent_each_with_its_own_token_env_and_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: list[Host]
) -> None:
    home = tmp_path / "host"
    home.mkdir()
    _, pub = generate_keypair("alpha", home)
    tokens = {name: _token(home / f"{name}.token") for name in APPS}
    (home / "polls.env").write_text("POLLS_SECRET=v4lue-one\n")
    host = Host(
        home,
        "public",
        f"""[notes]
token-file = "notes.token"
trust = ["{pub}"]

[polls]
token-file = "polls.token"
trust = ["alpha.pub"]  # relative to this file
app-env = "polls.env"
""",
    )
    hosts.append(host)
    root = host.health()
    assert root["role"] == "public" and sorted(root["apps"]) == list(APPS)  # type: ignore[call-overload]

    projects = {}
    for name in APPS:
        projects[name] = _app_project(tmp_path / name, monkeypatch, home / "alpha.key", name)
    # Each project talks to its own app: pushed, verified, running side by side.
    for n, name in enumerate(APPS):
        monkeypatch.chdir(projects[name])
        (projects[name] / "VERSION").write_text(f"{n + 1}.0.0\n")
        res = deploy(
            "configure", "public", host.app_url(name), "Staging",
            "--token-file", str(home / f"{name}.token"),
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert deploy("push", f"{name}-001", "first").exit_code == 0
        res = deploy("verify", f"{name}-001")
        assert res.exit_code == 0, res.output
    for name in APPS:
        health = host.health(name)
        assert health["current"] == f"{name}-001" and health["app_name"] == name
        assert processes_in(host.data / "apps" / name / "releases" / f"{name}-001")
    assert host.health(name="polls")["app_env"]["variables"] == 1  # type: ignore[index]
    assert host.health(name="notes")["app_env"]["variables"] == 0  # type: ignore[index]

    # One app's token is not the other's.
    answer = httpx.get(
        f"{host.app_url('polls')}/v1/releases",
        headers={"Authorization": f"Bearer {tokens['notes']}"},
        timeout=10,
    )
    assert answer.status_code == 401

    # A release of notes sent to polls is refused, naming both; nothing is staged there.
    monkeypatch.chdir(projects["notes"])
    res = deploy(
        "configure", "public", host.app_url("polls"), "Staging",
        "--token-file", str(home / "polls.token"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (projects["notes"] / "VERSION").write_text("1.1.0\n")
    res = deploy("push", "notes-002", "to the wrong app")
    assert res.exit_code != 0
    assert "of app 'notes'; this is app 'polls'" in res.output, res.output
    releases = os.listdir(host.data / "apps" / "polls" / "releases")
    assert releases == ["polls-001"]

    # The host's own URL: a clear error naming the apps and the URL to use.
    res = deploy(
        "configure", "public", host.url, "Staging", "--token-file", str(home / "notes.token")
    )
    assert res.exit_code == 0, res.output
    res = deploy("push", "notes-003", "to the host")
    assert res.exit_code != 0
    assert "serves several apps (notes, polls)" in res.output, res.output
    assert f"{host.url}/apps/notes" in res.output

    # SIGHUP (ashat agent reload --data DATA of the host) re-reads each app's env.
    (home / "polls.env").write_text("POLLS_SECRET=v4lue-two\nMORE=1\n")
    reload = subprocess.run(
        [*agent_command(), "reload", "--data", str(host.data)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert reload.returncode == 0, reload.stderr
    wait_for(
        lambda: host.health("polls")["app_env"]["variables"] == 2,  # type: ignore[index]
        30,
        "polls' new env applied",
    )
    # The agent names the variables that changed, once the app runs with them (it may
    # write that after the health above answers); their values never appear.
    wait_for(lambda: "reloaded (MORE, POLLS_SECRET)" in host.log.read_text(), 10, "the log")
    assert "v4lue-one" not in host.log.read_text() and "v4lue-two" not in host.log.read_text()

    # fsck of the host's data directory checks every app's.
    fsck = subprocess.run(
        [*agent_command(), "fsck", "--data", str(host.data), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert json.loads(fsck.stdout)["releases"] >= 2


@pytest.mark.parametrize(
    ("apps_toml", "fragment"),
    [
        ("", "no app in it"),
        ("[Notes]\n", "[Notes] is not an app name"),
        ('[notes]\nlisten = "127.0.0.1:1"\n', "[notes] listen: not an option an app sets"),
        ('[notes]\ntoken-file = "missing.token"\n', "token-file"),
        ('[notes]\ntoken-file = "t.token"\n', "app notes: the agent needs --trust"),
        ('[notes]\nsandbox = "none"\n', "[notes] sandbox: not an option an app sets"),
        (
            '[a]\ntoken-file = "t.token"\ntrust = ["t.token"]\n'
            '[b]\ntoken-file = "t.token"\ntrust = ["t.token"]\n',
            "apps a and b share a token",
        ),
        ("notes = 3\n", "notes must be a table"),
        ("[notes\n", "not a readable TOML file"),
    ],
)
def test_a_bad_apps_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, apps_toml: str, fragment: str
) -> None:
    (tmp_path / "apps.toml").write_text(apps_toml)
    _token(tmp_path / "t.token")
    argv = [
        *agent_command(), "--role", "public", "--data", str(tmp_path / "data"),
        "--listen", "127.0.0.1:0", "--apps", str(tmp_path / "apps.toml"),
    ]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert fragment in res.stderr, res.stderr
    assert not (tmp_path / "data" / "apps").exists()


FLEET_WAVES = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 60
auto_rollback = false
"""


def _two_app_fleet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hosts: list[Host],
    omega_extra: Callable[[str], str] = lambda name: "",
) -> tuple[Path, dict[str, Path], Host, Host, Host]:
    """PUBLIC, OMEGA and a mainframe, each one host agent with the two apps (each app with
    its own OMEGA key, license and fleet; ``omega_extra(name)``: more of its OMEGA table),
    and a project for each app configured for them: (keys, projects, public, omega,
    mainframe)."""
    import datetime as dt

    from ashat.bundle.keys import load_private_key
    from ashat.fleet.license import issue

    keys = tmp_path / "keys"
    keys.mkdir()
    _, alpha_pub = generate_keypair("alpha", keys)
    public_apps, omega_apps, mainframe_apps = [], [], []
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    for name in APPS:
        _token(keys / f"{name}.token")
        generate_keypair(f"{name}-omega", keys)
        license_key, license_pub = generate_keypair(f"{name}-license", keys)
        token, _ = issue(load_private_key(license_key), "mf-1", "ACME", expires)
        (keys / f"{name}.license").write_text(token + "\n")
        (keys / f"{name}.license").chmod(0o600)
        own = f'[{name}]\ntoken-file = "{keys}/{name}.token"\ntrust = ["{alpha_pub}"]\n'
        public_apps.append(own)
        omega_apps.append(
            own
            + f'omega-key = "{keys}/{name}-omega.key"\nlicense-trust = ["{license_pub}"]\n'
            + omega_extra(name)
        )
        mainframe_apps.append(
            f'[{name}]\ntrust = ["{alpha_pub}"]\nlicense = "{keys}/{name}.license"\n'
            f'trust-omega = ["{keys}/{name}-omega.pub"]\n'
        )
    for role, tables in (("public", public_apps), ("omega", omega_apps)):
        (tmp_path / role).mkdir()
        hosts.append(Host(tmp_path / role, role, "\n".join(tables), "--poll-timeout", "2"))
    public, omega = hosts
    (tmp_path / "mf-1").mkdir()
    tables = [
        t + f'omega = "{omega.app_url(name)}"\npoll-wait = 1\n'
        for name, t in zip(APPS, mainframe_apps, strict=True)
    ]
    mainframe = Host(tmp_path / "mf-1", "mainframe", "\n".join(tables))
    hosts.append(mainframe)

    projects = {}
    for name in APPS:
        root = _app_project(tmp_path / name, monkeypatch, keys / "alpha.key", name)
        toml = root / "ashat.toml"
        text = toml.read_text()
        toml.write_text(text[: text.index("[distribution]")] + FLEET_WAVES)
        projects[name] = root
        for tier, host in (("public", public), ("omega", omega)):
            res = deploy(
                "configure", tier, host.app_url(name), tier.title(),
                "--token-file", str(keys / f"{name}.token"),
            )  # fmt: skip
            assert res.exit_code == 0, res.output
    return keys, projects, public, omega, mainframe


def _ship(monkeypatch: pytest.MonkeyPatch, root: Path, update_id: str, version: str) -> None:
    """Push, verify and approve one release of the project at ``root``."""
    monkeypatch.chdir(root)
    (root / "VERSION").write_text(version + "\n")
    assert deploy("push", update_id, version).exit_code == 0
    res = deploy("verify", update_id)
    assert res.exit_code == 0, res.output
    res = deploy("approve", update_id, "--as", "bob")
    assert res.exit_code == 0, res.output
    assert deploy("status", update_id).stdout.count("completed") >= 1


def test_one_agent_per_host_carries_two_apps_from_alpha_to_a_mainframe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: list[Host]
) -> None:
    """PUBLIC, OMEGA and a mainframe are each one host agent with two apps: each app has
    its own OMEGA key, license and fleet; both reach the mainframe, and a rollback of one
    leaves the other as it was."""
    keys, projects, _, omega, mainframe = _two_app_fleet(tmp_path, monkeypatch, hosts)
    for n, name in enumerate(APPS):
        for k, version in enumerate((f"{n + 1}.0.0", f"{n + 1}.1.0")):
            _ship(monkeypatch, projects[name], f"{name}-00{k + 1}", version)

    def currents() -> dict[str, object]:
        return {name: mainframe.health(name)["current"] for name in APPS}

    wait_for(lambda: currents() == {"notes": "notes-002", "polls": "polls-002"}, 30, "both")
    for name in APPS:
        assert processes_in(mainframe.data / "apps" / name / "releases" / f"{name}-002")
        token = (keys / f"{name}.token").read_text().strip()
        listed = httpx.get(
            f"{omega.app_url(name)}/v1/fleet/mainframes",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["mainframes"]
        assert [(m["mainframe_id"], m["current"]) for m in listed] == [("mf-1", f"{name}-002")]

    # Rolling one app back leaves the other as it was.
    monkeypatch.chdir(projects["notes"])
    res = deploy("rollback", "notes-002", "--reason", "a bad night")
    assert res.exit_code == 0, res.output
    wait_for(lambda: currents() == {"notes": "notes-001", "polls": "polls-002"}, 30, "notes back")


def test_each_app_of_a_host_omega_sends_its_blobs_through_its_own_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: list[Host]
) -> None:
    """``blob-mirror`` in each app's table: each app's OMEGA redirects its own mainframes
    to its own mirror (a real nginx with contrib/nginx/blob-mirror.conf over that app's
    blob directory), signed with its own secret; the other's mirror refuses the URL."""
    sys.path.insert(0, str(REPO / "bench"))
    import nginx_run

    if nginx_run.nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light; .ci/run does)")
    secrets_dir = tmp_path / "mirror-secrets"
    secrets_dir.mkdir()
    ports = {name: free_port() for name in APPS}
    for name in APPS:
        (secrets_dir / name).write_text(f"{name}-mirror-secret-0123456789\n")
        (secrets_dir / name).chmod(0o600)

    def mirror_of(name: str) -> str:
        return (
            f'blob-mirror = "http://127.0.0.1:{ports[name]}/ashat"\n'
            f'blob-mirror-secret-file = "{secrets_dir / name}"\n'
        )

    mirrors = {}
    blobs = tmp_path / "omega" / "data" / "apps"  # each app's, on the host OMEGA
    try:
        for name in APPS:
            conf = nginx_run.adapt(
                "blob-mirror.conf",
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{ports[name]};",
                    "ssl_certificate     /etc/ashat/tls/blobs.crt;   # CHANGE": "",
                    "ssl_certificate_key /etc/ashat/tls/blobs.key;": "",
                    "CHANGE-this-secret-16+chars": f"{name}-mirror-secret-0123456789",
                    "/srv/ashat-blobs/": f"{blobs / name / 'blobs'}/",
                },
            )
            mirrors[name] = nginx_run.start(tmp_path / f"nginx-{name}", conf, ports[name])
        keys, projects, _, omega, mainframe = _two_app_fleet(
            tmp_path, monkeypatch, hosts, omega_extra=mirror_of
        )
        for name in APPS:
            _ship(monkeypatch, projects[name], f"{name}-001", "1.0.0")
        wait_for(
            lambda: (
                [mainframe.health(name)["current"] for name in APPS] == ["notes-001", "polls-001"]
            ),
            30,
            "both apps installed",
        )
        sent = {}
        for name in APPS:

            def served(name: str = name) -> list[str]:
                rows = mirrors[name].access()
                return [r["uri"].split("?")[0] for r in rows if r["status"] in ("200", "206")]

            wait_for(lambda: bool(served()), 5, f"{name}'s mirror log")  # logged after
            sent[name] = served()
            assert len(sent[name]) == 1 and sent[name][0].startswith("/ashat/packs/"), sent
        # a URL of one app's OMEGA opens nothing on the other app's mirror
        lic = (keys / "notes.license").read_text().strip()
        pack = sent["polls"][0].rsplit("/", 1)[1]
        notes_pack = sent["notes"][0].rsplit("/", 1)[1]
        answer = httpx.get(
            f"{omega.app_url('notes')}/v1/packs/notes-001/{notes_pack}",
            headers={"Authorization": f"License {lic}"},
            timeout=10,
        )
        assert answer.status_code == 307, answer.text
        url = answer.headers["location"]
        assert url.startswith(f"http://127.0.0.1:{ports['notes']}/ashat/packs/{notes_pack}?")
        assert httpx.get(url, timeout=10).status_code == 200
        other = url.replace(str(ports["notes"]), str(ports["polls"]))
        assert httpx.get(other, timeout=10).status_code == 403  # polls' secret signs there
        assert pack != notes_pack
    finally:
        for n in mirrors.values():
            n.stop()


def test_an_app_of_a_host_agent_reads_nothing_of_the_other_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: list[Host]
) -> None:
    """The hostile app of test_hostile_app, as one app of a host agent, sandboxed: it
    reads neither app's token, the other app's app env, nor the other app's data."""
    from test_hostile_app import SPY, SPY_TOML, bwrap_or_skip

    from support import project_maker

    bwrap_or_skip()
    home = tmp_path / "host"
    home.mkdir()
    _, pub = generate_keypair("alpha", home)
    tokens = {name: _token(home / f"{name}.token") for name in ("spy", "notes")}
    (home / "notes.env").write_text("NOTES_SECRET=s3cr3t-value\n")
    host = Host(
        home,
        "public",
        f'[spy]\ntoken-file = "spy.token"\ntrust = ["{pub}"]\n\n'
        f'[notes]\ntoken-file = "notes.token"\ntrust = ["{pub}"]\napp-env = "notes.env"\n',
        "--sandbox",
        "bwrap",
    )
    hosts.append(host)
    other = host.data / "apps" / "notes"
    targets = [
        str(home / "spy.token"), str(home / "notes.token"), str(home / "notes.env"),
        str(other), str(other / "state.json"), str(other / "shared"), str(host.data / "apps"),
    ]  # fmt: skip
    files = {"spy.py": SPY, "VERSION": "1.0.0\n", "targets.json": json.dumps(targets)}
    root = project_maker(tmp_path / "spy", monkeypatch, {**files, "ashat.toml": SPY_TOML})(
        home / "alpha.key"
    )
    res = deploy(
        "configure", "public", host.app_url("spy"), "Staging",
        "--token-file", str(home / "spy.token"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = deploy("push", "spy-1", "a hostile app beside another")
    assert res.exit_code == 0, res.output
    text = (host.data / "apps" / "spy" / "shared" / "spy-spy-1.json").read_text()
    for secret in (*tokens.values(), "s3cr3t-value"):
        assert secret not in text
    for path, seen in json.loads(text)["loot"].items():
        assert "text" not in seen, f"the app read {path}"
        # of the data directories, its own path down to its release and shared/ only
        assert set(seen.get("listing", [])) <= {"spy", "releases", "shared", "spy-1"}, seen
    assert root.is_dir()


@pytest.mark.parametrize(
    ("role", "option", "fragment"),
    [
        ("public", ("--token-file", "t.token"), "--token-file: with --apps each app sets its own"),
        (
            "omega",
            ("--blob-mirror", "https://blobs.example.com/ashat"),
            "--blob-mirror: with --apps each app's blobs are its own: set blob-mirror",
        ),
        ("omega", ("--blob-offload", "nginx"), "--blob-offload serves one blob directory"),
    ],
)
def test_options_each_app_must_have_of_its_own_are_refused_on_the_host_line(
    tmp_path: Path, role: str, option: tuple[str, str], fragment: str
) -> None:
    """One --token-file (or --db, --app-env, a mirror, ...) for every app would be one
    token, one fleet, one copy of the blobs for all: refused, naming the option."""
    _token(tmp_path / "t.token")
    (tmp_path / "apps.toml").write_text('[notes]\ntoken-file = "t.token"\n')
    flag, value = option
    argv = [
        *agent_command(), "--role", role, "--data", str(tmp_path / "data"),
        "--listen", "127.0.0.1:0", flag, str(tmp_path / value) if flag == "--token-file"
        else value, "--apps", str(tmp_path / "apps.toml"),
    ]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert fragment in res.stderr, res.stderr
    assert not (tmp_path / "data" / "apps").exists()


def test_the_sandbox_hides_the_other_apps_even_where_it_binds_their_parent() -> None:
    """A host's data directory under a directory the sandbox shows (/opt): the whole host
    directory is covered, not only the app's own."""
    from ashat.agent.confine import Jail

    host = Path("/opt/ashat-test-host")
    jail = Jail("bwrap", bwrap="/usr/bin/bwrap", data=host)
    release = host / "apps" / "spy" / "releases" / "spy-1"
    argv = jail.command(["true"], cwd=release, writable=host / "apps" / "spy" / "shared")
    assert ("--tmpfs", str(host)) in itertools.pairwise(argv)


# An app that looks for another app's secret in every process's environment and writes
# into the other app's shared directory; it says what it managed in its own.
SNOOP = r"""
import os, json, http.server
from pathlib import Path
shared = Path(os.environ["ASHAT_SHARED_DIR"])
other = shared.parent.parent / "polls" / "shared"
found = {}
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        continue
    if b"POLLS_SECRET=" in env:
        found["environ"] = pid
try:
    (other / "planted-by-notes").write_text("owned")
    found["wrote"] = True
except OSError as e:
    found["refused"] = e.strerror
(shared / "snoop.json").write_text(json.dumps(found))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _ship_tree(
    url: str, token: str, key: Path, tree: Path, update_id: str, app: dict[str, Any]
) -> None:
    import datetime as dt

    from ashat.bundle import build_from_dir, sign_manifest
    from ashat.bundle.keys import load_private_key
    from ashat.transport.client import AgentClient, BlobRef

    built = build_from_dir(
        tree, update_id=update_id, sequence=1, description="x", app=app,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    signed = sign_manifest(built.manifest, load_private_key(key))
    with AgentClient(url, token) as c:
        sizes = {e.sha256: e.size for e in signed.files if e.kind == "file"}
        c.upload([BlobRef(d, sizes[d], built.blobs[d]) for d in c.missing(sorted(sizes))])
        c.stage(signed.to_bytes())
        c.activate(update_id)


@pytest.mark.skipif(os.geteuid() != 0, reason="apps as users of their own need a root agent")
def test_apps_of_a_host_agent_without_bwrap_each_run_as_a_user_of_their_own(
    tmp_path: Path, hosts: list[Host], trees: Any
) -> None:
    """A review: a root host agent without bwrap (--sandbox none) ran every app as the one
    --app-user, so notes read polls' --app-env secret in /proc and wrote polls' shared/.
    Two apps sharing a user there are refused now; each may have its own app-user."""
    for d in [*reversed(tmp_path.parents), tmp_path]:  # the apps' users reach their dirs
        os.chmod(d, os.stat(d).st_mode | 0o001)
    home = tmp_path / "host"
    home.mkdir()
    key, pub = generate_keypair("alpha", home)
    tokens = {name: _token(home / f"{name}.token") for name in APPS}
    (home / "polls.env").write_text("POLLS_SECRET=s3cr3t-of-polls\n")
    (home / "polls.env").chmod(0o600)
    apps = f"""[notes]
token-file = "notes.token"
trust = ["{pub}"]

[polls]
token-file = "polls.token"
trust = ["{pub}"]
app-env = "polls.env"
"""
    (home / "apps.toml").write_text(apps)
    refused = subprocess.run(
        [*agent_command(), "--role", "public", "--data", str(home / "data"), "--listen",
         "127.0.0.1:0", "--apps", str(home / "apps.toml"), "--sandbox", "none",
         "--app-user", "nobody"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "apps notes and polls would both run as nobody without bwrap" in refused.stderr
    assert not (home / "data").exists()

    apps = apps.replace('app-env = "polls.env"', 'app-env = "polls.env"\napp-user = "daemon"')
    host = Host(home, "public", apps, "--sandbox", "none", "--app-user", "nobody")
    hosts.append(host)
    isolation = {name: host.health(name)["app_isolation"] for name in APPS}
    assert {n: (i["mode"], i["user"]) for n, i in isolation.items()} == {  # type: ignore[index]
        "notes": ("user", "nobody"),
        "polls": ("user", "daemon"),
    }
    _ship_tree(host.app_url("polls"), tokens["polls"], key, trees.tiny("p1"), "polls-1",
               trees.tiny_app(name="polls"))  # fmt: skip
    snoop = tmp_path / "snoop"
    snoop.mkdir()
    (snoop / "app.py").write_text(SNOOP)
    _ship_tree(host.app_url("notes"), tokens["notes"], key, snoop, "notes-1",
               {"run": "python3 app.py", "health_path": "/", "name": "notes"})  # fmt: skip
    report = host.data / "apps" / "notes" / "shared" / "snoop.json"
    wait_for(report.exists, 10, "the snoop's report")
    found = json.loads(report.read_text())
    assert found == {"refused": "Permission denied"}, found
    assert not (host.data / "apps" / "polls" / "shared" / "planted-by-notes").exists()
