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
    fleet = hello_fleet(n=2, poll_wait=1, project=tiny_project)
    omega_port = urlsplit(fleet.omega.url).port
    assert omega_port is not None
    goals = {
        "omega": SETTINGS.share(SHARES["omega"]),
        **{f"mf-{i}": SETTINGS.share(SHARES["mainframe"] / 2) for i in range(2)},
    }

    def start_mainframe(name: str) -> Any:
        def start(env: dict[str, str]) -> Any:
            handle = mainframe_factory.restart(victims[name].handle, env)
            mainframe_factory.ready(handle)
            return handle

        return start

    def start_omega(env: dict[str, str]) -> Any:
        return agent_factory(like=victims["omega"].handle, port=omega_port, env=env)

    victims = {
        "omega": Victim(
            "omega", fleet.omega, start_omega, agent_factory, OMEGA_POINTS, rng, EXTERNAL_DELAY_S
        ),
        **{
            f"mf-{i}": Victim(
                f"mf-{i}", mf, start_mainframe(f"mf-{i}"), mainframe_factory,
                MAINFRAME_POINTS, rng, EXTERNAL_DELAY_S,
            )
            for i, mf in enumerate(fleet.mainframes)
        },
    }  # fmt: skip
    fired = dict.fromkeys(victims, 0)
    runs: dict[str, str | None] = dict.fromkeys(victims)  # what each ran before this release
    for name, v in victims.items():  # every victim is armed, always (re-armed at each kill)
        fired[name] += v.restart()
    k = 0

    def check(name: str, new: str, where: str) -> None:
        data = victims[name].handle.data
        old = runs[name]
        try:
            check_data_dir(data, {old, new}, {old} if old else set(), victims[name].started_at)
        except Broken as e:
            raise AssertionError(f"{where}: {name}: {e}\n{victims[name].handle.output()}") from e

    def died(name: str, uid: str, where: str, expected: bool = False) -> bool:
        v = victims[name]
        if not v.died(expected):
            return False
        fired[name] += 1
        v.note(v.injection.point)
        # One that had its share runs unarmed from now on.
        fired[name] += v.restart(Injection(NONE) if fired[name] >= goals[name] else None)
        check(name, uid, where)
        return True

    def where(uid: str) -> str:
        armed = {n: str(v.injection) for n, v in victims.items()}
        recent = {n: v.fired[-3:] for n, v in victims.items()}
        return f"release {uid}, armed {armed} ({SETTINGS.rerun()}); fired {recent}"

    omega = victims["omega"]
    while any(fired[name] < goal for name, goal in goals.items()):
        k += 1
        uid = f"f{k}"
        mutate(fleet.root, k, rng)
        assert deploy("push", uid, f"release {uid}").exit_code == 0
        assert deploy("verify", uid, "--only", "health").exit_code == 0
        # deploy approve: OMEGA may die under it; it then stays releasing and is re-run.
        for _attempt in range(20):
            omega.kill_later()
            res = deploy("approve", uid, "--no-wait")
            killed = omega.settle()
            interrupted = died("omega", uid, where(uid), res.exit_code != 0 or killed)
            if interrupted and res.exit_code != 0:
                assert res.exit_code == 4, f"{where(uid)}: {res.output}"
                _, status = deploy_json("status", uid)
                assert status["deployment"]["state"] == "releasing", f"{where(uid)}: {status}"
                assert status["events"][-1]["kind"] == "release.interrupted", where(uid)
                continue
            assert res.exit_code == 0, f"{where(uid)}: {res.output}"
            break
        # The rollout: any victim may die under it, and is restarted (and re-armed) at once.
        for v in victims.values():
            v.kill_later()
        deadline = time.monotonic() + ROLLOUT_LIMIT_S
        state = None
        while time.monotonic() < deadline:
            for n in victims:
                died(n, uid, where(uid))
            code, status = deploy_json("status", uid)
            state = status.get("deployment", {}).get("state")
            if state == "completed":
                break
            assert state == "distributing", f"{where(uid)}: {code} {status}"
            time.sleep(0.2)
        for n, v in victims.items():
            if v.settle():
                died(n, uid, where(uid), expected=True)
        assert state == "completed", f"{where(uid)}: still {state} after {ROLLOUT_LIMIT_S}s"
        assert fleet.currents() == [uid, uid], f"{where(uid)}: {fleet.currents()}"
        assert rollouts_of(omega.handle.data, uid) == [("install", "completed")], where(uid)
        for n in victims:
            check(n, uid, where(uid))
            runs[n] = uid
    assert deploy("audit", "verify").exit_code == 0
