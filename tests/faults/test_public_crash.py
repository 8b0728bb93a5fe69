"""PUBLIC killed with SIGKILL at random points of ``deploy push`` — blob upload, staging,
activation, the app switch, pruning — and by random kills from outside; after each restart
the data directory, the deployment and ``deploy status`` must explain what happened, and
running the same ``deploy push`` again must finish it.

The points and how they are chosen are described in README.md next to this file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from faultlib import NONE, SETTINGS, TALLY, Broken, Injection, check_data_dir, choose, link

from support import configure, deploy, deploy_json, wait_for

# How often one push of the tiny project passes each point on PUBLIC, roughly.
POINTS = {
    "blob.write": 3,  # each new blob's bytes as they are written
    "blob.commit": 3,  # each blob renamed into the store
    "pack.received": 1,  # a whole pack read and verified, nothing stored yet
    "stage.link": 6,  # each file linked into the staging tree
    "stage.install": 1,  # manifest written, tree not yet renamed into releases/
    "app.started": 1,  # the new app spawned, not yet recorded in state.json
    "switch.begin": 1,  # new app healthy, no symlink changed
    "switch.links": 1,  # previous replaced, current not yet
    "link.replace": 2,  # a new symlink made, not yet renamed over the old one
    "switch.done": 1,  # both symlinks switched, state.json not yet written
    "switch.old_stopped": 1,  # old app stopped, not yet untracked
    "state.save": 5,  # each write of state.json
    "release.remove": 1,  # a pruned release renamed into tmp/, its manifest not yet gone
}
SHARE = 0.5  # of the run's injections
EXTERNAL_DELAY_S = 0.6  # kills from outside land within this long after the push starts
IDLE_PUSHES = 3  # pushes without the planned crash firing before another plan is drawn


class Public:
    """The PUBLIC agent under test, restarted with each injection's environment."""

    def __init__(self, agent_factory: Any, rng: Any) -> None:
        self.factory = agent_factory
        self.rng = rng
        self.agent = agent_factory(keep=3)
        self.injection = Injection(NONE)

    def restart(self, injection: Injection | None = None) -> list[Injection]:
        """Stop (if alive) and start again under ``injection`` (default: a new draw). Start-up
        repairs the data directory, and may itself be killed: then that injection fired,
        and another is drawn. Returns the injections that fired while starting."""
        if self.agent.proc.poll() is None:
            self.agent.stop()
        fired = []
        self.injection = injection or choose(self.rng, POINTS, EXTERNAL_DELAY_S)
        while True:
            before = len(self.factory.handles)
            try:
                self.agent = self.factory(like=self.agent, env=self.injection.env())
                configure("public", self.agent)
                return fired
            except BaseException as e:  # pytest.fail() raises a BaseException
                if len(self.factory.handles) > before:
                    self.agent = self.factory.handles[-1]
                    killed = self.agent.proc.wait(5) == -signal.SIGKILL
                else:
                    killed = "exited with -9" in str(e)
                if not killed:
                    raise
            fired.append(self.injection)
            self.injection = choose(self.rng, POINTS, EXTERNAL_DELAY_S)

    def died(self, expected: bool) -> bool:
        """Whether the agent was killed (waiting for it a little when that is ``expected``)."""
        try:
            code = self.agent.proc.wait(5.0 if expected else 0.05)
        except subprocess.TimeoutExpired:
            return False
        assert code == -signal.SIGKILL, f"the agent exited with {code}:\n{self.agent.output()}"
        return True


def mutate(root: Path, k: int, rng: Any) -> None:
    """Make release ``k``'s tree: a new marker, one new small file, sometimes a large one."""
    (root / "marker.txt").write_text(f"release {k}\n")
    (root / "files" / f"small-{k % 4}.txt").write_bytes(rng.randbytes(rng.randint(0, 4000)))
    if rng.random() < 0.3:  # over the agent's small-blob size: streamed in pieces
        (root / "files" / "large.bin").write_bytes(rng.randbytes(300_000))


def app_release(agent: Any) -> str | None:
    """The release the running app says it is (the tiny app answers with it)."""
    with agent.client() as c:
        app = c.health().get("app")
    if not app or not app.get("healthy"):
        return None
    import httpx

    return str(httpx.get(f"http://127.0.0.1:{app['port']}/health", timeout=5).json()["release"])


def no_stray_apps(agent: Any, current: str | None, where: str) -> None:
    """Only the current release's app runs: every other one was stopped or reaped."""
    strays = [
        name
        for name in os.listdir(agent.data / "releases")
        if name != current and agent.processes(name)
    ]
    assert not strays, f"{where}: apps of {strays} still run; current is {current}"


def test_public_killed_mid_push(agent_factory: Any, tiny_project: Any) -> None:
    rng = SETTINGS.rng("public")
    goal = SETTINGS.share(SHARE)
    public = Public(agent_factory, rng)
    root = tiny_project(public.agent.key_path)
    configure("public", public.agent)
    mutate(root, 0, rng)
    assert deploy("push", "r0", "release 0").exit_code == 0
    current, previous = "r0", None
    fired, k, idle = 0, 0, 0
    pending: str | None = None
    log: list[str] = []

    def restart() -> None:
        nonlocal fired
        for injection in public.restart():
            fired += 1
            TALLY.add("public", f"{injection.point} (start-up)")
            log.append(f"start-up: {injection}")

    restart()
    while fired < goal:
        if pending is None:
            k += 1
            pending = f"r{k}"
            mutate(root, k, rng)
        injection = public.injection
        timer = None
        if injection.external:
            timer = threading.Timer(injection.delay_s, public.agent.proc.kill)
            timer.start()
        res = deploy("push", pending, f"release {pending}")
        if timer is not None:
            timer.cancel()
            timer.join()
        where = f"push {pending} with {injection} ({SETTINGS.rerun()}); so far: {log[-5:]}"
        if public.died(expected=res.exit_code != 0 or injection.external):
            fired += 1
            TALLY.add("public", injection.point)
            log.append(f"{pending}: {injection} -> exit {res.exit_code}")
            if res.exit_code == 0:  # killed from outside after the push ended
                current, previous, pending = pending, current, None
            else:
                assert res.exit_code == 4, f"{where}: {res.output}"
                _, status = deploy_json("status", pending)
                assert status["deployment"]["state"] == "pushing", f"{where}: {status}"
                kinds = [e["kind"] for e in status["events"]]
                assert kinds[-1] == "push.interrupted", f"{where}: {kinds}"
                assert "stays pushing" in res.stderr, f"{where}: {res.output}"
            restart()
            idle = 0
        else:
            assert res.exit_code == 0, f"{where}: {res.output}"
            current, previous, pending = pending, current, None
            idle += 1
            if idle >= IDLE_PUSHES:
                restart()
                idle = 0
        try:
            on_disk = check_data_dir(
                public.agent.data,
                allowed_current={current, pending},
                intact={current} | ({previous} if previous else set()),
            )
        except Broken as e:
            raise AssertionError(f"{where}: {e}\n{public.agent.output()}") from e
        if on_disk == pending:  # switched before the kill: the re-run finds it active
            assert link(public.agent.data, "previous") == current, where
        no_stray_apps(public.agent, on_disk, where)
        if public.agent.proc.poll() is None and on_disk is not None:
            assert wait_for(lambda: app_release(public.agent), 15, where) == on_disk, where
    # The last interrupted push, if any, finishes; then PUBLIC runs it.
    if pending is not None:
        public.restart(Injection(NONE))
        assert deploy("push", pending, f"release {pending}").exit_code == 0
        current = pending
    _, status = deploy_json("status", current)
    assert status["deployment"]["state"] == "pushed"
    assert check_data_dir(public.agent.data, {current}, {current}) == current
    assert deploy("audit", "verify").exit_code == 0
