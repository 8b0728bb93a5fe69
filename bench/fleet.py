"""A fleet rollout against N plain downloads: convergence, first blob, bytes, and a 1 % delta.

Run: ``python bench/fleet.py`` (200 mainframes, a 10 MB tree of 200 files: about 5 minutes
on 2 CPUs; ``--mainframes 20`` for a quick run). At scale, with OMEGA replicas sharing a
PostgreSQL database (a fresh one made on that server for the run, dropped after) and a blob
directory, the mainframes taking turns between them::

    python bench/fleet.py --mainframes 1000 --omega-replicas 2 \
        --db postgresql://postgres@127.0.0.1/postgres --size-mb 1 --files 20 --no-peer --no-delta

prints besides the convergence the polls per second the replicas served, their memory
(RSS, and its peak), and the statements each sent to the database per mainframe report
(``ashat_fleet_db_statements_total``, every statement of the rollout: polls, reports,
blob checks, controller ticks, status reads). In one temporary directory it starts:

- OMEGA: a real ``ashat agent --role omega`` process (``--omega-key``, ``--license-trust``),
  driven through its HTTP routes with the bearer token, as ``deploy approve`` would be;
  with ``--front nginx`` (the default where Debian's nginx and curl are installed) behind a
  real nginx running ``contrib/nginx/omega.conf`` with ``--blob-offload nginx``: OMEGA checks
  each license, nginx sends the bytes; with ``--front mirror``, OMEGA alone with
  ``--blob-mirror`` and a real nginx running ``contrib/nginx/blob-mirror.conf`` over its blob
  directory (shared, as on one machine): OMEGA answers each licensed request with a signed
  redirect, and the mirror sends every byte;
- N Licensed Mainframes in ``--workers`` processes (``bench/fleet_worker.py``): each is the
  real client code — an :class:`~ashat.agent.core.Agent` over its own data directory and a
  :class:`~ashat.fleet.mainframe.Mainframe` pull loop with its own license — without the
  agent's uvicorn server, with httpx event hooks on its client to note what happened when;
- the peer, "the physical limit": nginx serving the same tree with sendfile, and N ``curl``
  processes started at once, each fetching every file over one kept-alive connection and
  writing it to disk. Where nginx or curl is missing (the run says so), the peer is
  uvicorn + Starlette ``StaticFiles`` (OMEGA's own server stack without licenses) and N
  httpx clients in the same worker layout as the mainframes.

The releases have no ``[app].run``: what is measured is distribution, not app start-up.
Then 1 % of the files change, a second release is approved and rolled out, and the bytes
each mainframe fetched are compared with the changed bytes. The figures:

- *all report*: from the approve ``POST`` (the rollout ``POST`` follows at once, as in
  ``deploy approve``) to the last mainframe's ``installed`` report acknowledged by OMEGA
  (the 2xx of ``POST /v1/fleet/report``, seen by the mainframe's client); OMEGA's rollout
  must then be ``completed`` with every target installed;
- *first blob*: from the approve ``POST`` to OMEGA's first answer to a ``GET /v1/blobs/…``
  (its response headers reaching a mainframe), and to the first such request;
- *bytes served*: the ``Content-Length`` of every blob answer the mainframes received
  (OMEGA's ``/metrics`` counts requests, not bytes: its count of blob answers is shown),
  and what the mainframes' blob stores hold;
- *delta*: per mainframe, during the second rollout, the blob bytes it fetched, and the
  poll answer that carried the directive with the signed manifest;
- CPU seconds of the server and of the client processes on each side, for where time goes.

Times across processes are ``time.monotonic()``, one clock for the machine on Linux.
Goals (issue): all report ≤ 2 × the plain downloads, first blob < 1 s after approval,
delta ≤ 1.1 × the changed bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ashat.demo import AgentProcess, free_port, start_agent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_worker import BYTES_ROUTES, DOWNLOADED, cpu_s  # bench/ is not a package
from nginx_run import Nginx, nginx_binary
from push import change_some, make_tree

GOAL_CONVERGENCE = 2.0  # × the plain downloads
GOAL_FIRST_BLOB_S = 1.0  # seconds after approval
GOAL_DELTA = 1.1  # × the changed bytes
ROLLOUT_TIMEOUT_S = 1800.0
READY_TIMEOUT_S = 300.0
STATUS_EVERY_S = 0.25  # how often the rollout status is read while waiting
MIRROR_SECRET = "bench-mirror-secret-0123456789"  # --front mirror: OMEGA and nginx share it
BLOB_ROUTE = 'ashat_agent_requests_total{method="GET",route="/v1/blobs/{sha256}",status="200"}'
PACK_ROUTE = (
    'ashat_agent_requests_total{method="GET",route="/v1/packs/{update_id}/{digest}",status="%d"}'
)


class Worker:
    """A child process of this script speaking JSON lines on stdout, commands on stdin."""

    def __init__(self, kind: str, arg: Path | str, log: Path) -> None:
        argv = [sys.executable, str(Path(__file__).with_name("fleet_worker.py")), kind, str(arg)]
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        if line is None:
            tail = self.log.read_text(errors="replace")[-3000:]
            sys.exit(f"worker {self.proc.args} gave no answer (see {self.log}):\n{tail}")
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: "quit"
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


@dataclass
class Release:
    update_id: str
    sequence: int
    files: int
    bytes: int
    manifest_bytes: int


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of process ``pid`` now, and its peak, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Omega:
    """The control side of real OMEGA processes (replicas: the first is driven, all are
    measured): stage, approve, roll out, watch."""

    def __init__(
        self, replicas: list[AgentProcess], token: str, alpha_key: Path, front: Nginx | None
    ) -> None:
        from ashat.bundle import load_private_key

        self.replicas = replicas
        self.front = front  # the nginx that sends the blob bytes, if any
        agent = replicas[0]
        self.agent = agent
        self.token = token
        self.key = load_private_key(alpha_key)
        self.http = httpx.Client(
            base_url=agent.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def stage(self, tree: Path, update_id: str, sequence: int) -> Release:
        """Bundle and sign ``tree``, upload what OMEGA lacks, stage and activate it there."""
        from ashat.bundle import build_from_dir, sign_manifest
        from ashat.transport.client import AgentClient, BlobRef

        built = build_from_dir(
            tree,
            update_id=update_id,
            sequence=sequence,
            description=f"bench release {update_id}",
            app={},  # no [app].run: distribution only
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        signed = sign_manifest(built.manifest, self.key)
        sizes = {e.sha256: e.size for e in signed.files if e.kind == "file"}
        with AgentClient(self.agent.url, self.token) as client:
            missing = client.missing(sorted(sizes))
            client.upload([BlobRef(d, sizes[d], built.blobs[d]) for d in missing])
            client.stage(signed.to_bytes())
            client.activate(update_id)
        return Release(update_id, sequence, len(sizes), sum(sizes.values()), len(signed.to_bytes()))

    def approve(self, update_id: str, sequence: int) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        record = {
            "update_id": update_id,
            "sequence": sequence,
            "approvers": [{"user": "bench", "at": now, "comment": "bench"}],
            "approved_at": now,
        }
        r = self.http.post(f"/v1/releases/{update_id}/approve", json={"approval": record})
        if r.status_code != 200:
            sys.exit(f"approve {update_id}: {r.status_code} {r.text}")

    def rollout(self, update_id: str, waves: list[int]) -> str:
        body = {
            "update_id": update_id,
            "channel": "stable",
            "waves": waves,
            "max_failure_ratio": 0.2,
            "wave_timeout_s": ROLLOUT_TIMEOUT_S,
            "auto_rollback": False,
        }
        r = self.http.post("/v1/fleet/rollouts", json=body)
        if r.status_code != 201:
            sys.exit(f"rollout {update_id}: {r.status_code} {r.text}")
        return str(r.json()["rollout_id"])

    def until_done(self, rollout_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while time.monotonic() < deadline:
            status = dict(self.http.get(f"/v1/fleet/rollouts/{rollout_id}").json())
            if status["state"] != "running":
                return status
            time.sleep(STATUS_EVERY_S)
        sys.exit(f"rollout {rollout_id} still running after {ROLLOUT_TIMEOUT_S:.0f} s")

    def registered(self, n: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            listed = self.http.get("/v1/fleet/mainframes").json()["mainframes"]
            if sum(m["license_status"] == "ok" for m in listed) >= n:
                return
            time.sleep(0.2)
        sys.exit(f"fewer than {n} mainframes registered with OMEGA in {READY_TIMEOUT_S:.0f} s")

    def counter(self, name: str) -> list[float]:
        """A counter (summed over its labels) on each replica's ``/metrics``."""
        out = []
        for replica in self.replicas:
            text = self.http.get(f"{replica.url}/metrics").text
            pattern = "^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)"
            out.append(sum(float(v) for v in re.findall(pattern, text, re.M)))
        return out

    def blob_answers(self) -> int:
        """OMEGA's answers that sent bytes: a blob, or a range of a pack."""
        packs = [PACK_ROUTE % status for status in (200, 206)]  # 200: nginx sent the range
        return int(sum(sum(self.counter(name)) for name in (BLOB_ROUTE, *packs)))

    def cpu_s(self) -> float:
        """The OMEGA processes' CPU seconds (nginx's are :meth:`front_cpu_s`)."""
        return sum(cpu_s(r.proc.pid) for r in self.replicas)

    def first_sent(self, since: float) -> float | None:
        """Seconds from the Unix time ``since`` to the first blob or pack answer the nginx
        sending the bytes began (OMEGA's redirect to it included), by its access log; None
        without one. The mainframes' own clients see it later when their worker is busy."""
        if self.front is None:
            return None
        began = [
            r["answered"]
            for r in self.front.access()
            if r["uri"].startswith(BYTES_ROUTES) and r["status"] in ("200", "206")
        ]
        return min((t - since for t in began if t >= since), default=None)

    def front_cpu_s(self) -> float:
        return self.front.cpu_s() if self.front is not None else 0.0


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` nearly equal runs (no empty one)."""
    parts = max(1, min(parts, len(items)))
    size = math.ceil(len(items) / parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


@contextlib.contextmanager
def workers_of(kind: str, specs: list[Path], base: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for i, spec in enumerate(specs):
            started.append(Worker(kind, spec, base / f"{kind}-{i}.stderr"))
        yield started
    finally:
        for w in started:
            w.stop()


@dataclass
class Peer:
    seconds: float
    bytes: int
    server_cpu_s: float
    clients_cpu_s: float
    what: str = "uvicorn + StaticFiles, httpx clients in the same worker layout"


def nginx_curl_downloads(tree: Path, n: int, base: Path) -> Peer:
    """N ``curl`` processes at once, each fetching every file of ``tree`` (one kept-alive
    connection, each file written to disk) from nginx serving it with sendfile: the
    physical limit of this machine for these bytes."""
    import resource

    import nginx_run

    files = sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file())
    port = free_port()
    server = nginx_run.start(
        base / "peer-nginx",
        f"""server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ root {tree}; sendfile on; tcp_nopush on; }}
}}""",
        port,
        workers="auto",
    )
    try:
        configs = []
        for k in range(n):
            out = base / "peer" / f"c{k:04d}"
            cfg = base / "peer-curl" / f"c{k:04d}.cfg"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(
                "".join(
                    f'url = "http://127.0.0.1:{port}/{f}"\noutput = "{out / f}"\n' for f in files
                )
            )
            configs.append(cfg)
        os.sync()  # untimed: neither side pays for the other's dirty pages (see roll_out)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = server.cpu_s()
        t0 = time.monotonic()
        procs = [subprocess.Popen(["curl", "-sSf", "--create-dirs", "-K", str(c)]) for c in configs]
        failed = sum(p.wait() != 0 for p in procs)
        seconds = time.monotonic() - t0
        server_cpu = server.cpu_s() - server_cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if failed:
            sys.exit(f"{failed} of {n} curl processes failed")
        got = sum(p.stat().st_size for p in (base / "peer").rglob("*") if p.is_file())
    finally:
        server.stop()
    # The files stay until the run's end: deleting 40,000 files here would leave their
    # inodes "recently deleted", which ext4 without a journal (this VM's disk) passes over
    # one by one when the mainframes make theirs next.
    clients = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Peer(seconds, got, server_cpu, clients, "nginx (sendfile) + curl processes")


def plain_downloads(tree: Path, n: int, workers: int, base: Path) -> Peer:
    """N clients each fetch every file of ``tree`` from a static server, all at once."""
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    server = Worker("serve", tree, base / "static-server.stderr")
    try:
        url = server.expect(30)["url"]
        specs = []
        clients = [base / "peer" / f"c{k:04d}" for k in range(n)]
        for i, part in enumerate(split(clients, workers)):
            spec = base / f"peer-{i}.json"
            spec.write_text(
                json.dumps({"url": url, "files": files, "clients": list(map(str, part))})
            )
            specs.append(spec)
        with workers_of("peer", specs, base) as peers:
            for w in peers:
                w.expect(60)
            os.sync()  # untimed, as in nginx_curl_downloads
            server_cpu = cpu_s(server.proc.pid)
            t0 = time.monotonic()
            for w in peers:
                w.send("go")
            answers = [w.expect(ROLLOUT_TIMEOUT_S) for w in peers]
            server_cpu = cpu_s(server.proc.pid) - server_cpu
    finally:
        server.proc.terminate()
        server.proc.wait()  # its files stay until the run's end, as in nginx_curl_downloads
    done = [d for a in answers for d in a["done"]]
    return Peer(
        max(t for t, _ in done) - t0,
        sum(b for _, b in done),
        server_cpu,
        sum(a["cpu_s"] for a in answers),
    )


def summaries(fleet: list[Worker], since: float, update_id: str) -> tuple[dict[str, Any], float]:
    """What each mainframe saw since ``since`` about ``update_id``; the workers' CPU seconds."""
    for w in fleet:
        w.send(f"summary {since!r} {update_id}")
    seen: dict[str, dict[str, Any]] = {}
    cpu = 0.0
    for w in fleet:
        answer = w.expect(120)
        seen.update(answer["mainframes"])
        cpu += answer["cpu_s"]
    return seen, cpu


def store_bytes(homes: list[Path]) -> int:
    total = 0
    for home in homes:
        for p in (home / "data" / "blobs").rglob("*"):
            if p.is_file():
                total += p.stat().st_size
    return total


@dataclass
class Rollout:
    release: Release
    t_approve: float
    t_rollout: float
    status: dict[str, Any]
    seen: dict[str, dict[str, Any]]
    blob_answers: int  # counted by OMEGA's /metrics
    omega_cpu_s: float
    front_cpu_s: float  # the nginx in front of OMEGA, if any
    workers_cpu_s: float
    served: Served
    first_sent_s: float | None  # after approval, by the access log of the nginx sending blobs

    def times(self, key: str) -> list[float]:
        return sorted(s[key] - self.t_approve for s in self.seen.values() if s[key] is not None)

    @property
    def converged_s(self) -> float:
        return max(self.times("acked_at"))


@dataclass
class Served:
    """What the OMEGA replicas counted during a rollout, each."""

    polls: list[float]
    reports: list[float]
    statements: list[float]


SERVED = (
    "ashat_fleet_polls_total",
    "ashat_fleet_reports_total",
    "ashat_fleet_db_statements_total",
)


def served_since(omega: Omega, before: list[list[float]]) -> Served:
    after = [omega.counter(name) for name in SERVED]
    deltas = [
        [x - y for x, y in zip(a, b, strict=True)] for a, b in zip(after, before, strict=True)
    ]
    return Served(*deltas)


def roll_out(omega: Omega, fleet: list[Worker], release: Release, waves: list[int]) -> Rollout:
    answers, omega_cpu, front_cpu = omega.blob_answers(), omega.cpu_s(), omega.front_cpu_s()
    counted = [omega.counter(name) for name in SERVED]
    before, workers_cpu = summaries(fleet, time.monotonic(), release.update_id)
    # Untimed: the peer's 2 GB and the mainframes' own set-up are on disk before the
    # approval, as the peer's start waits for what was written before it; otherwise the
    # first mainframe's syncfs would write them inside the measured time.
    os.sync()
    t_approve, wall_approve = time.monotonic(), time.time()
    omega.approve(release.update_id, release.sequence)
    t_rollout = time.monotonic()
    rollout_id = omega.rollout(release.update_id, waves)
    status = omega.until_done(rollout_id)
    omega_cpu = omega.cpu_s() - omega_cpu
    front_cpu = omega.front_cpu_s() - front_cpu
    served = served_since(omega, counted)
    seen, cpu = summaries(fleet, t_approve, release.update_id)
    answers = omega.blob_answers() - answers
    for mid, s in seen.items():  # the mainframe's own counter (None in older versions)
        if s["downloaded"] is not None:
            s["downloaded"] -= before[mid]["downloaded"]
    done = Rollout(
        release, t_approve, t_rollout, status, seen, answers, omega_cpu, front_cpu,
        cpu - workers_cpu, served, omega.first_sent(wall_approve),
    )  # fmt: skip
    installed = [s for s in seen.values() if s["status"] == "installed"]
    if status["state"] != "completed" or len(installed) != len(seen):
        failures = json.dumps(status.get("failures", [])[:5], indent=1)
        sys.exit(f"rollout of {release.update_id} ended {status['state']}: {failures}")
    return done


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{values[0]:.2f} / {statistics.median(values):.2f} / {values[-1]:.2f} s"


def report(
    a: argparse.Namespace,
    n_files: int,
    workers: int,
    peer: Peer,
    first: Rollout,
    stored: int,
    second: Rollout,
    changed: int,
) -> None:
    n, conv = a.mainframes, first.converged_s
    served = sum(s["blob_bytes"] for s in first.seen.values())
    first_req, first_ans = first.times("first_request")[0], first.times("first_answer")[0]
    print(
        f"tree: {n_files} files, {first.release.bytes / 1e6:.1f} MB; {n} mainframes (real Agent "
        f"+ Mainframe pull loop, no uvicorn) in {workers} worker processes; waves {a.waves}"
    )
    front = {
        "nginx": "behind nginx (--blob-offload nginx)",
        "mirror": "with --blob-mirror (nginx secure_link over its blob directory)",
        "none": "alone",
    }[a.front]
    print(f"ashat: OMEGA {front}; peer: {n} plain HTTP downloads of the tree at once, {peer.what}")
    print(f"both sides' files in {tempfile.gettempdir() if a.dir is None else a.dir}")
    print(f"{'':36}{'ashat':>15}{'peer':>15}{'ratio':>8}  goal")
    print(
        f"{'all report after approval, s':36}{conv:>15.2f}{peer.seconds:>15.2f}"
        f"{conv / peer.seconds:>8.2f}  ≤ {GOAL_CONVERGENCE:g}: "
        f"{_ok(conv / peer.seconds <= GOAL_CONVERGENCE)}"
    )
    print(f"{'bytes served':36}{served:>15,}{peer.bytes:>15,}{served / peer.bytes:>8.3f}")
    server_cpu = first.omega_cpu_s + first.front_cpu_s
    for name, ours, theirs in (
        ("CPU s, server (OMEGA+nginx / static)", server_cpu, peer.server_cpu_s),
        ("CPU s, clients (mainframes / plain)", first.workers_cpu_s, peer.clients_cpu_s),
    ):
        print(f"{name:36}{ours:>15.1f}{theirs:>15.1f}{ours / theirs:>8.2f}")
    gb = served / 1e9
    print(
        f"  server CPU s per GB served: OMEGA {first.omega_cpu_s / gb:.1f}"
        + (f" + its nginx {first.front_cpu_s / gb:.1f}" if a.front != "none" else "")
        + f"; the peer's server {peer.server_cpu_s / (peer.bytes / 1e9):.1f}"
        + f" (goal: ≤ 2 ×: {_ok(server_cpu / gb <= 2 * peer.server_cpu_s / (peer.bytes / 1e9))})"
    )
    counted = [s["downloaded"] for s in first.seen.values() if s["downloaded"] is not None]
    print(
        f"  OMEGA's /metrics: {first.blob_answers:,} blob and pack answers; the mainframes' "
        f"blob stores hold {stored:,} bytes; their {DOWNLOADED} add up to "
        + (f"{int(sum(counted)):,}" if counted else "nothing (no such counter)")
    )
    print(
        f"first blob after approval: OMEGA's first answer {first_ans:.3f} s (goal < "
        f"{GOAL_FIRST_BLOB_S:g} s: {_ok(first_ans < GOAL_FIRST_BLOB_S)}), first request "
        f"{first_req:.3f} s; the rollout POST went at {first.t_rollout - first.t_approve:.3f} s"
        + (
            f"; nginx began sending it at {first.first_sent_s:.3f} s (its access log)"
            if first.first_sent_s is not None
            else ""
        )
    )
    print("  after approval, first / median / last mainframe:")
    print(f"    directive received    {spread(first.times('directive_at'))}")
    print(f"    first blob requested  {spread(first.times('first_request'))}")
    print(f"    report acknowledged   {spread(first.times('acked_at'))}")
    blobs = statistics.mean(s["blob_bytes"] for s in second.seen.values())
    most = max(s["blob_bytes"] for s in second.seen.values())
    answer = statistics.mean(s["directive_bytes"] for s in second.seen.values())
    n_changed = max(1, int(a.files * a.change))  # as push.change_some picks them
    print(
        f"{a.change:.0%} change ({n_changed} files, {changed:,} bytes): all report after "
        f"{second.converged_s:.2f} s"
    )
    print(
        f"  per mainframe: blobs {blobs:,.0f} (max {most:,}); the poll answer with the directive "
        f"and the signed manifest, as a delta from the one it runs, {answer:,.0f} (the whole "
        f"manifest: {second.release.manifest_bytes:,})"
    )
    for name, ratio in (
        ("blob bytes / changed bytes", blobs / changed),
        ("with the poll answer / changed bytes", (blobs + answer) / changed),
    ):
        print(f"  {name:38}{ratio:>7.3f}  goal ≤ {GOAL_DELTA:g}: {_ok(ratio <= GOAL_DELTA)}")


def omega_front(replicas: list[AgentProcess], base: Path, shared: Path | None) -> Nginx:
    """nginx in front of the OMEGA replicas with ``contrib/nginx/omega.conf`` (plain http on
    loopback here), sending the blobs from their blob directory."""
    import nginx_run

    port = free_port()
    blobs = shared or replicas[0].data / "blobs"
    conf = nginx_run.adapt(
        "omega.conf",
        {
            "server 127.0.0.1:8701;": " ".join(
                f"server {r.url.removeprefix('http://')};" for r in replicas
            ),
            "listen 443 ssl;": f"listen 127.0.0.1:{port} reuseport backlog=4096;",
            "ssl_certificate     /etc/ashat/tls/omega.crt;": "",
            "ssl_certificate_key /etc/ashat/tls/omega.key;": "",
            "/var/lib/ashat/omega/data/blobs/": f"{blobs}/",
        },
    )
    return nginx_run.start(base / "omega-nginx", conf, port, workers="auto")


def mirror_front(blobs: Path, base: Path, port: int) -> Nginx:
    """nginx serving OMEGA's blob directory as a signed mirror, with
    ``contrib/nginx/blob-mirror.conf`` (plain http on loopback here)."""
    import nginx_run

    conf = nginx_run.adapt(
        "blob-mirror.conf",
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} reuseport backlog=4096;",
            "ssl_certificate     /etc/ashat/tls/blobs.crt;   # CHANGE": "",
            "ssl_certificate_key /etc/ashat/tls/blobs.key;": "",
            "CHANGE-this-secret-16+chars": MIRROR_SECRET,
            "/srv/ashat-blobs/": f"{blobs}/",
        },
    )
    return nginx_run.start(base / "mirror-nginx", conf, port, workers="auto")


def make_database(server: str) -> str:
    """A new database on the PostgreSQL server of ``server`` (a URL): its URL."""
    import psycopg

    name = f"ashat_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.split("?", 1)[0].rsplit("/", 1)[0] + f"/{name}"


def drop_database(server: str, url: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def report_scale(
    a: argparse.Namespace, n_files: int, r: Rollout, replicas: list[AgentProcess], db: str
) -> None:
    """The figures at scale: convergence, polls served, memory, database round-trips."""
    conv, s = r.converged_s, r.served
    reports = sum(s.reports)
    print(
        f"scale: {a.mainframes} mainframes, {len(replicas)} OMEGA replica(s) on {db}, "
        f"a {r.release.bytes / 1e6:.1f} MB release of {n_files} files, waves {a.waves}"
    )
    print(f"  all report after approval: {conv:.1f} s; rollout {r.status['state']}")
    per = ", ".join(f"{p:,.0f}" for p in s.polls)
    print(
        f"  polls served: {sum(s.polls):,.0f} ({per} by replica) in {conv:.1f} s = "
        f"{sum(s.polls) / conv:,.1f} per s"
    )
    print(f"  blob and pack answers: {r.blob_answers:,} = {r.blob_answers / conv:,.1f} per s")
    print(
        f"  database statements: {sum(s.statements):,.0f} for {reports:,.0f} reports = "
        f"{sum(s.statements) / max(reports, 1):.1f} per mainframe report (all of the rollout's:"
        " polls, reports, blob checks, ticks, status reads)"
    )
    for replica in replicas:
        now, peak = rss_mb(replica.proc.pid)
        print(f"  {replica.role}: RSS {now:.0f} MB (peak {peak:.0f} MB)")
    print(f"  OMEGA CPU {r.omega_cpu_s:.1f} s, mainframe workers CPU {r.workers_cpu_s:.1f} s")


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mainframes", type=int, default=200)
    ap.add_argument("--size-mb", type=float, default=10)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--change", type=float, default=0.01, help="fraction of files changed")
    ap.add_argument("--waves", default="100", help="rollout waves in percent, e.g. 10,50,100")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes")
    ap.add_argument(
        "--threads",
        type=int,
        default=64,
        help="threads per worker process for the agents' blocking calls (a real agent has "
        "its own pool of min(32, CPUs + 4))",
    )
    ap.add_argument("--poll-wait", type=int, default=30, help="mainframes' --poll-wait")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--dir",
        help="where to make the temporary directory (both sides' files), e.g. /dev/shm: "
        "on one machine every mainframe shares one filesystem journal, as no real fleet "
        "does  [default: the system's temporary directory]",
    )
    ap.add_argument("--omega-replicas", type=int, default=1, help="OMEGA processes (needs --db)")
    ap.add_argument(
        "--db",
        help="a PostgreSQL server's URL: the run makes a database there for OMEGA's fleet "
        "state, and drops it after (default: each OMEGA's own SQLite fleet.db)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the plain downloads")
    have_nginx = nginx_binary() is not None and shutil.which("curl") is not None
    ap.add_argument(
        "--front",
        choices=["nginx", "mirror", "none"],
        default="nginx" if have_nginx else "none",
        help="nginx in front of OMEGA sending the blobs (--blob-offload nginx, "
        "contrib/nginx/omega.conf), a signed mirror OMEGA redirects to (--blob-mirror, "
        "contrib/nginx/blob-mirror.conf), or OMEGA alone; the peer is nginx + curl when "
        "nginx and curl are here, else uvicorn's StaticFiles  [default: nginx where "
        "installed]",
    )
    ap.add_argument("--no-delta", action="store_true", help="skip the second (1 %%) rollout")
    a = ap.parse_args()
    if a.front != "none" and not have_nginx:
        ap.error(f"--front {a.front}: nginx and curl are needed (apt-get install nginx-light curl)")
    if not have_nginx:
        print("note: no nginx or curl here: the peer is uvicorn's StaticFiles", file=sys.stderr)
    if a.omega_replicas > 1 and not a.db:
        ap.error("--omega-replicas above 1 needs --db postgresql://… (the state they share)")
    load = os.getloadavg()[0]  # others' work on this machine slows both sides
    waves = [int(w) for w in a.waves.split(",")]
    rng = random.Random(7)
    base = Path(tempfile.mkdtemp(prefix="ashat-bench-fleet-", dir=a.dir))
    base.chmod(0o711)  # the app's user (bubblewrap) must reach OMEGA's release trees
    replicas: list[AgentProcess] = []
    front: Nginx | None = None
    omega: Omega | None = None
    fleet_db: str | None = None

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)  # clean up as on Ctrl-C
    try:
        from ashat.bundle import generate_keypair, load_private_key
        from ashat.fleet.license import issue

        tree = base / "tree"
        make_tree(tree, a.files, int(a.size_mb * 1024 * 1024), rng)
        n_files = sum(1 for p in tree.rglob("*") if p.is_file())
        keys = base / "keys"
        alpha_key, alpha_pub = generate_keypair("alpha", keys)
        omega_key, omega_pub = generate_keypair("omega", keys)
        license_key, license_pub = generate_keypair("license", keys)
        token = secrets.token_urlsafe(24)
        token_file = base / "omega.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        extra = ["--omega-key", str(omega_key), "--license-trust", str(license_pub),
                 "--poll-timeout", str(a.poll_wait)]  # fmt: skip
        if a.front == "nginx":
            extra += ["--blob-offload", "nginx"]
        mirror_port = free_port()
        if a.front == "mirror":
            secret = base / "mirror.secret"
            secret.write_text(MIRROR_SECRET + "\n")
            secret.chmod(0o600)
            extra += ["--blob-mirror", f"http://127.0.0.1:{mirror_port}/ashat",
                      "--blob-mirror-secret-file", str(secret)]  # fmt: skip
        if a.db:
            fleet_db = make_database(a.db)
            extra += ["--db", fleet_db, "--blob-dir", str(base / "shared-blobs")]
        for i in range(a.omega_replicas):
            replicas.append(
                start_agent(
                    "omega", base / "servers", token_file, [alpha_pub], extra=extra,
                    name=f"omega{i}" if i else "omega",
                )
            )  # fmt: skip
        shared = base / "shared-blobs" if a.db else None
        if a.front == "nginx":
            front = omega_front(replicas, base, shared)
        elif a.front == "mirror":
            front = mirror_front(shared or replicas[0].data / "blobs", base, mirror_port)
        omega = Omega(replicas, token, alpha_key, front)
        first_release = omega.stage(tree, "fleet-001", 1)

        if a.no_peer:
            peer = None
        elif have_nginx:
            peer = nginx_curl_downloads(tree, a.mainframes, base)
        else:
            peer = plain_downloads(tree, a.mainframes, a.workers, base)
        omega_url = f"http://127.0.0.1:{front.port}" if a.front == "nginx" else None

        signer = load_private_key(license_key)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        homes = []
        for i in range(a.mainframes):
            home = base / "mainframes" / f"mf-{i:04d}"
            home.mkdir(parents=True)
            lic, _ = issue(signer, f"mf-{i:04d}", "Bench", expires)
            (home / "license").write_text(lic + "\n")
            homes.append(home)
        specs = []
        for i, part in enumerate(split(homes, a.workers)):
            spec = base / f"mainframes-{i}.json"
            spec.write_text(
                json.dumps(
                    {
                        "omega": omega_url or replicas[0].url,
                        "omegas": [omega_url] if omega_url else [r.url for r in replicas],
                        "trust": str(alpha_pub),
                        "trust_omega": str(omega_pub),
                        "poll_wait": a.poll_wait,
                        "threads": a.threads,
                        "log": str(base / f"mainframes-{i}.log"),
                        "mainframes": [str(h) for h in part],
                    }
                )
            )
            specs.append(spec)
        with workers_of("mainframes", specs, base) as fleet:
            for w in fleet:
                w.expect(READY_TIMEOUT_S)
            omega.registered(a.mainframes)
            first = roll_out(omega, fleet, first_release, waves)
            stored = store_bytes(homes)
            second = None
            if not a.no_delta:
                changed = change_some(tree, a.change, rng)
                second_release = omega.stage(tree, "fleet-002", 2)
                second = roll_out(omega, fleet, second_release, waves)
        if peer is not None and second is not None:
            report(a, n_files, len(specs), peer, first, stored, second, changed)
        report_scale(a, n_files, first, replicas, "postgresql" if a.db else "sqlite")
        print(f"load average (1 min) before the run: {load:.2f} on {os.cpu_count()} CPUs")
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        sys.exit(130)
    except httpx.HTTPError as e:  # OMEGA went away (stopped by the same Ctrl-C, or crashed)
        log = base / "servers" / "omega.agent.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        sys.exit(f"lost OMEGA: {e}\n{tail}")
    finally:
        if omega is not None:
            omega.http.close()
        for replica in replicas:
            replica.stop()
        if front is not None:
            front.stop()
        if fleet_db is not None and a.db:
            drop_database(a.db, fleet_db)
        if a.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
