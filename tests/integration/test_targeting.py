"""Issue 19: the fleet as desired state, by label — selectors (``deploy approve --to``),
rings, pins, two releases on two groups (A/B), and what each mainframe should run, with
real OMEGA and mainframe processes on loopback."""

from __future__ import annotations

import datetime as dt
import json
import signal
from typing import Any

from support import ashat, deploy, wait_for

WAVES = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 60
auto_rollback = false
"""


def fleet_list(*args: str) -> dict[str, dict[str, Any]]:
    res = ashat("fleet", "list", "--json", *args)
    assert res.exit_code == 0, res.output
    return {m["mainframe_id"]: m for m in json.loads(res.stdout)["mainframes"]}


def label(mainframe_id: str, *items: str) -> None:
    res = ashat("fleet", "label", mainframe_id, *items)
    assert res.exit_code == 0, res.output


def test_selectors_rings_and_pins_decide_who_gets_what(hello_fleet: Any) -> None:
    fleet = hello_fleet(n=3, distribution=WAVES)
    mf = {m.mainframe_id: m for m in fleet.mainframes}
    currents = lambda: {k: m.current() for k, m in mf.items()}  # noqa: E731
    wait_for(lambda: all(m.get("inventory") for m in fleet_list().values()), 20, "inventory")
    listed = fleet_list("--labels")
    assert listed["mf-0"]["labels"]["os"] == "linux"
    assert listed["mf-0"]["labels"]["channel"] == "stable"
    assert int(listed["mf-0"]["inventory"]["free_disk"]) > 0

    label("mf-0", "ring=pilot", "site=berlin")
    assert set(fleet_list("--where", "ring=pilot")) == {"mf-0"}
    assert set(fleet_list("--where", "ring!=pilot")) == {"mf-1", "mf-2"}
    assert set(fleet_list("--where", "site in (berlin,paris),os=linux")) == {"mf-0"}

    # A selector matching nobody is refused before anything is recorded.
    fleet.ship("hello-001", "1.0.1")
    res = deploy("approve", "hello-001", "--as", "bob", "--to", "ring=nobody")
    assert res.exit_code == 2, res.output
    assert "matches none of the 3 mainframes" in res.output
    shown = json.loads(deploy("status", "hello-001", "--json").stdout)["deployment"]
    assert shown["state"] == "verified" and "to" not in shown["details"]  # nothing kept
    # Nor by an approver the policy refuses (alice pushed it): her --to was kept before.
    res = deploy("approve", "hello-001", "--as", "alice", "--to", "ring!=pilot")
    assert res.exit_code == 3 and "may not approve it too" in res.output, res.output
    shown = json.loads(deploy("status", "hello-001", "--json").stdout)["deployment"]
    assert "to" not in shown["details"]

    # --to: the pilot only; the others should run nothing yet, and say why.
    res = deploy("approve", "hello-001", "--as", "bob", "--to", "ring=pilot")
    assert res.exit_code == 0, res.output
    wait_for(lambda: currents()["mf-0"] == "hello-001", 30, "the pilot")
    listed = fleet_list()
    assert listed["mf-0"]["desired"] == "hello-001"
    assert "to ring=pilot" in listed["mf-0"]["rule"]
    assert listed["mf-1"]["desired"] is None and listed["mf-1"]["rule"] == "no rollout for it"
    assert currents() == {"mf-0": "hello-001", "mf-1": None, "mf-2": None}

    # Rings: the pilot is the first wave, the rest the next; a pinned machine is left out.
    toml = fleet.root / "ashat.toml"
    toml.write_text(toml.read_text() + 'rings = ["ring=pilot"]\n')
    res = ashat("fleet", "pin", "mf-2", "hello-001")
    assert res.exit_code == 0, res.output
    fleet.ship("hello-002", "1.0.2")
    res = deploy("approve", "hello-002", "--as", "bob", "--json")
    assert res.exit_code == 0, res.output
    waves = json.loads(res.stdout)["rollout_status"]["waves"]
    assert [(w.get("ring"), w["size"]) for w in waves] == [("ring=pilot", 1), (None, 1)]
    wait_for(lambda: currents() == {"mf-0": "hello-002", "mf-1": "hello-002", "mf-2": "hello-001"},
             30, "the rings, the pinned one on its pin")  # fmt: skip
    listed = fleet_list()
    assert listed["mf-2"]["desired"] == "hello-001" and "pinned" in listed["mf-2"]["rule"]
    assert listed["mf-2"]["pinned"] == "hello-001"

    # Unpinned, it converges on its next poll.
    assert ashat("fleet", "unpin", "mf-2").exit_code == 0
    wait_for(lambda: currents()["mf-2"] == "hello-002", 30, "mf-2 unpinned")
    # A review: a pin to an older release was taken, and the machine showed "should run
    # hello-001" for ever (a pin never takes a mainframe back). Refused, saying so.
    wait_for(lambda: fleet_list()["mf-2"]["current"] == "hello-002", 30, "OMEGA to know it")
    res = ashat("fleet", "pin", "mf-2", "hello-001")
    assert res.exit_code == 3 and "a pin never takes a mainframe back" in res.output, res.output
    assert fleet_list()["mf-2"]["pinned"] is None
    # A rollback withdraws the release: a machine pinned to it is unpinned, and goes back.
    assert ashat("fleet", "pin", "mf-2", "hello-002").exit_code == 0
    res = deploy("rollback", "hello-002", "--reason", "withdrawn")
    assert res.exit_code == 0, res.output
    wait_for(lambda: set(currents().values()) == {"hello-001"}, 30, "everyone back")
    assert fleet_list()["mf-2"]["pinned"] is None
    # ... and no new pin holds it (a review: accepted, it never converged)
    res = ashat("fleet", "pin", "mf-2", "hello-002")
    assert res.exit_code == 3 and "was rolled back on this OMEGA" in res.output, res.output

    from ashat.ops.project import Project

    kinds = {e.kind for e in Project.find().reader().store.events()}
    assert {"fleet.labelled", "fleet.pinned", "fleet.unpinned"} <= kinds


def test_two_releases_live_on_two_groups_and_a_late_joiner_follows_its_group(
    hello_fleet: Any, mainframe_factory: Any
) -> None:
    """A/B: two releases rolled out to two label groups both stay live; a mainframe that
    joins later, its license labelled group=a, gets group a's release, not the newest."""
    from ashat.fleet.license import issue

    fleet = hello_fleet(n=2, distribution=WAVES)
    label("mf-0", "group=a")
    label("mf-1", "group=b")
    fleet.ship("hello-001", "1.0.1")
    res = deploy("approve", "hello-001", "--as", "bob", "--to", "group=a")
    assert res.exit_code == 0, res.output
    fleet.ship("hello-002", "2.0.0")
    res = deploy("approve", "hello-002", "--as", "bob", "--to", "group=b")
    assert res.exit_code == 0, res.output
    wait_for(
        lambda: [m.current() for m in fleet.mainframes] == ["hello-001", "hello-002"], 30, "A/B"
    )
    with fleet.omega.client() as omega:
        rollouts = {r["update_id"]: r for r in map(dict, omega.rollouts_of("hello-001"))}
    assert rollouts["hello-001"]["state"] == "completed"  # not superseded by group b's

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    token, _ = issue(fleet.omega.license_key, "mf-9", "ACME", expires, labels={"group": "a"})
    late = mainframe_factory(
        omega=fleet.omega.url, license_token=token, mainframe_id="mf-9",
        trust=fleet.public.pub_path, trust_omega=fleet.omega.omega_pub_path, poll_wait=1,
    )  # fmt: skip
    wait_for(lambda: late.current() == "hello-001", 30, "the late joiner of group a")
    listed = fleet_list("--where", "group=a")
    assert set(listed) == {"mf-0", "mf-9"}
    assert {m["desired"] for m in listed.values()} == {"hello-001"}

    # deploy status puts the two groups side by side, with how their apps fare
    wait_for(lambda: "hello-001 on 2 (2 healthy); hello-002 on 1 (1 healthy)"
             in deploy("status", "hello-002").stdout, 30, "the A/B summary")  # fmt: skip
    fleet_view = json.loads(deploy("status", "hello-002", "--json").stdout)["fleet"]
    assert fleet_view["apart_count"] == 0
    assert [(r["update_id"], r["mainframes"]) for r in fleet_view["releases"]] == [
        ("hello-001", 2), ("hello-002", 1),
    ]  # fmt: skip


def test_a_release_left_releasing_cannot_be_sent_elsewhere_than_its_approval_chose(
    hello_fleet: Any, agent_factory: Any
) -> None:
    """A review: bob approved a release for the pilot, OMEGA went away mid-release, and
    carol — not an approver — resumed it with ``--to '*'``: it went to the whole fleet, and
    nothing recorded that the targets changed. A complete approval's targets now stay as
    its approver chose; anyone may still resume it as it was."""
    from urllib.parse import urlsplit

    fleet = hello_fleet(n=2, distribution=WAVES)
    label("mf-0", "ring=pilot")
    fleet.ship("hello-001", "1.0.1")
    port = urlsplit(fleet.omega.url).port
    fleet.omega.stop()  # OMEGA dies as it records the rollout: the release stays releasing
    omega = agent_factory(like=fleet.omega, port=port, env={"ASHAT_CRASH_AT": "omega.rollout:1"})
    res = deploy("approve", "hello-001", "--as", "bob", "--to", "ring=pilot")
    assert res.exit_code == 4 and "stays releasing" in res.output, res.output
    assert omega.proc.wait(10) == -signal.SIGKILL
    for who in ("carol", "bob"):  # not an approver; the approver himself
        res = deploy("approve", "hello-001", "--as", who, "--to", "*")
        assert res.exit_code == 3, res.output
        assert "was approved for the mainframes ring=pilot; --to * would send it to every" in (
            res.output
        )
    shown = json.loads(deploy("status", "hello-001", "--json").stdout)["deployment"]
    assert shown["state"] == "releasing" and shown["details"]["to"] == "ring=pilot"

    agent_factory(like=omega, port=port)  # back (the mainframes poll it again by themselves)
    res = deploy("approve", "hello-001", "--as", "carol", "--to", "ring=pilot")  # the same
    assert res.exit_code == 0, res.output
    wait_for(lambda: fleet.mainframes[0].current() == "hello-001", 30, "the pilot")
    assert fleet.mainframes[1].current() is None


def test_a_resumed_release_goes_where_its_approval_sent_it_whatever_the_toml_says_now(
    hello_fleet: Any, agent_factory: Any
) -> None:
    """A review of the fix above: the approval took its mainframes from ``[distribution]
    to``, which was not kept with it, so carol dropped the line from her ashat.toml and
    resumed the release: it went to the whole fleet. The approval now keeps what it chose."""
    from urllib.parse import urlsplit

    fleet = hello_fleet(n=2, distribution=WAVES + 'to = "ring=pilot"\n')
    label("mf-0", "ring=pilot")
    fleet.ship("hello-001", "1.0.1")
    port = urlsplit(fleet.omega.url).port
    fleet.omega.stop()
    omega = agent_factory(like=fleet.omega, port=port, env={"ASHAT_CRASH_AT": "omega.rollout:1"})
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 4 and "stays releasing" in res.output, res.output
    assert omega.proc.wait(10) == -signal.SIGKILL
    shown = json.loads(deploy("status", "hello-001", "--json").stdout)["deployment"]
    assert shown["details"]["to"] == "ring=pilot"
    toml = fleet.root / "ashat.toml"
    toml.write_text(toml.read_text().replace('to = "ring=pilot"\n', ""))
    agent_factory(like=omega, port=port)
    res = deploy("approve", "hello-001", "--as", "carol", "--to", "*")
    assert res.exit_code == 3, res.output
    res = deploy("approve", "hello-001", "--as", "carol")
    assert res.exit_code == 0, res.output
    wait_for(lambda: fleet.mainframes[0].current() == "hello-001", 30, "the pilot")
    assert fleet.mainframes[1].current() is None
