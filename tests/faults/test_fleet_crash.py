"""OMEGA and a Licensed Mainframe killed with SIGKILL at random points of ``deploy approve``
and of the rollout — blob relay, staging and activation on OMEGA, the rollout's start and
its reports; a mainframe's download, install, app switch and report — and by random kills
from outside. After each restart the victim's data directory must hold complete releases
only, an interrupted ``deploy approve`` must leave ``releasing`` and finish when re-run, and
every rollout must complete, once, with both mainframes on the new release.

The points and how they are chosen are described in README.md next to this file.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from faultlib import (
    AGENT_POINTS,
    NONE,
    SETTINGS,
    Broken,
    Injection,
    Victim,
    check_data_dir,
    mutate,
    rollouts_of,
)

from support import deploy, deploy_json

# How often one install passes each point on a mainframe, roughly (its agent's points too).
MAINFRAME_POINTS = {
    **AGENT_POINTS,
    "mainframe.download": 3,  # each chunk of a blob appended to its partial file
    "mainframe.fetched": 1,  # every blob in the store, nothing staged
    "mainframe.staged": 1,  # staged, not activated
    "mainframe.installed": 1,  # activated, not yet reported
    "mainframe.report": 1,  # the report queued in fleet.json, not yet sent
}
MAINFRAME_POINTS.pop("pack.received")  # a mainframe downloads; nothing sends it packs
# ... and on OMEGA, during deploy approve (relay, stage, activate) and the rollout.
OMEGA_POINTS = {
    **AGENT_POINTS,
    "omega.rollout": 1,  # the rollout recorded in fleet.db, not yet answered
    "omega.report": 2,  # a mainframe's report recorded, the rollout not yet driven
}
SHARES = {"mainframe": 0.25, "omega": 0.1}  # of the run's injections
EXTERNAL_DELAY_S = 1.5
ROLLOUT_LIMIT_S = 90.0  # for one rollout to complete, however often its victims die


def test_omega_and_mainframe_killed_mid_rollout(
    hello_fleet: Any, tiny_project: Any, agent_factory: Any, mainframe_factory: Any
) -> None:
    rng = SETTINGS.rng("fleet")
    goals = {name: SETTINGS.share(share) for name, share in SHARES.items()}
    fleet = hello_fleet(n=2, poll_wait=1, project=tiny_project)
    omega_port = urlsplit(fleet.omega.url).port
    assert omega_port is not None

    def start_mainframe(env: dict[str, str]) -> Any:
        handle = mainframe_factory.restart(victims["mainframe"].handle, env)
        mainframe_factory.ready(handle)
        return handle

    def start_omega(env: dict[str, str]) -> Any:
        return agent_factory(like=victims["omega"].handle, port=omega_port, env=env)

    victims = {
        "mainframe": Victim(
            "mainframe", fleet.mainframes[0], start_mainframe, mainframe_factory,
            MAINFRAME_POINTS, rng, EXTERNAL_DELAY_S,
        ),
        "omega": Victim(
            "omega", fleet.omega, start_omega, agent_factory, OMEGA_POINTS, rng, EXTERNAL_DELAY_S
        ),
    }  # fmt: skip
    fired = dict.fromkeys(victims, 0)
    runs = {"mainframe": fleet.mainframes[0].current(), "omega": None}  # what each ran before
    k = 0

    def check(name: str, new: str, where: str) -> None:
        data = victims[name].handle.data
        old = runs[name]
        try:
            check_data_dir(data, {old, new}, {old} if old else set())
        except Broken as e:
            raise AssertionError(f"{where}: {name}: {e}\n{victims[name].handle.output()}") from e

    def died(name: str, uid: str, where: str, expected: bool = False) -> bool:
        v = victims[name]
        if not v.died(expected):
            return False
        fired[name] += 1
        v.note(v.injection.point)
        fired[name] += v.restart()
        check(name, uid, where)
        return True

    while any(fired[name] < goal for name, goal in goals.items()):
        for n, v in victims.items():  # one that had its share runs unarmed from now on
            if fired[n] >= goals[n] and v.injection.point != NONE:
                v.restart(Injection(NONE))
        k += 1
        uid = f"f{k}"
        mutate(fleet.root, k, rng)
        assert deploy("push", uid, f"release {uid}").exit_code == 0
        assert deploy("verify", uid, "--only", "health").exit_code == 0
        name = rng.choices(
            [n for n in victims if fired[n] < goals[n]],
            [SHARES[n] for n in victims if fired[n] < goals[n]],
        )[0]
        v = victims[name]
        fired[name] += v.restart()
        where = (
            f"release {uid}, {name} with {v.injection} ({SETTINGS.rerun()}); fired {v.fired[-5:]}"
        )
        # deploy approve: OMEGA may die under it; it then stays releasing and is re-run.
        for _attempt in range(20):
            if name == "omega":
                v.kill_later()
            res = deploy("approve", uid, "--no-wait")
            killed = name == "omega" and v.settle()
            interrupted = died("omega", uid, where, res.exit_code != 0 or killed)
            if interrupted and res.exit_code != 0:
                assert res.exit_code == 4, f"{where}: {res.output}"
                _, status = deploy_json("status", uid)
                assert status["deployment"]["state"] == "releasing", f"{where}: {status}"
                assert status["events"][-1]["kind"] == "release.interrupted", where
                continue
            assert res.exit_code == 0, f"{where}: {res.output}"
            break
        # The rollout: either victim may die under it, and is restarted at once.
        if name == "mainframe":
            v.kill_later()
        deadline = time.monotonic() + ROLLOUT_LIMIT_S
        state = None
        while time.monotonic() < deadline:
            for n in victims:
                died(n, uid, where)
            code, status = deploy_json("status", uid)
            state = status.get("deployment", {}).get("state")
            if state == "completed":
                break
            assert state == "distributing", f"{where}: {code} {status}"
            time.sleep(0.2)
        if v.settle():
            died(name, uid, where, expected=True)
        assert state == "completed", f"{where}: still {state} after {ROLLOUT_LIMIT_S}s"
        assert fleet.currents() == [uid, uid], f"{where}: {fleet.currents()}"
        assert rollouts_of(victims["omega"].handle.data, uid) == [("install", "completed")], where
        for n in victims:
            check(n, uid, where)
            runs[n] = uid
    assert deploy("audit", "verify").exit_code == 0
