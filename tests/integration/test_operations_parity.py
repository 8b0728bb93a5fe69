"""One suite, both implementations of :class:`~ashat.ops.operations.Operations` (issue 16):
each test runs once with :class:`LocalOperations` (the project's own store) and once with
:class:`RemoteOperations` (a real ``ashat serve`` over the same project, acting as the
token's user), against real agents and mainframes, and asserts the same results, the same
hooks called and the same errors with the same exit codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ashat.errors import AshatError
from ashat.ops.approve import ApproveHooks
from ashat.ops.operations import LocalOperations, Operations
from ashat.ops.project import Project
from ashat.ops.remote import RemoteOperations
from ashat.ops.rollback import RollbackHooks
from ashat.transport.control import ControlClient
from ashat.workflow.models import Server


@dataclass
class World:
    kind: str
    fleet: Any
    as_user: Callable[[str], Operations]
    projects: list[Project] = field(default_factory=list)


@pytest.fixture(params=["local", "remote"])
def world(
    request: pytest.FixtureRequest,
    hello_fleet: Any,
    serve_process: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    fleet = hello_fleet(n=2)
    opened: list[Any] = []

    def find() -> Project:
        project = Project(fleet.root)
        opened.append(project)
        return project

    if request.param == "local":

        def as_user(name: str) -> Operations:
            return LocalOperations(find, actor=name)

    else:
        serve = serve_process(fleet.root)
        tokens = {
            "alice": serve.add_user("alice", "deployer"),
            "bob": serve.add_user("bob", "approver"),
            "ada": serve.add_user("ada", "admin"),
        }

        def as_user(name: str) -> Operations:
            client = ControlClient(serve.url, tokens[name])
            opened.append(client)
            return RemoteOperations(client, find)

    yield World(request.param, fleet, as_user)
    for thing in opened:
        thing.close()


def _push(ops: Operations, update_id: str, steps: list[str] | None = None) -> dict[str, Any]:
    return ops.push(
        update_id, f"release {update_id}", source=None, git_ref=None, on_start=lambda s: None,
        step=lambda name, _: (steps if steps is not None else []).append(name),
    )  # fmt: skip


def _refused(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(AshatError) as info:
        call()
    return info.value.exit_code, info.value.message


def test_a_release_from_push_to_fleet_and_back(world: World) -> None:
    alice, bob = world.as_user("alice"), world.as_user("bob")
    started: list[str] = []
    steps: list[str] = []
    uploaded: list[tuple[int, int]] = []
    pushed = alice.push(
        "v1", "version one", source=None, git_ref=None,
        on_start=lambda s: started.append(s.tier), step=lambda name, _: steps.append(name),
        on_upload=lambda sent, total: uploaded.append((sent, total)),
    )  # fmt: skip
    assert pushed["update_id"] == "v1" and pushed["target"] == "Public"
    assert started == ["public"] and {"record", "upload", "stage", "activate"} <= set(steps)
    assert uploaded[-1] == (pushed["bytes_sent"], pushed["bytes_sent"]) and uploaded[-1][0] > 0

    verified = alice.verify("v1", None, lambda s: started.append(s.tier))
    assert verified["passed"] is True and started[-1] == "public"
    assert [r["name"] for r in verified["results"]] == ["health"]

    released: list[str] = []
    hooks = ApproveHooks(released=lambda server, *_: released.append(server.tier))
    outcome = bob.approve("v1", as_user="bob", comment="ship", wait=True, hooks=hooks)
    assert outcome.deployment.state.value == "completed", outcome.data
    assert released == ["omega"] and outcome.data["rollout_status"]["state"] == "completed"
    assert world.fleet.currents() == ["v1", "v1"]

    # The reading verbs say the same of it.
    view = alice.status("v1")
    assert view.deployment.state.value == "completed"
    assert [r["kind"] for r in view.rollouts] == ["install"]
    assert [d.id for d in alice.history(10, None)] == ["v1"]
    assert [d.id for d in alice.history(10, "failed")] == []
    kinds = [e.kind for e in alice.log("v1")]
    assert kinds[0] == "deployment.pushing" and "deployment.completed" in kinds
    report = alice.audit_verify()
    assert report.ok and report.head is not None
    seq, digest = report.head
    assert alice.audit_verify(f"{seq}:{digest}").ok  # --at: the one implementation, both ways
    wrong = alice.audit_verify(f"{seq}:{'0' * 64}")
    assert not wrong.ok and wrong.broken_seq == seq
    assert _refused(lambda: alice.audit_verify("5:nothex"))[0] == 2
    assert [d.id for d in alice.overview().recent] == ["v1"]
    rows, checked = alice.servers(True)
    assert sorted(s.tier for s in rows) == ["omega", "public"]
    assert all(r["reachable"] for r in checked.values()) and set(checked) == {"omega", "public"}

    # The first release has nothing before it to go back to: refused alike.
    code, message = _refused(lambda: bob.rollback("v1", "parity", RollbackHooks()))
    assert code == 3 and "nothing to roll back to" in message, message

    # A second release, then the fleet and OMEGA back on the first.
    (world.fleet.root / "VERSION").write_text("1.0.2\n")
    _push(alice, "v2")
    assert alice.verify("v2", None, lambda s: None)["passed"] is True
    outcome = bob.approve("v2", as_user="bob", comment=None, wait=True, hooks=ApproveHooks())
    assert outcome.deployment.state.value == "completed"
    assert world.fleet.currents() == ["v2", "v2"]
    fleet_seen: list[Server] = []
    back = bob.rollback("v2", "parity", RollbackHooks(fleet=fleet_seen.append))
    assert back.fleet is True and [s.tier for s in fleet_seen] == ["omega"]
    assert back.status["kind"] == "rollback" and back.status["update_id"] == "v1"
    assert alice.status("v2").deployment.state.value == "rolled_back"
    assert world.fleet.currents() == ["v1", "v1"]


def test_a_pause_gate_ends_the_wait_of_an_approval_either_way(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: through ``ashat serve`` (``deploy --via``), an approval whose rollout
    stopped at a ``"pause"`` gate was followed until the hour's limit, printing nothing,
    where the local one returned at once saying how to resume."""
    import time

    from ashat.ops import remote

    monkeypatch.setattr(remote, "FOLLOW_LIMIT_S", 120.0)
    toml = world.fleet.root / "ashat.toml"
    toml.write_text(toml.read_text().replace("waves = [50, 100]", 'waves = [50, "pause", 100]'))
    alice, bob = world.as_user("alice"), world.as_user("bob")
    _push(alice, "v1")
    assert alice.verify("v1", None, lambda s: None)["passed"] is True
    started = time.monotonic()
    outcome = bob.approve("v1", as_user="bob", comment=None, wait=True, hooks=ApproveHooks())
    waited = time.monotonic() - started
    assert outcome.deployment.state.value == "distributing", outcome.data
    assert outcome.data["rollout_status"]["paused"], outcome.data
    assert waited < 60, f"followed a paused rollout for {waited:.0f} s"


def test_refusals_keep_their_exit_codes_either_way(world: World) -> None:
    alice = world.as_user("alice")
    assert _refused(lambda: alice.status("nope"))[0] == 2  # no such deployment
    assert _refused(lambda: alice.log("bad id!"))[0] == 2  # not an update id
    assert _refused(lambda: alice.verify("nope", None, lambda s: None))[0] == 2

    _push(alice, "v1")
    code, message = _refused(lambda: _push(alice, "v1"))
    assert code == 3 and "v1" in message  # the id is taken
    # The pusher may not approve their own release (two-person rule).
    code, _ = _refused(
        lambda: alice.approve("v1", as_user="alice", comment=None, wait=False, hooks=ApproveHooks())
    )
    assert code in (3, 4)  # refused by policy here; by role (403) through the server
    # Not verified yet: approval is refused by the state machine.
    bob = world.as_user("bob")
    code, message = _refused(
        lambda: bob.approve("v1", as_user="bob", comment=None, wait=False, hooks=ApproveHooks())
    )
    assert code == 3 and "cannot go to approved" in message
    # No rollout to pause before one runs.
    assert _refused(lambda: bob.control_rollout("v1", "pause", None))[0] == 3
    # A cancelled deployment cannot be cancelled again.
    done = alice.cancel("v1", "parity")
    assert done.deployment.state.value == "cancelled"
    assert _refused(lambda: alice.cancel("v1", None))[0] == 3


def test_configure_reads_back_the_same(world: World) -> None:
    alice = world.as_user("ada")  # through the server, configuring takes an admin
    before = {s.tier: s for s in alice.servers(False)[0]}
    here = before["public"].url.rstrip("/") + "/v"  # the same server: its token is kept
    server, old = alice.configure("public", here, "Elsewhere", None, None)
    assert (server.tier, server.name, server.url) == ("public", "Elsewhere", here)
    assert old is not None and old.url == before["public"].url
    moved = _refused(lambda: alice.configure("public", "http://127.0.0.1:9", "X", None, None))
    assert moved[0] == 2  # another server needs its own token
    assert _refused(lambda: alice.configure("moon", "http://h", "M", None, None))[0] == 2
    assert _refused(lambda: alice.configure("public", "ftp://h", "M", None, None))[0] == 2
