"""The seed's whole session through the ``deploy`` CLI: push and verify on a real PUBLIC,
approve, release to a real OMEGA, and distribution to real Licensed Mainframes — completing,
absorbing one failure within budget, breaking the budget into an automatic rollback, and
rolling a completed release back."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.fleet.license import issue
from support import (
    ashat,
    configure,
    deploy,
    deploy_json,
    enter_hello_project,
    verify_health_only,
    wait_for,
)

# A release whose prepare hook needs a server-side setting that some mainframes lack: it
# passes on PUBLIC (which has the setting) and fails on those mainframes.
MIGRATE = """import os, sys
if os.environ.get("MIGRATE_OK") != "1":
    sys.exit("migration refused: MIGRATE_OK is not set on this server")
"""


@dataclass
class Stack:
    root: Path
    public: Any
    omega: Any
    mainframes: list[Any]

    def currents(self) -> list[str | None]:
        return [mf.health()["current"] for mf in self.mainframes]

    def ship(self, update_id: str, version: str, *, needs_migration: bool = False) -> None:
        """Change the tree, push and verify it as alice (health only, to keep tests short)."""
        (self.root / "VERSION").write_text(version + "\n")
        toml = (self.root / "ashat.toml").read_text()
        if needs_migration and "prepare" not in toml:
            (self.root / "migrate.py").write_text(MIGRATE)
            toml = toml.replace("[app]\n", '[app]\nprepare = "python3 migrate.py"\n', 1)
            (self.root / "ashat.toml").write_text(toml)
        res = deploy("push", update_id, f"version {version}")
        assert res.exit_code == 0, res.output
        res = deploy("verify", update_id, "--only", "health")
        assert res.exit_code == 0, res.output


@pytest.fixture
def stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_factory: Any,
    mainframe_factory: Any,
) -> Callable[..., Stack]:
    def make(n: int, distribution: str, unmigrated: int = 0) -> Stack:
        public = agent_factory(app_env={"MIGRATE_OK": "1"})
        omega = agent_factory(
            role="omega",
            poll_timeout=5,
            extra_trust=(public.pub_path,),
            app_env={"MIGRATE_OK": "1"},
        )
        root = enter_hello_project(
            tmp_path / "alpha", monkeypatch, public.key_path, distribution=distribution
        )
        verify_health_only(root)
        configure("public", public)
        configure("omega", omega)
        now = dt.datetime.now(dt.UTC)
        mfs = []
        for i in range(n):
            token, _ = issue(omega.license_key, f"mf-{i}", "ACME", now + dt.timedelta(days=30))
            env = {} if i < unmigrated else {"MIGRATE_OK": "1"}
            mfs.append(
                mainframe_factory.start(
                    omega=omega.url,
                    license_token=token,
                    mainframe_id=f"mf-{i}",
                    trust=public.pub_path,
                    trust_omega=omega.omega_pub_path,
                    poll_wait=2,
                    app_env=env,
                )
            )
        mainframe_factory.ready(*mfs)
        with httpx.Client(
            base_url=omega.url, headers={"Authorization": f"Bearer {omega.token}"}, timeout=10
        ) as http:
            wait_for(
                lambda: len(http.get("/v1/fleet/mainframes").json()["mainframes"]) >= n,
                30,
                f"{n} mainframes registered",
            )
        return Stack(root, public, omega, mfs)

    return make


WAVES = """[distribution]
waves = [34, 67, 100]
max_failure_ratio = 0.34
wave_timeout_s = 60
auto_rollback = true
"""


def test_approve_distributes_in_waves_then_rollback_returns_the_fleet(stack: Any) -> None:
    s = stack(3, WAVES)
    s.ship("hello-001", "1.0.0")
    res = deploy("approve", "hello-001", "--as", "bob", "--comment", "ship it")
    assert res.exit_code == 0, res.output
    assert "ASHAT Deployment to OMEGA Approved!" in res.stdout
    assert "Deployment completed successfully!" in res.stdout
    assert s.currents() == ["hello-001"] * 3
    _, status = deploy_json("status", "hello-001")
    assert status["deployment"]["state"] == "completed"
    log = deploy("log", "hello-001").stdout
    for kind in ("approval.recorded", "release.countersigned", "deployment.distributing"):
        assert kind in log

    s.ship("hello-002", "2.0.0")
    code, out = deploy_json("approve", "hello-002", "--as", "bob")
    assert code == 0 and out["state"] == "completed", out
    assert out["rollout_status"]["totals"]["installed"] == 3
    assert s.currents() == ["hello-002"] * 3
    # A review rolled back an old completed deployment nobody runs (a typo of the id):
    # "rolled back", exit 0, to a newer release, 0 of 0 mainframes. Refused, saying why.
    code, out = deploy_json("rollback", "hello-001", "--reason", "typo")
    assert code == 3 and "nothing runs hello-001" in out["error"], out
    assert deploy_json("status", "hello-001")[1]["deployment"]["state"] == "completed"

    code, out = deploy_json("rollback", "hello-002", "--reason", "customer report")
    assert code == 0 and out["state"] == "rolled_back" and out["restored"] == "hello-001", out
    assert s.currents() == ["hello-001"] * 3
    with s.omega.client() as c:
        assert c.health()["current"] == "hello-001"
    # a rolled-back release serves nowhere: PUBLIC is put back too (issue 18, 1)
    assert out["public"] == "PUBLIC restored to hello-001", out
    with s.public.client() as c:
        assert c.health()["current"] == "hello-001"

    # every rollout of the deployment stays in its status, forward and back (issue 18, 3)
    _, status = deploy_json("status", "hello-002")
    kinds = [(r["kind"], r["state"]) for r in status["rollouts"]]
    assert kinds == [("install", "completed"), ("rollback", "completed")], status["rollouts"]
    assert status["rollouts"][0]["totals"]["installed"] == 3
    assert status["rollouts"][1]["update_id"] == "hello-001"
    human = deploy("status", "hello-002").stdout
    assert "Rollout:" in human and "Rollback:" in human and "3 installed" in human, human
    _, first = deploy_json("status", "hello-001")
    assert [(r["kind"], r["state"]) for r in first["rollouts"]] == [("install", "completed")]
    for mf in s.mainframes:
        port = mf.health()["app"]["port"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["version"] == "1.0.0"
    assert deploy("audit", "verify").exit_code == 0


@pytest.mark.parametrize("point", ["rollback.requested", "rollback.started"])
def test_a_killed_fleet_rollback_finishes_when_run_again(stack: Any, point: str) -> None:
    """A review killed ``deploy rollback`` once OMEGA had started the fleet's rollback: the
    rollback completed on the fleet, but every re-run asked OMEGA for a new one, which it
    refused ("nothing runs …"), so the deployment stayed ``completed`` for ever and PUBLIC
    kept serving the rolled-back release. The re-run now follows the rollback that runs
    (its id kept, or found on OMEGA) and finishes the verb."""
    s = stack(2, WAVES)
    s.ship("hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    s.ship("hello-002", "2.0.0")
    assert deploy("approve", "hello-002", "--as", "bob").exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-m", "ashat.cli.deploy", "rollback", "hello-002"],
        env={**os.environ, "ASHAT_CRASH_AT": f"{point}:1"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_for(lambda: s.currents() == ["hello-001"] * 2, 60, "the fleet back on hello-001")
    assert deploy_json("status", "hello-002")[1]["deployment"]["state"] == "completed"
    code, out = deploy_json("rollback", "hello-002")
    assert code == 0 and out["state"] == "rolled_back" and out["restored"] == "hello-001", out
    assert out["public"] == "PUBLIC restored to hello-001", out
    with s.omega.client() as c:  # OMEGA's own app too, killed before it went back or not
        assert c.health()["current"] == "hello-001"
    _, status = deploy_json("status", "hello-002")
    kinds = [(r["kind"], r["state"]) for r in status["rollouts"]]
    assert kinds == [("install", "completed"), ("rollback", "completed")]  # one rollback


SHORT_WAVES = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 15
auto_rollback = false
"""


def _polled(mf: Any) -> bool:
    return mf.health()["fleet"]["last_poll"] is not None


@pytest.mark.parametrize("back", ["before the re-run", "during the re-run"])
def test_a_fleet_rollback_short_of_a_mainframe_finishes_when_run_again(
    stack: Any, mainframe_factory: Any, back: str
) -> None:
    """A mainframe was away when ``deploy rollback`` ran: OMEGA's rollback of the fleet
    waited 600 s for it, its own default, not the project's ``wave_timeout_s`` (15 s) that
    the release's rollout and an automatic rollback use. The rollback now keeps the
    release's timeout, ends short of the mainframe, and a re-run rolls it back: one that came
    back before the re-run, or while it runs."""
    s = stack(2, SHORT_WAVES)
    s.ship("hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    s.ship("hello-002", "2.0.0")
    assert deploy("approve", "hello-002", "--as", "bob").exit_code == 0
    away = s.mainframes[1]
    away.stop()
    started = time.monotonic()
    res = deploy("rollback", "hello-002")
    assert res.exit_code != 0 and "did not complete" in res.output, res.output
    assert time.monotonic() - started < 120  # the release's 15 s, not OMEGA's 600 s
    assert s.mainframes[0].current() == "hello-001"
    if back == "before the re-run":
        again = mainframe_factory.restart(away)
        mainframe_factory.ready(again)
        # back, it keeps hello-002: the rollback that missed it ended ("no change")
        wait_for(lambda: _polled(again), 30, "mf-1 polling OMEGA again")
        assert again.current() == "hello-002"
        code, out = deploy_json("rollback", "hello-002")
    else:
        rerun = subprocess.Popen(
            [sys.executable, "-m", "ashat.cli.deploy", "rollback", "hello-002", "--json"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1)  # it finds mf-1 still on hello-002, and rolls it back again
        again = mainframe_factory.restart(away)
        mainframe_factory.ready(again)
        stdout, _ = rerun.communicate(timeout=120)
        code, out = rerun.returncode, json.loads(stdout)
    assert code == 0 and out["state"] == "rolled_back" and out["restored"] == "hello-001", out
    assert again.current() == "hello-001"
    kinds = [r["kind"] for r in deploy_json("status", "hello-002")[1]["rollouts"]]
    assert kinds.count("rollback") == 2, kinds


def test_the_app_rolled_back_cannot_hold_its_rollback_with_update_lock(stack: Any) -> None:
    """A review: the app of hello-002, which owns its shared directory, made
    ``update.lock`` there: OMEGA then sent its mainframe no rollback directive and the
    mainframe would not take one, so the release being rolled back kept itself running for
    ``--update-lock-max`` (an hour by default). An app's lock holds installs, not a
    rollback away from it."""
    s = stack(1, SHORT_WAVES)
    mf = s.mainframes[0]
    for n in (1, 2):
        s.ship(f"hello-00{n}", f"{n}.0.0")
        assert deploy("approve", f"hello-00{n}", "--as", "bob").exit_code == 0
    (mf.data / "shared" / "update.lock").write_text("busy, forever\n")
    wait_for(lambda: mf.health()["fleet"].get("hold") == "lock", 20, "the lock seen")
    res = deploy("rollback", "hello-002", "--reason", "hostile")
    assert res.exit_code == 0, res.output
    assert mf.current() == "hello-001"


def test_one_failing_mainframe_stays_within_budget(stack: Any) -> None:
    s = stack(
        4,
        "[distribution]\nwaves = [100]\nmax_failure_ratio = 0.3\nwave_timeout_s = 60\n",
        unmigrated=1,
    )
    s.ship("hello-001", "1.0.0", needs_migration=True)
    code, out = deploy_json("approve", "hello-001", "--as", "bob")
    assert code == 0 and out["state"] == "completed", out
    totals = out["rollout_status"]["totals"]
    assert totals["installed"] == 3 and totals["failed"] == 1
    failures = out["rollout_status"]["failures"]
    assert failures[0]["mainframe_id"] == "mf-0" and "prepare hook" in json.dumps(failures)
    assert s.currents() == [None, "hello-001", "hello-001", "hello-001"]


def test_a_broken_budget_rolls_back_automatically(stack: Any) -> None:
    s = stack(
        5,
        "[distribution]\nwaves = [100]\nmax_failure_ratio = 0.2\nauto_rollback = true\n",
        unmigrated=3,
    )
    s.ship("hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    assert s.currents() == ["hello-001"] * 5
    s.ship("hello-002", "2.0.0", needs_migration=True)
    res = deploy("approve", "hello-002", "--as", "bob")
    assert res.exit_code == 1, res.output
    assert "rolled_back" in res.stdout
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["state"] == "rolled_back"
    assert s.currents() == ["hello-001"] * 5
    with s.omega.client() as c:  # OMEGA too: a rolled-back release serves nowhere
        assert c.health()["current"] == "hello-001"
    with s.public.client() as c:  # and PUBLIC
        assert c.health()["current"] == "hello-001"
    kinds = [(r["kind"], r["state"]) for r in status["rollouts"]]
    assert kinds == [("install", "failed"), ("rollback", "completed")], status["rollouts"]
    log = deploy("log", "hello-002").stdout
    assert "deployment.distribution_failed" in log and "deployment.rolled_back" in log


def test_with_no_wait_omega_follows_its_fleets_automatic_rollback_by_itself(
    stack: Any,
) -> None:
    """A review approved with --no-wait a release whose rollout broke its budget: the fleet
    went back, but OMEGA's own app served the failed release until someone ran a 'deploy'
    verb (the control side put it back when it looked). OMEGA now goes back by itself."""
    s = stack(
        3, "[distribution]\nwaves = [100]\nmax_failure_ratio = 0.2\nauto_rollback = true\n",
        unmigrated=2,
    )  # fmt: skip
    s.ship("hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    s.ship("hello-002", "2.0.0", needs_migration=True)
    code, out = deploy_json("approve", "hello-002", "--as", "bob", "--no-wait")
    assert code == 0 and out["state"] == "distributing", out

    def omega_current() -> Any:
        with s.omega.client() as c:
            return c.health()["current"]

    # no deploy verb from here on: only the agents are asked
    wait_for(lambda: s.currents() == ["hello-001"] * 3, 90, "the fleet back")
    wait_for(lambda: omega_current() == "hello-001", 30, "OMEGA back by itself")
    said = "went back from hello-002 to hello-001 with the fleet"
    wait_for(lambda: said in s.omega.output(), 10, "OMEGA to say so")
    # the control side, when it looks, finds it done and records it
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["state"] == "rolled_back", status


def test_no_wait_returns_at_once_and_status_follows_the_rollout(stack: Any) -> None:
    s = stack(2, WAVES)
    s.ship("hello-001", "1.0.0")
    code, out = deploy_json("approve", "hello-001", "--as", "bob", "--no-wait")
    assert code == 0 and out["state"] in ("distributing", "completed"), out
    wait_for(
        lambda: deploy_json("status", "hello-001")[1]["deployment"]["state"] == "completed",
        60,
        "status to see the rollout complete",
    )
    res = deploy("status", "hello-001")
    assert "completed" in res.stdout
    # alice's status saw it complete; bob's approval caused it (issue 18, 2)
    _, log = deploy_json("log", "hello-001")
    done = next(e for e in log["events"] if e["kind"] == "deployment.completed")
    assert done["actor"] == "bob", done
    assert done["details"]["observed_by"] == "alice", done
    assert "observed_by=alice" in deploy("log", "hello-001").stdout


SLOW_PREPARE = "prepare = \"python3 -c 'import time; time.sleep(2)'\"\n"


def test_pause_resume_and_rollback_of_a_running_rollout(stack: Any) -> None:
    """Issue 19, 4: a running rollout could not be paused, and deploy rollback was refused
    while distributing."""
    s = stack(3, WAVES)
    s.ship("hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    toml = (s.root / "ashat.toml").read_text()
    (s.root / "ashat.toml").write_text(toml.replace("[app]\n", "[app]\n" + SLOW_PREPARE, 1))
    s.ship("hello-002", "2.0.0")  # each install now takes two seconds or more
    code, out = deploy_json("approve", "hello-002", "--as", "bob", "--no-wait")
    assert code == 0 and out["state"] == "distributing", out

    code, out = deploy_json("pause", "hello-002", "--reason", "a customer call")
    assert code == 0 and out["rollout"]["paused"]["reason"] == "a customer call", out
    at_pause = out["rollout"]["totals"]
    time.sleep(5)  # enough for every wave, were it not paused
    _, status = deploy_json("status", "hello-002")
    assert status["deployment"]["state"] == "distributing"
    totals = status["rollout"]["totals"]
    assert totals["installed"] <= at_pause["installed"] + at_pause["pending"] < 3, totals
    assert status["rollout"]["paused"] is not None
    human = deploy("resume", "hello-002")
    assert human.exit_code == 0 and "resumed" in human.stdout, human.output
    assert deploy("pause", "hello-002").exit_code == 0  # and hold it again

    # Rollback while distributing: the rollout is aborted, then who took it goes back.
    code, out = deploy_json("rollback", "hello-002", "--reason", "wrong build")
    assert code == 0 and out["state"] == "rolled_back", out
    assert s.currents() == ["hello-001"] * 3
    log = deploy("log", "hello-002").stdout
    for kind in ("rollout.paused", "rollout.resumed", "rollout.aborted", "deployment.rolled_back"):
        assert kind in log, log
    res = deploy("pause", "hello-002")
    assert res.exit_code == 3 and "only a deployment that is distributing" in res.stderr
    assert deploy("retry", "hello-001").exit_code == 0  # completed: nobody failed, nothing to do


GATED = """[distribution]
waves = [34, "pause", 100]
max_failure_ratio = 0.34
wave_timeout_s = 60
"""


def test_a_manual_gate_between_waves(stack: Any) -> None:
    """Issue 19, 4: waves = [34, "pause", 100] holds the rollout after the first wave
    until an operator resumes it."""
    s = stack(3, GATED)
    s.ship("hello-001", "1.0.0")
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    assert "Rollout paused (gate after wave 1: deploy resume to go on)" in res.stdout
    assert sorted(c or "" for c in s.currents()) == ["", "", "hello-001"]
    _, status = deploy_json("status", "hello-001")
    assert status["deployment"]["state"] == "distributing"
    assert status["rollout"]["pause_after"] == [0] and status["rollout"]["paused"]
    # A review: the human status said "(running)" and "paused" nowhere.
    human = deploy("status", "hello-001").stdout
    assert "(paused): 1 installed" in human and "(running)" not in human, human
    assert "(gate after wave 1: deploy resume to go on): no wave starts until " in human
    assert "deploy resume hello-001" in human
    assert deploy("resume", "hello-001").exit_code == 0
    # A review: once anything (here 'deploy status') had seen the rollout end, approving
    # again to follow it was "cannot go to approved", exit 3; before, exit 0. Now always 0.
    wait_for(lambda: deploy_json("status", "hello-001")[1]["deployment"]["state"] == "completed",
             60, "the rollout to end")  # fmt: skip
    code, out = deploy_json("approve", "hello-001")  # follows it to its end
    assert code == 0 and out["state"] == "completed", out
    assert s.currents() == ["hello-001"] * 3


def test_the_next_release_reaches_each_mainframe_as_a_manifest_delta(hello_fleet: Any) -> None:
    """Issue 20: a mainframe that runs a release gets the next one's signed manifest as its
    difference from the one it holds (rebuilt byte for byte, then checked as ever); one
    that runs nothing gets it whole."""
    fleet = hello_fleet(n=2)

    def last_manifests() -> list[Any]:
        return [
            httpx.get(f"{mf.url}/v1/health", timeout=10).json()["fleet"].get("last_manifest")
            for mf in fleet.mainframes
        ]

    for update_id, version in (("hello-001", "1.0.0"), ("hello-002", "1.0.1")):
        fleet.ship(update_id, version)
        res = fleet.deploy("approve", update_id, "--as", "bob")
        assert res.exit_code == 0, res.output
        assert fleet.currents() == [update_id, update_id]
        if update_id == "hello-001":
            assert last_manifests() == [None, None]  # ran nothing: the manifest came whole
    whole = len((fleet.root / ".ashat" / "manifests" / "hello-002.json").read_bytes())
    for seen in last_manifests():
        assert seen["delta"] is True and seen["bytes"] < whole, (seen, whole)


SHORT_WAVE = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 3
auto_rollback = false
"""


def test_a_late_joiner_outside_its_window_is_listed_as_held_after_the_rollout(
    hello_fleet: Any, mainframe_factory: Any
) -> None:
    """A review: a mainframe that joins after its release's rollout ended is sent that
    release when it polls, but not while its maintenance window is closed; it was shown as
    held only while a rollout ran, so nothing said why it lagged. The fleet list (and the
    dashboard) says what its last poll said."""
    fleet = hello_fleet(n=1, distribution=SHORT_WAVE)
    omega = fleet.omega
    fleet.ship("hello-001", "1.0.0")
    res = fleet.deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)  # a window hours away: closed
    closed = f"daily {soon:%H:%M}-{soon + dt.timedelta(hours=1):%H:%M}"
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    token, _ = issue(omega.license_key, "mf-late", "ACME", expires)
    late = mainframe_factory.start(
        omega=omega.url, license_token=token, mainframe_id="mf-late",
        trust=fleet.public.pub_path, trust_omega=omega.omega_pub_path, poll_wait=1,
        args=("--maintenance-window", closed, "--maintenance-tz", "UTC"),
    )  # fmt: skip
    mainframe_factory.ready(late)

    def listed() -> dict[str, dict[str, Any]]:
        res = ashat("fleet", "list", "--json")
        assert res.exit_code == 0, res.output
        return {m["mainframe_id"]: m for m in json.loads(res.stdout)["mainframes"]}

    wait_for(lambda: "mf-late" in listed(), 20, "mf-late registered")
    rows = listed()
    assert rows["mf-late"]["hold"] == "window" and rows["mf-0"]["hold"] is None
    assert rows["mf-late"]["current"] is None and rows["mf-late"]["desired"] == "hello-001"
    shown = ashat("fleet", "list").output
    assert "held: outside its maintenance window" in shown
    assert late.current() is None


def test_a_mainframe_outside_its_window_or_locked_waits_and_installs_when_it_may(
    hello_fleet: Any, mainframe_factory: Any
) -> None:
    """Issue 19: a mainframe outside its maintenance window, and one whose app holds
    ``update.lock``, get nothing and are not failed by the wave's timeout (the status names
    them held); the lock lifted, or the window open, each installs and the rollout ends."""
    fleet = hello_fleet(n=1, distribution=SHORT_WAVE)
    omega = fleet.omega
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)  # a window hours away: closed
    closed = f"daily {soon:%H:%M}-{soon + dt.timedelta(hours=1):%H:%M}"
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

    def start(mid: str, args: tuple[str, ...], lock: bool = False) -> Any:
        token, _ = issue(omega.license_key, mid, "ACME", expires)
        h = mainframe_factory.start(
            omega=omega.url, license_token=token, mainframe_id=mid,
            trust=fleet.public.pub_path, trust_omega=omega.omega_pub_path, poll_wait=1,
            args=args,
        )  # fmt: skip
        if lock:
            (h.data / "shared").mkdir(parents=True, exist_ok=True)
            (h.data / "shared" / "update.lock").write_text("backup running\n")
        mainframe_factory.ready(h)
        return h

    windowed = start("mf-win", ("--maintenance-window", closed, "--maintenance-tz", "UTC"))
    locked = start("mf-lock", (), lock=True)
    with omega.client() as client:
        wait_for(lambda: len(client.mainframes()) == 3, 20, "three mainframes registered")

    fleet.ship("hello-001", "1.0.0")
    res = fleet.deploy("approve", "hello-001", "--as", "bob", "--no-wait")
    assert res.exit_code == 0, res.output
    wait_for(lambda: fleet.mainframes[0].current() == "hello-001", 30, "mf-0 installed")
    time.sleep(4)  # past the wave's 3 s timeout
    status = json.loads(fleet.deploy("status", "hello-001", "--json").stdout)
    rollout = status["rollouts"][-1]
    assert rollout["state"] == "running", rollout
    assert rollout["held"] == {"mf-win": "window", "mf-lock": "lock"}
    assert rollout["totals"]["failed"] == 0 and rollout["totals"]["pending"] == 2
    assert windowed.current() is None and locked.current() is None
    assert windowed.health()["fleet"]["hold"] == "window"
    shown = fleet.deploy("status", "hello-001").output
    assert "held: mf-win (outside its maintenance window): it installs when it may" in shown

    (locked.data / "shared" / "update.lock").unlink()  # the app is done
    wait_for(lambda: locked.current() == "hello-001", 30, "the unlocked mainframe installed")

    # The window opens: the same machine, its window now (as a test clock would make it).
    windowed.stop()
    now = dt.datetime.now(dt.UTC)
    argv = [a if a != closed else f"daily {now - dt.timedelta(minutes=5):%H:%M}-"
            f"{now + dt.timedelta(minutes=55):%H:%M}" for a in windowed.argv]  # fmt: skip
    reopened = mainframe_factory._spawn("mf-win", windowed.data, windowed.log.with_name(
        "agent-2.log"), argv)  # fmt: skip
    mainframe_factory.ready(reopened)
    wait_for(lambda: reopened.current() == "hello-001", 30, "the windowed mainframe installed")
    wait_for(
        lambda: (
            json.loads(fleet.deploy("status", "hello-001", "--json").stdout)["deployment"]["state"]
            == "completed"
        ),
        30,
        "the rollout completed",
    )
