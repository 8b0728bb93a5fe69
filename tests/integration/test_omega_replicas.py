"""Two OMEGA replicas over one PostgreSQL database and one blob directory, behind a load
balancer, serving real mainframes.

The balancer is a plain TCP round robin (as any HTTP load balancer without affinity): each
new connection goes to the next replica that accepts it, so the mainframes' polls, blob
downloads and reports land on both. The control side talks to replica A only. What must
hold: each wave of a rollout starts once (``rollout_events``) although both controllers
tick; a replica killed (SIGKILL) mid-rollout neither stops nor repeats it — the mainframes
reconnect to the other, which finishes it; and either replica answers for the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.fleet.license import issue
from ashat.fleet.omega_store import FleetStore
from support import wait_for

AgentFactory = Any
AgentHandle = Any
MainframeFactory = Any
Trees = Any


class Balancer:
    """A TCP round robin over ``backends`` (``host:port``) on a free loopback port, run on
    its own event loop thread; a backend refusing a connection is skipped."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [(u.rsplit(":", 1)[0], int(u.rsplit(":", 1)[1])) for u in backends]
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._loop.run_until_complete(self._start(sock))
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.backends:
            host, port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                continue
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            return
        writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def replicas(
    agent_factory: AgentFactory, pg_url: str, tmp_path: Path
) -> Iterator[tuple[AgentHandle, AgentHandle, Balancer]]:
    a = agent_factory(
        role="omega", fleet_db=pg_url, blob_dir=tmp_path / "shared-blobs", poll_timeout=5
    )
    b = agent_factory(replica_of=a)
    balancer = Balancer([a.url.removeprefix("http://"), b.url.removeprefix("http://")])
    yield a, b, balancer
    balancer.close()


def http(omega: AgentHandle) -> httpx.Client:
    headers = {"Authorization": f"Bearer {omega.token}"}
    return httpx.Client(base_url=omega.url, headers=headers, timeout=30)


def rollout(omega: AgentHandle, update_id: str) -> str:
    body = {
        "update_id": update_id,
        "waves": [50, 100],
        "wave_timeout_s": 120,
        "max_failure_ratio": 0.0,
        "auto_rollback": False,
    }
    with http(omega) as c:
        r = c.post("/v1/fleet/rollouts", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["rollout_id"])


def status(omega: AgentHandle, rollout_id: str) -> dict[str, Any]:
    with http(omega) as c:
        return dict(c.get(f"/v1/fleet/rollouts/{rollout_id}").json())


ONCE_EACH = [("wave_started", 0), ("wave_started", 1), ("completed", None)]


def trail(url: str, rollout_id: str) -> list[tuple[str, int | None]]:
    """What the controllers did to a rollout: (event, wave), in order."""
    store = FleetStore(url)
    try:
        return [(e["event"], e["wave"]) for e in store.events(rollout_id)]
    finally:
        store.close()


def polls_served(omega: AgentHandle) -> float:
    with http(omega) as c:
        text = c.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ashat_fleet_polls_total{")
    )


def test_two_replicas_serve_one_fleet_and_survive_losing_one(
    replicas: tuple[AgentHandle, AgentHandle, Balancer],
    mainframe_factory: MainframeFactory,
    trees: Trees,
    pg_url: str,
) -> None:
    a, b, balancer = replicas
    assert a.license_key is not None and a.omega_pub_path is not None
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    mfs = []
    for i in range(4):
        token, _ = issue(a.license_key, f"mf-{i}", "ACME", expires)
        mfs.append(
            mainframe_factory.start(
                omega=balancer.url, license_token=token, mainframe_id=f"mf-{i}",
                trust=a.pub_path, trust_omega=a.omega_pub_path, poll_wait=1,
            )
        )  # fmt: skip
    mainframe_factory.ready(*mfs)
    with http(b) as c:  # registered through either replica, listed by the other
        wait_for(lambda: len(c.get("/v1/fleet/mainframes").json()["mainframes"]) == 4, 30, "4")

    # Both controllers tick while the rollout runs: each wave starts once, it ends once.
    a.release(trees.tiny("r1"), "r1", sequence=1)  # blobs into the shared directory, via A
    first = rollout(a, "r1")
    wait_for(lambda: status(b, first)["state"] == "completed", 60, "r1 completed (seen on B)")
    assert [mf.current() for mf in mfs] == ["r1"] * 4
    assert trail(pg_url, first) == ONCE_EACH
    assert polls_served(a) > 0 and polls_served(b) > 0  # the balancer used both

    # Mid-rollout, replica A dies: two mainframes are away, so the rollout cannot finish
    # before it does; when they come back, B finishes it alone.
    away = [mfs[2], mfs[3]]
    for mf in away:
        mf.stop()
    a.release(trees.tiny("r2"), "r2", sequence=2)
    second = rollout(a, "r2")
    time.sleep(2)  # the two present mainframes poll (and install if in wave 0)
    assert status(b, second)["state"] == "running"
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    back = [mainframe_factory.restart(mf) for mf in away]
    mainframe_factory.ready(*back)
    wait_for(lambda: status(b, second)["state"] == "completed", 90, "r2 completed by B alone")
    assert [mf.current() for mf in [mfs[0], mfs[1], *back]] == ["r2"] * 4
    assert trail(pg_url, second) == ONCE_EACH
    totals = status(b, second)["totals"]
    assert totals["installed"] == 4 and totals["failed"] == 0, totals


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_controllers_racing_on_one_rollout_start_each_wave_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Eight connections (as eight replicas) drive one rollout at the same instant, twice:
    the next wave starts once, then the rollout completes once."""
    from prometheus_client import CollectorRegistry, Counter

    from ashat.fleet.controller import Controller
    from ashat.fleet.omega_store import Spec
    from ashat.fleet.rollout import Kind, RolloutState, TargetStatus

    url = (
        f"sqlite:///{tmp_path / 'fleet.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    stores = [FleetStore(url, replica=f"r{i}") for i in range(8)]
    finished = Counter("finished", "", ["kind", "state"], registry=CollectorRegistry())
    # The approvals are not consulted while a rollout advances or completes.
    controllers = [Controller(s, None, finished) for s in stores]  # type: ignore[arg-type]
    try:
        spec = Spec(Kind.INSTALL, "r1", None, "stable", (50, 100), 0.0, 600.0, False)
        r, woken = controllers[0].create(spec, ["mf-0", "mf-1"], time.time())
        (first,) = woken
        stores[0].set_target(r.rollout_id, first, TargetStatus.INSTALLED, None, "now")

        def race() -> None:
            barrier = threading.Barrier(len(stores))

            def drive(i: int) -> None:
                barrier.wait()
                with stores[i].exclusive():
                    fresh = stores[i].rollout(r.rollout_id)
                    assert fresh is not None
                    controllers[i].drive(fresh, time.time())

            threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(stores))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        race()
        (second,) = {"mf-0", "mf-1"} - {first}
        stores[0].set_target(r.rollout_id, second, TargetStatus.INSTALLED, None, "now")
        race()
        assert [(e["event"], e["wave"]) for e in stores[0].events(r.rollout_id)] == ONCE_EACH
        done = stores[0].rollout(r.rollout_id)
        assert done is not None and done.state is RolloutState.COMPLETED
        assert finished.labels(kind="install", state="completed")._value.get() == 1
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_fleet_refuses_a_database_holding_a_control_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from ashat.store.db import Database, StoreError

    url = (
        f"sqlite:///{tmp_path / 'ashat.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    Database(url).close()  # a control store, with its own approvals table
    with pytest.raises(StoreError, match="holds an ashat control store"):
        FleetStore(url)


def wave_started_at(url: str, rollout_id: str) -> float:
    store = FleetStore(url)
    try:
        r = store.rollout(rollout_id)
        assert r is not None
        return r.wave_started_at
    finally:
        store.close()


def test_a_replica_starting_beside_a_running_one_leaves_the_wave_clock_alone(
    replicas: tuple[AgentHandle, AgentHandle, Balancer],
    agent_factory: AgentFactory,
    mainframe_factory: MainframeFactory,
    trees: Trees,
    pg_url: str,
) -> None:
    """A replica's start gave every running wave its whole timeout again, as if OMEGA had
    been down, though another replica ran all along: a replica restarting in a loop kept a
    silent mainframe's wave from ever timing out. Only an outage of the whole OMEGA (no
    replica alive for a few seconds) restarts the wave's clock."""
    a, b, balancer = replicas
    assert a.license_key is not None and a.omega_pub_path is not None
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    token, _ = issue(a.license_key, "mf-silent", "ACME", expires)
    silent = mainframe_factory.start(
        omega=balancer.url, license_token=token, mainframe_id="mf-silent",
        trust=a.pub_path, trust_omega=a.omega_pub_path, poll_wait=1,
    )  # fmt: skip
    mainframe_factory.ready(silent)
    with http(a) as c:
        wait_for(lambda: len(c.get("/v1/fleet/mainframes").json()["mainframes"]) == 1, 30, "1")
    silent.stop()  # registered, and never heard from again
    a.release(trees.tiny("r1"), "r1", sequence=1)
    rollout_id = rollout(a, "r1")  # a 120 s wave
    assert status(a, rollout_id)["state"] == "running"
    started = wave_started_at(pg_url, rollout_id)
    time.sleep(1.5)  # A ticks, and says it runs
    for _ in range(2):  # replica B restarts (twice) while A runs
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        b = agent_factory(replica_of=a)
        assert status(b, rollout_id)["state"] == "running"
        assert wave_started_at(pg_url, rollout_id) == started
    # The whole OMEGA goes down for longer than a restart: the wave waited for it.
    for replica in (a, b):
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(10)
    time.sleep(6.5)
    down_until = time.time()
    c = agent_factory(replica_of=a)
    assert status(c, rollout_id)["state"] == "running"
    assert wave_started_at(pg_url, rollout_id) >= down_until
