"""PUBLIC killed with SIGKILL at random points of ``deploy push`` — blob upload, staging,
activation, the app switch, pruning — and by random kills from outside; after each restart
the data directory, the deployment and ``deploy status`` must explain what happened, and
running the same ``deploy push`` again must finish it.

The points and how they are chosen are described in README.md next to this file.
"""

from __future__ import annotations

import os
from typing import Any

from faultlib import (
    AGENT_POINTS,
    NONE,
    SETTINGS,
    Broken,
    Injection,
    Victim,
    check_data_dir,
    link,
    mutate,
)

from support import configure, deploy, deploy_json, wait_for

POINTS = AGENT_POINTS
SHARE = 0.5  # of the run's injections
EXTERNAL_DELAY_S = 0.6  # kills from outside land within this long after the push starts
IDLE_PUSHES = 3  # pushes without the planned crash firing before another plan is drawn


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
    first = agent_factory(keep=3)

    def start(env: dict[str, str]) -> Any:
        agent = agent_factory(like=public.handle, env=env)
        configure("public", agent)
        return agent

    public = Victim("public", first, start, agent_factory, POINTS, rng, EXTERNAL_DELAY_S)
    root = tiny_project(first.key_path)
    configure("public", first)
    mutate(root, 0, rng)
    assert deploy("push", "r0", "release 0").exit_code == 0
    current, previous = "r0", None
    fired, k, idle = public.restart(), 0, 0
    pending: str | None = None
    while fired < goal:
        if pending is None:
            k += 1
            pending = f"r{k}"
            mutate(root, k, rng)
        injection = public.injection
        public.kill_later()
        res = deploy("push", pending, f"release {pending}")
        killed = public.settle()
        where = f"push {pending} with {injection} ({SETTINGS.rerun()}); fired: {public.fired[-5:]}"
        if public.died(expected=res.exit_code != 0 or killed):
            fired += 1
            public.note(injection.point)
            if res.exit_code == 0:  # killed from outside after the push ended
                current, previous, pending = pending, current, None
            else:
                assert res.exit_code == 4, f"{where}: {res.output}"
                _, status = deploy_json("status", pending)
                assert status["deployment"]["state"] == "pushing", f"{where}: {status}"
                kinds = [e["kind"] for e in status["events"]]
                assert kinds[-1] == "push.interrupted", f"{where}: {kinds}"
                assert "stays pushing" in res.stderr, f"{where}: {res.output}"
            fired += public.restart()
            idle = 0
        else:
            assert res.exit_code == 0, f"{where}: {res.output}"
            current, previous, pending = pending, current, None
            idle += 1
            if idle >= IDLE_PUSHES:
                fired += public.restart()
                idle = 0
        agent = public.handle
        try:
            on_disk = check_data_dir(
                agent.data,
                allowed_current={current, pending},
                intact={current} | ({previous} if previous else set()),
            )
        except Broken as e:
            raise AssertionError(f"{where}: {e}\n{agent.output()}") from e
        if on_disk == pending:  # switched before the kill: the re-run finds it active
            assert link(agent.data, "previous") == current, where
        no_stray_apps(agent, on_disk, where)
        if agent.proc.poll() is None and on_disk is not None:
            running = wait_for(lambda a=agent: app_release(a), 15, where)
            assert running == on_disk, where
    # The last interrupted push, if any, finishes; then PUBLIC runs it.
    if pending is not None:
        public.restart(Injection(NONE))
        assert deploy("push", pending, f"release {pending}").exit_code == 0
        current = pending
    _, status = deploy_json("status", current)
    assert status["deployment"]["state"] == "pushed"
    assert check_data_dir(public.handle.data, {current}, {current}) == current
    assert deploy("audit", "verify").exit_code == 0


def test_an_app_spawned_just_before_a_crash_is_stopped_by_the_next_agent(
    agent_factory: Any, tiny_project: Any
) -> None:
    """Killed between spawning the new app and recording it in state.json, the agent leaves
    an app nobody knows of; the next agent finds it by its environment and stops it."""
    public = agent_factory(env={"ASHAT_CRASH_AT": "app.started:1"})
    root = tiny_project(public.key_path)
    configure("public", public)
    (root / "marker.txt").write_text("a1\n")
    assert deploy("push", "a1", "release a1").exit_code == 4
    assert public.proc.wait(10) == -9
    assert public.processes("a1"), "the crash should have left the app of a1 running"
    public = agent_factory(like=public)
    assert public.processes() == []  # stopped at start-up; a1 never became current
    assert "never recorded" in public.output()
    configure("public", public)
    code, out = deploy_json("push", "a1", "release a1")
    assert code == 0 and out["resumed"], out
    no_stray_apps(public, "a1", "after the re-run")
