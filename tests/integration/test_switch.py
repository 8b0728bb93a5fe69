"""A stable address and a switch that drops no request (issue 17): Debian's nginx runs
``contrib/nginx/app.conf`` in front of a real agent started with ``--upstream-file`` and
``--upstream-reload``; a load generator keeps asking through nginx while five pushes each
start a new release's app, move the traffic and stop the old app. Not one request fails."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.demo import free_port
from support import REPO, deploy

sys.path.insert(0, str(REPO / "bench"))
import nginx_run

pytestmark = pytest.mark.skipif(
    nginx_run.nginx_binary() is None,
    reason="nginx is not installed (apt-get install nginx-light; .ci/run does)",
)


class Load:
    """Threads asking ``url`` as fast as they can until stopped; what each answer was."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url, self.ok, self.failed, self.versions = url, 0, [], set()  # type: ignore[var-annotated]
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        # A new connection per request, as from many clients: nginx's reload closes the
        # idle kept-alive connections of its old workers, which a client must retry (RFC
        # 9112 §9.3.1); what is measured here is that no request sent is dropped.
        with httpx.Client(timeout=10, headers={"Connection": "close"}) as http:
            while not self.stop.is_set():
                try:
                    r = http.get(self.url)
                    good, why = r.status_code == 200, f"HTTP {r.status_code}"
                    version = r.json().get("version") if good else None
                except (httpx.HTTPError, ValueError) as e:
                    good, why, version = False, repr(e), None
                with self.lock:
                    if good:
                        self.ok += 1
                        self.versions.add(version)
                    else:
                        self.failed.append(why)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_five_switches_behind_nginx_drop_no_request(
    agent_factory: Any, hello_project: Any, tmp_path: Path
) -> None:
    home, port = tmp_path / "nginx-app", free_port()
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:9 down;\n")  # until the first release runs
    conf = nginx_run.adapt(
        "app.conf",
        {
            "/var/lib/ashat/public/upstream.conf": str(upstream),
            "listen 8080;": f"listen 127.0.0.1:{port};",
        },
    )
    server = nginx_run.start(home, conf, port)
    try:
        reload = f"{nginx_run.nginx_binary()} -p {home} -c {home / 'nginx.conf'} -s reload"
        agent = agent_factory(
            args=("--upstream-file", str(upstream), "--upstream-reload", reload,
                  "--upstream-drain", "1"),
        )  # fmt: skip
        root = hello_project(agent)
        res = deploy("push", "hello-001", "first")
        assert res.exit_code == 0, res.output
        assert "server 127.0.0.1:" in upstream.read_text()
        url = f"http://127.0.0.1:{port}/healthz"
        assert httpx.get(url, timeout=5).status_code == 200
        with Load(url) as load:
            for n in range(2, 7):  # five switches, each to a new release's app on a new port
                (root / "VERSION").write_text(f"1.0.{n}\n")
                res = deploy("push", f"hello-00{n}", f"release {n}")
                assert res.exit_code == 0, res.output
        assert load.failed == [], load.failed[:5]
        assert load.ok >= 1000, load.ok
        assert "1.0.6" in load.versions and len(load.versions) >= 3, load.versions
        assert "traffic moved to the app of hello-006" in agent.output()
    finally:
        server.stop()


def test_a_proxy_that_cannot_reload_fails_the_activation_and_the_old_app_serves(
    agent_factory: Any, hello_project: Any, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream.conf"
    agent = agent_factory(
        args=("--upstream-file", str(upstream), "--upstream-reload", "sh -c 'echo no; exit 3'"),
    )
    hello_project(agent)
    res = deploy("push", "hello-001", "first")
    assert res.exit_code == 1, res.output
    assert (
        "could not move traffic to the new app" in res.output
        and "exited with status 3" in res.output
    )
    assert not upstream.exists()  # put back as it was
    with agent.client() as c:
        assert c.health().get("current") is None  # nothing switched


def test_the_agents_own_address_switches_without_a_drop_where_no_proxy_runs(
    agent_factory: Any, hello_project: Any
) -> None:
    """``--app-listen``: the agent itself is the stable address (a TCP proxy to the current
    app); five switches under load, not one request failed; a busy address is refused
    before the agent starts."""
    port = free_port()
    agent = agent_factory(args=("--app-listen", f"127.0.0.1:{port}", "--upstream-drain", "1"))
    root = hello_project(agent)
    url = f"http://127.0.0.1:{port}/healthz"
    res = deploy("push", "hello-001", "first")
    assert res.exit_code == 0, res.output
    assert httpx.get(url, timeout=5).json()["status"] == "ok"
    with Load(url) as load:
        for n in range(2, 7):
            (root / "VERSION").write_text(f"1.0.{n}\n")
            res = deploy("push", f"hello-00{n}", f"release {n}")
            assert res.exit_code == 0, res.output
    assert load.failed == [], load.failed[:5]
    assert load.ok >= 1000 and "1.0.6" in load.versions, (load.ok, load.versions)

    # Another agent asking for the same address stops before it starts, saying why.
    import subprocess

    busy = subprocess.run(
        [*agent_factory.command(), "--role", "public", "--data", str(root.parent / "d2"),
         "--token-file", str(agent.token_file), "--trust", str(agent.pub_path),
         "--app-listen", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert busy.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr


def test_a_full_disk_as_the_links_move_stops_the_new_app_and_traffic_stays(
    agent_factory: Any, hello_project: Any
) -> None:
    """A review: a full disk between starting the new app and moving ``current`` (here
    ``switch.links`` failing with ENOSPC) answered 500, left ``previous`` moved, and left the
    new app running untracked — serving the stable address, while ``/v1/health`` named the
    old release. The activation now fails as storage (507), the new app is stopped, the
    address serves the old app again, and both links are as they were."""
    port = free_port()
    args = ("--app-listen", f"127.0.0.1:{port}", "--upstream-drain", "0")
    agent = agent_factory(args=args, env={"ASHAT_CRASH_AT": "switch.links:2:enospc"})
    root = hello_project(agent)
    url = f"http://127.0.0.1:{port}/healthz"
    assert deploy("push", "hello-001", "first").exit_code == 0  # switch.links: first pass
    (root / "VERSION").write_text("2.0.0\n")
    res = deploy("push", "hello-002", "second")
    assert res.exit_code != 0 and "No space left on device" in res.output, res.output
    assert "Traceback" not in res.output
    assert httpx.get(url, timeout=5).json()["version"] == "1.0.0"
    with agent.client() as c:
        health = c.health()
    assert (health["current"], health["previous"]) == ("hello-001", None), health
    assert health["app"]["port"] != port  # the old app, behind the stable address
    assert not _processes_of_release(agent.data, "hello-002"), "the new app still runs"


def _processes_of_release(data: Path, release: str) -> list[int]:
    """The processes an agent started for ``release`` (its ``ASHAT_RELEASE`` in their
    environment, with this agent's data directory)."""
    import os

    mine = f"ASHAT_RELEASE_DIR={data}/releases/{release}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if mine in env.split(b"\0"):
            found.append(int(pid))
    return found


# Apps that, three seconds after they came up healthy, fill their filesystem: with
# directories in their shared directory (its inodes), or through their stdout (their log).
_FILLER = r"""
import os, time, http.server, threading
def fill():
    time.sleep(3)
    n, chunk = 0, b"x" * (1 << 20)
    while True:
        try:
            if HOW == "inodes":
                os.mkdir(os.path.join(os.environ["ASHAT_SHARED_DIR"], "d%d" % n)); n += 1
            else:
                os.write(1, chunk)
        except OSError:
            time.sleep(0.05)
threading.Thread(target=fill, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """Agents whose data directory is on a filesystem of 64 MiB and 3,000 inodes."""
    import subprocess

    from process_fixtures import AgentFactory

    mnt = tmp_path / "fs"
    mnt.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=3000,mode=0755", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    factory = AgentFactory(mnt / "agents")
    try:
        yield factory
    finally:
        try:
            factory.close()
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("how", ["inodes", "log"])
def test_an_app_that_fills_the_disk_cannot_keep_a_rollback_away_from_it(
    small_disk: Any, trees: Any, tmp_path: Path, how: str
) -> None:
    """A review: an app that filled its filesystem (directories in its shared directory,
    or endless output into its log) left the agent no room to record the switch, and the
    rollback away from it failed (500) while it kept running. The agent now stops the app
    that runs, frees a reserve it keeps for this, and switches."""
    import time

    agent = small_disk()
    assert (agent.data / "reserve" / "blocks").stat().st_size == 8 << 20
    agent.deploy(trees.tiny("good1"), "good-1", sequence=1, app=trees.tiny_app())
    filler = tmp_path / "filler"
    filler.mkdir()
    (filler / "app.py").write_text(f"HOW = {how!r}\n" + _FILLER)
    app = {"run": "python3 app.py", "health_path": "/", "health_timeout_s": 10}
    agent.deploy(filler, "full-2", sequence=2, app=app)
    time.sleep(6)  # full
    with agent.client() as c:
        answer = c.rollback("full-2", "good-1")
    assert answer["current"] == "good-1", answer
    assert agent.link("current") == "releases/good-1"
    assert "the disk is full; stopping the app of full-2" in agent.output()
    assert agent.processes("full-2") == []


def test_a_rollback_without_room_even_so_leaves_the_app_that_ran_running(
    small_disk: Any, trees: Any, tmp_path: Path
) -> None:
    """A review of the fix above: with no reserve to free (an agent of the version before,
    or one started on a full disk), the rollback still fails, and it left the app it had
    stopped down for good, the agent answering "ok" with no app. It is started again (now,
    or by the watcher once there is room)."""
    import shutil
    import time

    from ashat.errors import AshatError
    from support import wait_for

    agent = small_disk()
    agent.deploy(trees.tiny("good1"), "good-1", sequence=1, app=trees.tiny_app())
    filler = tmp_path / "filler"
    filler.mkdir()
    (filler / "app.py").write_text("HOW = 'inodes'\n" + _FILLER)
    app = {"run": "python3 app.py", "health_path": "/", "health_timeout_s": 10}
    agent.deploy(filler, "full-2", sequence=2, app=app)
    shutil.rmtree(agent.data / "reserve")
    time.sleep(6)  # full
    with agent.client() as c, pytest.raises(AshatError):
        c.rollback("full-2", "good-1")
    for d in (agent.data / "shared").iterdir():  # the operator makes room
        if d.name.startswith("d"):
            d.rmdir()

    def healthy() -> bool:
        with agent.client() as c:
            answer = c.health().get("app")
        return isinstance(answer, dict) and answer.get("state") == "healthy"

    wait_for(healthy, 40, "the app of full-2 running again")
    assert agent.link("current") == "releases/full-2"
