"""Faults other than a crash of the verb itself: OMEGA restarted mid-rollout, PUBLIC gone
during verification, a mainframe offline for a whole wave, a full disk on an agent."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from faultlib import check_data_dir, rollouts_of

from support import configure, deploy, deploy_json, wait_for

SINGLE_WAVE = """[distribution]
waves = [100]
max_failure_ratio = 0.5
wave_timeout_s = 3
auto_rollback = false
"""


def state_of(update_id: str) -> str:
    code, status = deploy_json("status", update_id)
    assert code == 0, status
    return str(status["deployment"]["state"])


def ship(root: Path, uid: str) -> None:
    (root / "marker.txt").write_text(f"{uid}\n")
    assert deploy("push", uid, f"release {uid}").exit_code == 0
    assert deploy("verify", uid, "--only", "health").exit_code == 0


def installs(mainframe: Any) -> float:
    """How many directives the mainframe carried out (``installed``), from its /metrics."""
    text = httpx.get(f"{mainframe.url}/metrics", timeout=5).text
    m = re.search(r'^ashat_mainframe_installs_total\{result="installed"\} (\S+)$', text, re.M)
    assert m, text
    return float(m.group(1))


def test_omega_restarted_mid_rollout_resumes_and_completes_once(
    hello_fleet: Any, tiny_project: Any, agent_factory: Any
) -> None:
    fleet = hello_fleet(n=2, poll_wait=1, project=tiny_project)
    port = urlsplit(fleet.omega.url).port
    fleet.omega.stop()
    # This OMEGA dies right after it recorded the first mainframe's report.
    omega = agent_factory(like=fleet.omega, port=port, env={"ASHAT_CRASH_AT": "omega.report:1"})
    ship(fleet.root, "f1")
    assert deploy("approve", "f1", "--no-wait").exit_code == 0
    assert omega.proc.wait(30) == -signal.SIGKILL
    assert state_of("f1") == "distributing"  # status says OMEGA is unreachable, state kept
    omega = agent_factory(like=omega, port=port)
    wait_for(lambda: state_of("f1") == "completed", 60, "the rollout to complete")
    assert fleet.currents() == ["f1", "f1"]
    assert rollouts_of(omega.data, "f1") == [("install", "completed")]
    assert [installs(mf) for mf in fleet.mainframes] == [1.0, 1.0]
    kinds = [e["kind"] for e in deploy_json("log", "f1")[1]["events"]]
    assert kinds.count("deployment.completed") == 1, kinds
    assert deploy("audit", "verify").exit_code == 0


def test_public_unreachable_during_verify_gives_error_results_and_keeps_the_state(
    agent_factory: Any, tiny_project: Any
) -> None:
    public = agent_factory()
    root = tiny_project(public.key_path)
    toml = root / "ashat.toml"  # every check on: the crash is at the first one on the agent
    toml.write_text("".join(t for t in toml.read_text().splitlines(True) if "disabled" not in t))
    configure("public", public)
    (Path.cwd() / "marker.txt").write_text("v1\n")
    assert deploy("push", "v1", "release v1").exit_code == 0
    events_before = deploy_json("log", "v1")[1]["events"]
    # Gone before verify starts: nothing is recorded, the deployment stays pushed.
    public.stop()
    code, out = deploy_json("verify", "v1")
    assert code == 4 and "cannot reach" in out["error"], out
    assert state_of("v1") == "pushed"
    # Gone while the checks run (at the first check that runs on the agent).
    public = agent_factory(like=public, env={"ASHAT_CRASH_AT": "check.run:1"})
    configure("public", public)
    code, out = deploy_json("verify", "v1")
    assert public.proc.wait(10) == -signal.SIGKILL
    assert code == 1, out
    errors = [c for c in out["checks"] if c["status"] == "error"]
    assert errors, out
    for check in errors:
        assert re.search(r"cannot reach|broke|did not answer", check["summary"]), check
        assert "Traceback" not in str(check.get("details")), check
    assert state_of("v1") == "verification_failed"
    _, status = deploy_json("status", "v1")
    assert (
        "cannot reach" in status["deployment"]["reason"]
        or "broke" in (status["deployment"]["reason"])
    ), status
    # Back: verification runs again and passes; nothing recorded before was lost.
    public = agent_factory(like=public)
    configure("public", public)
    assert deploy("verify", "v1").exit_code == 0
    assert state_of("v1") == "verified"
    events_after = deploy_json("log", "v1")[1]["events"]
    assert events_after[: len(events_before)] == events_before
    assert deploy("audit", "verify").exit_code == 0


def test_mainframe_offline_for_a_whole_wave_times_out_then_catches_up(
    hello_fleet: Any, tiny_project: Any, mainframe_factory: Any
) -> None:
    fleet = hello_fleet(n=2, poll_wait=1, project=tiny_project)
    toml = fleet.root / "ashat.toml"
    text = toml.read_text()
    toml.write_text(text[: text.index("[distribution]")] + SINGLE_WAVE)
    offline = fleet.mainframes[0]
    offline.stop()
    ship(fleet.root, "w1")
    assert deploy("approve", "w1").exit_code == 0  # waits for the rollout to end
    _, status = deploy_json("status", "w1")
    assert status["deployment"]["state"] == "completed", status
    rollout_id = status["deployment"]["details"]["rollout_id"]
    with fleet.omega.client() as omega:
        rollout = omega.request("GET", f"/v1/fleet/rollouts/{rollout_id}")
    assert rollout["totals"] == {"targeted": 2, "installed": 1, "failed": 1, "pending": 0}
    assert "wave_timeout_s" in rollout["failures"][0]["reason"], rollout
    assert fleet.currents() == [None, "w1"]
    # Back online: it catches up with the release it missed, and its report counts late.
    back = mainframe_factory.restart(offline)
    mainframe_factory.ready(back)
    wait_for(lambda: back.current() == "w1", 30, "the offline mainframe to catch up")
    with fleet.omega.client() as omega:

        def caught_up() -> bool:
            totals = omega.request("GET", f"/v1/fleet/rollouts/{rollout_id}")["totals"]
            return bool(totals["installed"] == 2 and totals["failed"] == 0)

        wait_for(caught_up, 15, "its late report")
    assert rollouts_of(fleet.omega.data, "w1") == [("install", "completed")]
    time.sleep(2)  # polls go on: nothing more is sent to it
    assert installs(back) == 1.0


@pytest.mark.parametrize("point", ["blob.write", "stage.link", "stage.install"])
def test_disk_full_on_the_agent_fails_the_push_cleanly(
    agent_factory: Any, tiny_project: Any, point: str
) -> None:
    public = agent_factory(env={"ASHAT_CRASH_AT": f"{point}:1:enospc"})
    root = tiny_project(public.key_path)
    configure("public", public)
    (root / "marker.txt").write_text("d1\n")
    code, out = deploy_json("push", "d1", "release d1")
    assert code == 4, out
    assert "No space left on device" in out["error"] and "nothing was kept" in out["error"], out
    assert state_of("d1") == "pushing"
    # Nothing half-written, without a restart to clean up: no release, no temporary file,
    # and every blob that is stored is whole.
    assert check_data_dir(public.data, {None}, set()) is None
    assert list((public.data / "releases").iterdir()) == []
    assert public.proc.poll() is None
    # The disk has room again: the same push finishes.
    code, out = deploy_json("push", "d1", "release d1")
    assert code == 0 and out["resumed"], out
    assert check_data_dir(public.data, {"d1"}, {"d1"}) == "d1"


def test_omega_down_longer_than_the_wave_timeout_resumes_the_wave(
    hello_fleet: Any, tiny_project: Any, agent_factory: Any, mainframe_factory: Any
) -> None:
    """OMEGA dies right after recording the rollout and stays down past the wave's timeout:
    restarted, it gives the wave its whole timeout again instead of counting every mainframe
    failed for its own absence; the re-run ``deploy approve`` resumes the same rollout."""
    fleet = hello_fleet(n=2, poll_wait=1, project=tiny_project)
    toml = fleet.root / "ashat.toml"
    text = toml.read_text()
    toml.write_text(
        text[: text.index("[distribution]")]
        + SINGLE_WAVE.replace("max_failure_ratio = 0.5", "max_failure_ratio = 0").replace(
            "wave_timeout_s = 3", "wave_timeout_s = 8"
        )
    )
    port = urlsplit(fleet.omega.url).port
    fleet.omega.stop()
    omega = agent_factory(like=fleet.omega, port=port, env={"ASHAT_CRASH_AT": "omega.rollout:1"})
    # The mainframes wait out the outage stopped: after a long one their own back-off (up to
    # 30 s) would outlast this test's 8 s wave; restarted, they poll at once.
    for mf in fleet.mainframes:
        mf.stop()
    ship(fleet.root, "o1")
    code, out = deploy_json("approve", "o1", "--no-wait")
    assert code == 4 and "stays releasing" in out["error"], out
    assert omega.proc.wait(10) == -signal.SIGKILL
    time.sleep(8.5)  # past the wave's timeout
    omega = agent_factory(like=omega, port=port)
    back = [mainframe_factory.restart(mf) for mf in fleet.mainframes]
    mainframe_factory.ready(*back)
    assert deploy("approve", "o1", "--no-wait").exit_code == 0
    wait_for(lambda: state_of("o1") != "distributing", 30, "the rollout to end")
    assert state_of("o1") == "completed", deploy("status", "o1").output
    assert rollouts_of(omega.data, "o1") == [("install", "completed")]
    assert [mf.current() for mf in back] == ["o1", "o1"]
