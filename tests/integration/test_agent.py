"""The agent as PUBLIC runs it: real processes on loopback, driven through AgentClient.

Stage and activate examples/hello-service, activate a second release (the old app stops
only after the new one is healthy), roll back, refuse a release whose app never becomes
healthy or whose prepare hook fails (nothing switches), prune to --keep, adopt the current
release after a restart (and after a crash), and serve https with a private CA.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from ashat.transport.errors import AgentRejected, TLSFailure
from support import alive, wait_for

# The fixtures' types, for annotations only (tests/ is not a package).
AgentFactory = Any
AgentHandle = Any
Trees = Any


def get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def healthy_app(agent: AgentHandle) -> dict[str, Any]:
    """/v1/health once it reports the app healthy."""
    with agent.client() as client:

        def ready() -> dict[str, Any] | None:
            h = client.health()
            return h if h["app"] and h["app"]["healthy"] else None

        return wait_for(ready, 15, "the app to be healthy")  # type: ignore[no-any-return]


# -- hello-service end to end -------------------------------------------------------------


def test_stage_and_activate_hello_service(
    agent_factory: AgentFactory, trees: Trees, tmp_path: Path
) -> None:
    agent = agent_factory()
    db = agent.data / "shared" / "hello.db"  # $ASHAT_SHARED_DIR: the release is read-only
    tree = trees.hello("hello")
    (tree / "serve.py").chmod(0o755)  # another mode than the blob store's 0644
    signed, built = agent.build(tree, "hello-1", app=trees.hello_app())
    with agent.client() as client:
        sent = agent.upload(client, signed, built)
        assert sorted(sent) == sorted(signed.blob_digests())
        assert client.missing(sorted(signed.blob_digests())) == []
        staged = client.stage(signed.to_bytes())
        assert staged == {
            "update_id": "hello-1",
            "sequence": 1,
            "files": len(signed.files),
            "bytes": signed.total_size,
            "already": False,
        }
        assert client.releases()["releases"][0]["status"] == "staged"
        answer = client.activate("hello-1")
        assert answer["current"] == "hello-1"
        assert answer["previous"] is None
        app = answer["app"]
        assert app["healthy"] is True and app["health_path"] == "/healthz"

        # The app really runs, in the release directory, with the server's app env.
        assert get(app["port"], "/healthz") == (200, {"status": "ok", "version": "1.0.0"})
        status, body = get(app["port"], "/api/items")
        assert status == 200 and len(body["items"]) >= 2
        assert db.is_file()
        # The app (and the sandbox that holds it) are one process group, led by app.pid.
        assert {os.getpgid(p) for p in agent.processes("hello-1")} == {app["pid"]}

        health = client.health()
        assert health["current"] == "hello-1" and health["previous"] is None
        assert health["role"] == "public" and health["app"]["pid"] == app["pid"]

        # Idempotence: re-upload, re-stage, re-activate change nothing.
        assert agent.upload(client, signed, built) == []
        assert client.stage(signed.to_bytes())["already"] is True
        again = client.activate("hello-1")
        assert again["current"] == "hello-1" and again["app"]["pid"] == app["pid"]
        listing = client.releases()
        assert [(r["update_id"], r["status"]) for r in listing["releases"]] == [
            ("hello-1", "current")
        ]

    # The data directory, as DESIGN §5 lays it out.
    data = agent.data
    assert agent.link("current") == "releases/hello-1"
    assert (data / "manifests" / "hello-1.json").read_bytes() == signed.to_bytes()
    # Every file is a hard link, to its blob or to the blob's copy with its own mode.
    assert {e.mode for e in signed.files} == {0o644, 0o755}
    for e in signed.files:
        st = (data / "releases" / "hello-1" / e.path).lstat()
        assert stat.S_IMODE(st.st_mode) == e.mode, e.path
        store = "sha256" if e.mode == 0o644 else f"mode-{e.mode:04o}"
        assert st.st_ino == (data / "blobs" / store / e.sha256[:2] / e.sha256).stat().st_ino
        assert st.st_mtime_ns == 10**9  # the store's mark: changed if written in place
    for sha in signed.blob_digests():
        blob = data / "blobs" / "sha256" / sha[:2] / sha
        assert stat.S_IMODE(blob.stat().st_mode) == 0o644
    assert (data / "logs" / "hello-1.log").is_file()
    state = json.loads((data / "state.json").read_text())
    assert [a["update_id"] for a in state["history"]] == ["hello-1"]
    assert os.listdir(data / "tmp") == []
    # The app env is never logged.
    assert str(db) not in agent.output()
    assert agent.token not in agent.output()


def test_second_release_rollback_and_history(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory()
    app = trees.hello_app()
    with agent.client() as client:
        one = agent.deploy(trees.hello("v1"), "hello-1", sequence=1, app=app)
        two = agent.deploy(trees.hello("v2", "2.0.0"), "hello-2", sequence=2, app=app)
        assert two["current"] == "hello-2" and two["previous"] == "hello-1"
        assert two["app"]["port"] != one["app"]["port"]
        assert get(two["app"]["port"], "/healthz")[1]["version"] == "2.0.0"
        wait_for(lambda: not alive(one["app"]["pid"]), 5, "the old app to exit")
        assert agent.link("previous") == "releases/hello-1"

        back = client.rollback(from_id="hello-2")
        assert back["current"] == "hello-1" and back["rolled_back"] == "hello-2"
        assert back["previous"] is None  # nothing was active before hello-1
        assert get(back["app"]["port"], "/healthz")[1]["version"] == "1.0.0"
        wait_for(lambda: not alive(two["app"]["pid"]), 5, "the rolled-back app to exit")
        statuses = {r["update_id"]: r["status"] for r in client.releases()["releases"]}
        assert statuses == {"hello-1": "current", "hello-2": "rolled_back"}

        # A rolled-back release is never a default target; `from` must be current.
        with pytest.raises(AgentRejected) as e:
            client.rollback()
        assert e.value.status == 409 and "no previous release" in e.value.body["error"]
        with pytest.raises(AgentRejected) as e:
            client.rollback(from_id="hello-2")
        assert e.value.status == 409 and "current release is hello-1" in e.value.body["error"]

        three = agent.deploy(trees.hello("v3", "3.0.0"), "hello-3", sequence=3, app=app)
        assert three["previous"] == "hello-1"
        back = client.rollback()
        assert (back["current"], back["previous"], back["rolled_back"]) == (
            "hello-1",
            None,
            "hello-3",
        )
        assert get(back["app"]["port"], "/healthz")[1]["version"] == "1.0.0"

        # Activating a rolled-back release on purpose is allowed, and un-marks it.
        again = client.activate("hello-2")
        assert (again["current"], again["previous"]) == ("hello-2", "hello-1")
        statuses = {r["update_id"]: r["status"] for r in client.releases()["releases"]}
        assert statuses == {"hello-1": "previous", "hello-2": "current", "hello-3": "rolled_back"}


def test_new_app_healthy_before_old_stops(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory(app_env={"APP_SECRET": "s3cr3t-value"})
    one = agent.deploy(trees.tiny("a"), "tiny-1", app=trees.tiny_app())
    _, body = get(one["app"]["port"], "/health")
    assert body["release"] == "tiny-1" and body["secret"] == "s3cr3t-value"
    assert Path(body["cwd"]).resolve() == (agent.data / "releases" / "tiny-1").resolve()
    agent.deploy(trees.tiny("b"), "tiny-2", sequence=2, app=trees.tiny_app())
    wait_for(lambda: "stop tiny-1" in agent.events(), 5, "tiny-1 to note its stop")
    assert agent.events() == [
        "start tiny-1",
        "healthy tiny-1",
        "start tiny-2",
        "healthy tiny-2",
        "stop tiny-1",
    ]
    assert "s3cr3t-value" not in agent.output()


# -- activations that fail leave everything as it was --------------------------------------


def test_app_never_healthy_keeps_the_old_release(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory()
    one = agent.deploy(trees.tiny("good"), "good-1", app=trees.tiny_app())
    sleeper = {
        "run": "python3 -c \"import time; print('sleeping, not serving', flush=True); "
        'time.sleep(60)"',
        "health_path": "/health",
        "health_timeout_s": 2,
    }
    agent.stage(trees.tiny("bad"), "bad-2", sequence=2, app=sleeper)
    with agent.client() as client, pytest.raises(AgentRejected) as e:
        client.activate("bad-2")
    assert e.value.status == 422
    assert e.value.body["error"].startswith("bad-2 did not become healthy within 2s")
    assert "sleeping, not serving" in e.value.body["log_tail"]
    assert agent.link("current") == "releases/good-1"
    assert get(one["app"]["port"], "/health")[1]["release"] == "good-1"
    assert not (agent.data / "releases" / "bad-2").exists()
    assert not (agent.data / "manifests" / "bad-2.json").exists()
    assert agent.processes() == [one["app"]["pid"]]

    crasher = {"run": "python3 -c \"import sys; print('boom'); sys.exit(3)\"", "health_path": "/"}
    agent.stage(trees.tiny("crash"), "crash-3", sequence=3, app=crasher)
    with agent.client() as client, pytest.raises(AgentRejected) as e:
        client.activate("crash-3")
    assert e.value.status == 422 and "exited with status 3" in e.value.body["error"]
    assert "boom" in e.value.body["log_tail"]
    with agent.client() as client:
        health = client.health()
        assert (health["current"], health["app"]["pid"]) == ("good-1", one["app"]["pid"])
        assert [r["update_id"] for r in client.releases()["releases"]] == ["good-1"]
        with pytest.raises(AgentRejected) as e:
            client.activate("crash-3")
        assert e.value.status == 404


def test_prepare_hook(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory()
    # The release is read-only to its hooks too: what a hook builds goes to the shared dir.
    build = (
        "python3 -c \"import os; d = os.environ['ASHAT_SHARED_DIR']; "
        "open(os.path.join(d, os.environ['ASHAT_RELEASE'] + '.txt'), 'w').write('assets')\""
    )
    one = agent.deploy(trees.tiny("a"), "prep-1", app=trees.tiny_app(prepare=build))
    assert (agent.data / "shared" / "prep-1.txt").read_text() == "assets"

    refuse = "python3 -c \"import sys; print('prepare says no'); sys.exit(4)\""
    agent.stage(trees.tiny("b"), "prep-2", sequence=2, app=trees.tiny_app(prepare=refuse))
    with agent.client() as client, pytest.raises(AgentRejected) as e:
        client.activate("prep-2")
    assert e.value.status == 422
    assert "exit status 4" in e.value.body["error"]
    assert "prepare says no" in e.value.body["log_tail"]
    assert "start prep-2" not in agent.events()  # the app was never started
    assert agent.link("current") == "releases/prep-1"
    assert not (agent.data / "releases" / "prep-2").exists()
    assert get(one["app"]["port"], "/health")[1]["release"] == "prep-1"


# -- pruning, restart, TLS -----------------------------------------------------------------


def test_keep_prunes_old_releases(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory(keep=2)
    for n in range(1, 6):
        agent.deploy(trees.tiny(f"r{n}"), f"r{n}", sequence=n)
    assert sorted(os.listdir(agent.data / "releases")) == ["r4", "r5"]
    assert sorted(os.listdir(agent.data / "manifests")) == ["r4.json", "r5.json"]
    agent.stage(trees.tiny("r6"), "r6", sequence=6)
    agent.deploy(trees.tiny("r7"), "r7", sequence=7)
    # The two most recent (r6 staged, r7 activated) plus previous (r5), never deleted.
    assert sorted(os.listdir(agent.data / "releases")) == ["r5", "r6", "r7"]
    with agent.client() as client:
        listing = client.releases()
    assert (listing["current"], listing["previous"]) == ("r7", "r5")
    # Blobs are shared and kept (no garbage collection yet).
    assert len(list((agent.data / "blobs").rglob("*/*/*"))) >= 7


def test_restart_adopts_current_and_reaps_orphans(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    agent = agent_factory()
    first = agent.deploy(trees.tiny("a"), "keep-1", app=trees.tiny_app())
    assert agent.stop() == 0  # SIGTERM: the app stops with the agent
    assert not alive(first["app"]["pid"])

    again = agent_factory(like=agent)
    health = healthy_app(again)
    assert health["current"] == "keep-1"
    assert health["app"]["pid"] != first["app"]["pid"]
    assert get(health["app"]["port"], "/health")[1]["release"] == "keep-1"

    # A crash (SIGKILL) orphans the app; the next agent stops it and starts its own.
    orphan = health["app"]["pid"]
    again.stop(signal.SIGKILL)
    assert alive(orphan)
    third = agent_factory(like=again)
    health = healthy_app(third)
    assert health["app"]["pid"] != orphan
    wait_for(lambda: not alive(orphan), 5, "the orphan to be stopped")
    assert third.processes() == [health["app"]["pid"]]


def test_https_with_a_private_ca(agent_factory: AgentFactory, trees: Trees) -> None:
    agent = agent_factory(tls=True)
    assert agent.url.startswith("https://127.0.0.1:")
    answer = agent.deploy(trees.tiny("t"), "tls-1")
    assert answer == {"current": "tls-1", "previous": None, "app": None}
    with agent.client() as client:
        assert client.health()["current"] == "tls-1"
    from ashat.transport.client import AgentClient

    with AgentClient(agent.url, agent.token, retries=0) as untrusting, pytest.raises(TLSFailure):
        untrusting.health()


def test_files_written_in_place_are_never_linked_again(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    """Release trees share inodes with the store; one written in place is not reused."""
    agent = agent_factory()
    tree = trees.tiny("t")
    (tree / "run.sh").write_text("#!/bin/sh\necho original\n")
    (tree / "run.sh").chmod(0o755)
    agent.deploy(tree, "ip-1")
    data_file = agent.data / "current" / "marker.txt"
    original = data_file.read_bytes()
    # What a careless app or prepare hook might do to its own release.
    with open(data_file, "r+b") as f:
        f.write(b"X" * len(original))
    with open(agent.data / "current" / "run.sh", "r+b") as f:
        f.write(b"#!/bin/sh\necho TAMPERED")

    signed, built = agent.build(tree, "ip-2", sequence=2)
    with agent.client() as client:
        marker_sha = next(e.sha256 for e in signed.files if e.path == "marker.txt")
        assert agent.upload(client, signed, built) == [marker_sha]  # dropped, so sent again
        client.stage(signed.to_bytes())
        client.activate("ip-2")
    assert (agent.data / "current" / "marker.txt").read_bytes() == original
    assert (agent.data / "current" / "run.sh").read_text() == "#!/bin/sh\necho original\n"
    assert os.access(agent.data / "current" / "run.sh", os.X_OK)


def test_an_app_that_dies_is_restarted_and_the_agent_says_so(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    """Issue 17: after the app was killed, /v1/health named the dead pid for minutes and the
    agent logged nothing. The agent restarts it (with a growing pause if it keeps dying),
    logs why, and health counts the restarts."""
    agent = agent_factory()
    first = agent.deploy(trees.tiny("a"), "crash-1", app=trees.tiny_app())["app"]
    os.killpg(first["pid"], signal.SIGKILL)  # the app and its sandbox
    with agent.client() as client:

        def restarted() -> dict[str, Any] | None:
            app = client.health()["app"]
            return app if app and app["pid"] != first["pid"] and app["healthy"] else None

        app = wait_for(restarted, 20, "the app to be restarted")
    assert app["restarts"] == 1 and app["last_exit"] == -signal.SIGKILL
    assert get(app["port"], "/health")[1]["release"] == "crash-1"
    log = agent.output()
    assert f"the app of crash-1 (pid {first['pid']}) exited" in log and "restarting" in log


def test_app_env_is_applied_by_reload_and_at_each_activation(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    """Issue 17, 5: --app-env was read only when the agent started; changing a secret
    meant restarting the agent, which stops its app."""
    from support import ashat

    agent = agent_factory(app_env={"APP_SECRET": "first-value"})
    env_file = agent.data.parent / "app.env"
    one = agent.deploy(trees.tiny("a"), "tiny-1", app=trees.tiny_app())
    assert get(one["app"]["port"], "/health")[1]["secret"] == "first-value"

    def app() -> dict[str, Any]:
        with agent.client() as c:
            return dict(c.health()["app"])

    # A file that does not parse is refused; the app keeps its environment.
    env_file.write_text("APP_SECRET second-value\n")
    assert ashat("agent", "reload", "--data", str(agent.data)).exit_code == 0
    wait_for(lambda: "--app-env not applied" in agent.output(), 10, "the refusal in the log")
    assert get(app()["port"], "/health")[1]["secret"] == "first-value"

    before = app()
    env_file.write_text("APP_SECRET=second-value\n")
    res = ashat("agent", "reload", "--data", str(agent.data))
    assert res.exit_code == 0 and "re-read --app-env" in res.stdout, res.output
    wait_for(lambda: app()["pid"] != before["pid"], 15, "the app restarted with the new env")
    after = app()
    assert after["healthy"] and get(after["port"], "/health")[1]["secret"] == "second-value"
    wait_for(lambda: not alive(before["pid"]), 5, "the old app to stop, after")

    def reloaded() -> bool:  # once the old app's whole group has stopped
        with agent.client() as c:
            return bool(c.health()["app_env"]["reloaded_at"])

    wait_for(reloaded, 15, "the reload's end")

    # Each activation reads the file as it is then.
    env_file.write_text("APP_SECRET=third-value\n")
    two = agent.deploy(trees.tiny("b"), "tiny-2", sequence=2, app=trees.tiny_app())
    assert get(two["app"]["port"], "/health")[1]["secret"] == "third-value"
    for value in ("first-value", "second-value", "third-value"):
        assert value not in agent.output()  # never in the agent's log
    res = ashat("agent", "reload", "--data", str(agent.data.parent / "nowhere"))
    assert res.exit_code == 2


def test_a_small_change_is_staged_from_the_current_tree(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    """Issue 20: staging a release that changes a few of its files links those files only;
    the rest of its tree is the current release's, copied after that one's switch."""
    agent = agent_factory()
    v1 = trees.tiny("v1", "one")
    for i in range(100):
        (v1 / "lib" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (v1 / "lib" / f"d{i % 7}" / f"m{i:03d}.py").write_text(f"VALUE = {i}\n")
    agent.deploy(v1, "v1", app=trees.tiny_app())
    healthy_app(agent)
    wait_for(lambda: any(p.name.startswith("template-v1") for p in (agent.data / "tmp").iterdir()),
             15, "the template of v1")  # fmt: skip
    v2 = trees.base / "v2"
    shutil.copytree(v1, v2)
    (v2 / "marker.txt").write_text("two")
    (v2 / "lib" / "d3" / "m003.py").unlink()
    (v2 / "lib" / "new").mkdir()
    (v2 / "lib" / "new" / "added.py").write_text("ADDED = True\n")
    agent.deploy(v2, "v2", sequence=2, app=trees.tiny_app())
    assert "staging v2 from the tree of v1: 2 entries removed, 2 made" in agent.output()
    tree = agent.data / "releases" / "v2"
    assert (tree / "marker.txt").read_text() == "two"
    assert not (tree / "lib" / "d3" / "m003.py").exists()
    assert (tree / "lib" / "new" / "added.py").read_text() == "ADDED = True\n"
    assert len(list(tree.rglob("*.py"))) == 101  # app.py, 99 kept, 1 added
    assert healthy_app(agent)["current"] == "v2"  # the activation found the tree whole


# -- without bwrap: what an app leaves behind ----------------------------------------------

LEAVER = """\
import os, sys
shared, release = os.environ["ASHAT_SHARED_DIR"], os.environ["ASHAT_RELEASE"]
if os.fork() == 0:  # leave: a new session, no parent of the app's, no mark in the environment
    os.setsid()
    if os.fork() == 0:
        path = os.path.join(shared, "left-" + release)
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        os.execve("/bin/sleep", ["sleep", "600"], {})
    os._exit(0)
os.execvp(sys.executable, [sys.executable, "app.py"])
"""


def _left_by(agent: AgentHandle, release: str) -> int | None:
    path = agent.data / "shared" / f"left-{release}"
    return int(path.read_text()) if path.exists() else None


def test_without_bwrap_what_an_app_leaves_behind_ends_with_it(
    agent_factory: AgentFactory, trees: Trees, tmp_path: Path
) -> None:
    """A review (2026-12-07): outside bwrap's PID namespace the agent stops an app by its
    process group, and a process that forked twice, called setsid() and dropped its
    environment kept running as the app's user after a switch, a rollback or the agent's
    stop. The app now starts under a child subreaper (ashat.agent.reaper), which ends what
    is left when the app ends or is stopped."""
    for d in [*reversed(tmp_path.parents), tmp_path]:  # the app's user reaches its release
        os.chmod(d, os.stat(d).st_mode | 0o001)
    agent = agent_factory(args=("--sandbox", "none"))
    left: list[int] = []
    try:
        for n in (1, 2):
            tree = trees.tiny(f"leaver-{n}")
            (tree / "leaver.py").write_text(LEAVER)
            agent.deploy(
                tree, f"leaver-{n}", sequence=n, app=trees.tiny_app(run="python3 leaver.py")
            )
            left.append(wait_for(lambda n=n: _left_by(agent, f"leaver-{n}"), 10, "a process left"))
            assert alive(left[-1])
        # the switch to leaver-2 stopped leaver-1's app: what it left went with it
        wait_for(lambda: not alive(left[0]), 10, "leaver-1's process to end with its app")
        assert alive(left[1])
        assert agent.stop() == 0
        wait_for(lambda: not alive(left[1]), 10, "leaver-2's process to end with the agent")
    finally:
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_without_bwrap_a_hook_stopped_at_its_timeout_takes_what_it_left(
    agent_factory: AgentFactory, trees: Trees, tmp_path: Path
) -> None:
    """Review: a hook past its timeout is killed with its group (SIGKILL), which ended the
    reaper too, and a process the hook had left the group with ran on. The agent tells the
    reaper to kill now instead (ashat.agent.confine.kill_group)."""
    for d in [*reversed(tmp_path.parents), tmp_path]:
        os.chmod(d, os.stat(d).st_mode | 0o001)
    agent = agent_factory(args=("--sandbox", "none"))
    tree = trees.tiny("hook-1")
    (tree / "leaver.py").write_text(
        LEAVER.replace("os.execvp(", "import time; time.sleep(600); os.execvp(")
    )
    pid = 0
    try:
        agent.stage(
            tree, "hook-1", app=trees.tiny_app(prepare="python3 leaver.py", prepare_timeout_s=2)
        )
        with agent.client() as client, pytest.raises(AgentRejected) as e:
            client.activate("hook-1")
        assert "prepare hook stopped after 2s: timed out" in e.value.body["error"]
        pid = wait_for(lambda: _left_by(agent, "hook-1"), 5, "the process the hook left")
        wait_for(lambda: not alive(pid), 10, "it to end with the hook")
    finally:
        with contextlib.suppress(OSError):
            if pid:
                os.kill(pid, signal.SIGKILL)
