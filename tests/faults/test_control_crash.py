"""``deploy push`` and ``deploy approve`` — real ``deploy`` processes — killed with SIGKILL at
their step boundaries (the ``push.*``, ``approve.*`` and ``release.*`` crash points) or from
outside at a random moment. After each kill ``deploy status`` must say where the deployment
stands, PUBLIC and OMEGA must hold complete releases only, and running the same verb again
must finish it (or be refused because it already finished); every release then completes
on the fleet, through one rollout.

The points and how they are chosen are described in README.md next to this file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from faultlib import (
    SETTINGS,
    TALLY,
    Broken,
    Injection,
    check_data_dir,
    choose,
    mutate,
    rollouts_of,
)

from support import configure, deploy, deploy_json

PUSH_POINTS = {  # in the deploy process, once per push
    "push.recorded": 1,  # the deployment recorded (pushing), nothing sent
    "push.uploaded": 1,  # blobs on PUBLIC, not staged
    "push.staged": 1,  # staged on PUBLIC, not activated
    "push.activated": 1,  # active on PUBLIC, the deployment still pushing
}
APPROVE_POINTS = {  # in the deploy process, once per approval
    "approve.recorded": 1,  # the approval recorded (approved), nothing released
    "release.started": 1,  # releasing, nothing sent to OMEGA
    "release.uploaded": 1,  # blobs relayed to OMEGA, not staged
    "release.countersigned": 1,  # staged and counter-signed on OMEGA, not active
    "release.activated": 1,  # active on OMEGA, no rollout yet
    "release.rollout": 1,  # the rollout started, the deployment still releasing
}
SHARE = 0.2  # of the run's injections
EXTERNAL_DELAY_S = 1.2  # deploy's start-up is ~0.2 s of it
SETTLE_S = 5.0  # for an agent to finish the request of a killed deploy
# Where a killed verb may leave the deployment (None: killed before it was recorded).
AFTER_PUSH = {None, "pushing", "pushed"}
AFTER_APPROVE = {"verified", "approved", "releasing", "distributing", "completed"}


def run_killed(args: list[str], injection: Injection) -> subprocess.CompletedProcess[str]:
    """``deploy ARGS`` as a process of its own under ``injection`` (its crash point, or a
    SIGKILL from here after its delay)."""
    env = {**os.environ, **injection.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ashat.cli.deploy", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    timer = None
    if injection.external:
        timer = threading.Timer(injection.delay_s, proc.kill)
        timer.start()
    out, err = proc.communicate(timeout=120)
    if timer is not None:
        timer.cancel()
        timer.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def state_of(update_id: str) -> str | None:
    code, status = deploy_json("status", update_id)
    if code == 2:  # no such deployment
        return None
    assert code == 0, status
    return str(status["deployment"]["state"])


def test_deploy_push_and_approve_killed_mid_way(hello_fleet: Any, tiny_project: Any) -> None:
    rng = SETTINGS.rng("control")
    goal = SETTINGS.share(SHARE)
    fleet = hello_fleet(n=1, poll_wait=1, project=tiny_project)
    fired, k = 0, 0
    public_run: str | None = None
    omega_run: str | None = None

    def check_tiers(uid: str, where: str) -> None:
        """The agents were not killed and may still be finishing a request of the killed
        ``deploy`` (an activation writing ``state.json``): what they hold must be complete
        once they are quiet. A leftover still there after SETTLE_S is a leftover."""
        for name, data, old in (
            ("PUBLIC", fleet.public.data, public_run),
            ("OMEGA", fleet.omega.data, omega_run),
        ):
            deadline = time.monotonic() + SETTLE_S
            while True:
                try:
                    check_data_dir(data, {old, uid}, {old} if old else set())
                    break
                except (Broken, OSError) as e:  # OSError: a file renamed away mid-scan
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{where}: {name}: {e}") from e
                    time.sleep(0.1)

    def verb(args: list[str], points: dict[str, int], after: set[str | None]) -> None:
        """Run ``deploy ARGS`` under an injection; if it was killed, check and re-run it."""
        nonlocal fired
        uid = args[1]
        # A deploy process passes each point once: the kill lands in this run.
        injection = choose(rng, points, EXTERNAL_DELAY_S, later=False)
        res = run_killed(args, injection)
        where = f"deploy {' '.join(args)} with {injection} ({SETTINGS.rerun()})"
        if res.returncode != -signal.SIGKILL:
            assert res.returncode == 0, f"{where}: {res.stdout}{res.stderr}"
            return
        fired += 1
        TALLY.add("control", injection.point)
        state = state_of(uid)
        assert state in after, f"{where}: left {state}"
        check_tiers(uid, where)
        again = deploy(*args)
        if state == "pushed":  # it had finished: a push of that id again is refused
            assert again.exit_code == 3, f"{where}: {again.output}"
        elif state == "completed":  # approve again reports how its rollout ended
            assert again.exit_code == 0 and "completed" in again.output, f"{where}: {again.output}"
        else:
            assert again.exit_code == 0, f"{where}: left {state}, re-run: {again.output}"

    while fired < goal:
        k += 1
        uid = f"c{k}"
        mutate(fleet.root, k, rng)
        verb(["push", uid, f"release {uid}"], PUSH_POINTS, AFTER_PUSH)
        assert state_of(uid) == "pushed"
        assert deploy("verify", uid, "--only", "health").exit_code == 0
        verb(["approve", uid], APPROVE_POINTS, AFTER_APPROVE)
        # A re-run with --no-wait may have left it distributing: follow it to its end.
        res = deploy("status", uid)
        if state_of(uid) == "distributing":
            assert deploy("approve", uid).exit_code == 0, res.output
        assert state_of(uid) == "completed", deploy("status", uid).output
        assert fleet.currents() == [uid]
        assert rollouts_of(fleet.omega.data, uid) == [("install", "completed")]
        public_run = omega_run = uid
        check_tiers(uid, f"after {uid}")
    assert deploy("audit", "verify").exit_code == 0


def test_resumed_push_reuses_its_signed_manifest(agent_factory: Any, tiny_project: Any) -> None:
    """The push killed after staging re-signs the very manifest PUBLIC staged: the re-run
    finishes instead of being refused as 'already staged with a different manifest'."""
    public = agent_factory()
    root = tiny_project(public.key_path)
    configure("public", public)
    (root / "marker.txt").write_text("one\n")
    res = run_killed(["push", "r1", "first"], Injection("push.staged"))
    assert res.returncode == -signal.SIGKILL
    assert state_of("r1") == "pushing"
    manifest = Path(".ashat/manifests/r1.json").read_bytes()
    code, out = deploy_json("push", "r1", "first")
    assert code == 0 and out["resumed"], out
    assert Path(".ashat/manifests/r1.json").read_bytes() == manifest
    assert (public.data / "manifests" / "r1.json").read_bytes() == manifest


def test_push_killed_after_activation_resumes_with_what_public_ran_before(
    agent_factory: Any, tiny_project: Any
) -> None:
    """The first attempt activated r2 before it was killed: the re-run finds r2 current, yet
    records r1 as PUBLIC's previous release, and a rollback of r2 goes back to r1."""
    public = agent_factory()
    root = tiny_project(public.key_path)
    configure("public", public)
    (root / "marker.txt").write_text("one\n")
    assert deploy("push", "r1", "first").exit_code == 0
    (root / "marker.txt").write_text("two\n")
    assert run_killed(["push", "r2", "second"], Injection("push.activated")).returncode == -9
    with public.client() as c:
        assert c.health()["current"] == "r2"
    code, out = deploy_json("push", "r2", "second")
    assert code == 0 and out["resumed"] and out["public_previous"] == "r1", out
    code, out = deploy_json("rollback", "r2")
    assert code == 0 and out["restored"] == "r1", out
