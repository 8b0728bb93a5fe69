"""Switching releases behind a stable address: failed requests while five activations run.

Run: ``python bench/switch.py`` (about half a minute; needs Debian's nginx). It copies
``examples/hello-service``, starts a real PUBLIC agent with ``--upstream-file`` and
``--upstream-reload`` and a real nginx with ``contrib/nginx/app.conf`` in front of it, then
keeps a load generator (threads, a new connection per request, as from many clients)
asking ``/healthz`` through nginx while ``deploy push`` activates five new releases in a
row, each on a new port. It prints the requests sent and failed, and the latency during the
switches next to the same load on the same app with no switch (the peer, in the same run).
Goal (issue 17): 0 failed requests out of at least 10,000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from ashat.bundle import generate_keypair
from ashat.demo import free_port, start_agent

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nginx_run

REPO = Path(__file__).resolve().parents[1]
GOAL_REQUESTS = 10_000


class Load:
    """Threads asking ``url`` until stopped: latencies of the answers, and the failures."""

    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.ms: list[float] = []
        self.failed: list[str] = []
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10, headers={"Connection": "close"}) as http:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = http.get(self.url).status_code == 200
                    why = "not 200"
                except httpx.HTTPError as e:
                    ok, why = False, repr(e)
                ms = (time.perf_counter() - t0) * 1000
                with self.lock:
                    (self.ms.append(ms) if ok else self.failed.append(why))

    def run_until(self, done: threading.Event | None, seconds: float, minimum: int) -> None:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or (done is not None and not done.is_set()):
            time.sleep(0.1)
        while len(self.ms) + len(self.failed) < minimum:
            time.sleep(0.1)
        self.stop.set()
        for t in self.threads:
            t.join(30)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switches", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--requests", type=int, default=GOAL_REQUESTS, help="at least this many")
    a = ap.parse_args()
    if nginx_run.nginx_binary() is None:
        sys.exit("nginx is not installed (apt-get install nginx-light): it is the front")
    base = Path(tempfile.mkdtemp(prefix="ashat-bench-switch-"))
    agent = server = None
    try:
        tree = base / "hello"
        shutil.copytree(REPO / "examples" / "hello-service", tree)
        key, pub = generate_keypair("alpha", base / "keys")
        token = base / "token"
        token.write_text(os.urandom(16).hex())
        upstream = base / "upstream.conf"
        upstream.write_text("server 127.0.0.1:9 down;\n")
        port, home = free_port(), base / "nginx"
        conf = nginx_run.adapt(
            "app.conf",
            {
                "/var/lib/ashat/public/upstream.conf": str(upstream),
                "listen 8080;": f"listen 127.0.0.1:{port} backlog=4096;",
            },
        )
        server = nginx_run.start(home, conf, port)
        reload = f"{nginx_run.nginx_binary()} -p {home} -c {home / 'nginx.conf'} -s reload"
        agent = start_agent(
            "public", base / "servers", token, [pub],
            extra=["--upstream-file", str(upstream), "--upstream-reload", reload],
        )  # fmt: skip
        env = {**os.environ, "ASHAT_USER": "bench", "NO_COLOR": "1", "ASHAT_SIGNING_KEY": str(key)}
        deploy = [sys.executable, "-m", "ashat.cli.deploy"]

        def run(*args: str) -> None:
            done = subprocess.run([*deploy, *args], cwd=tree, env=env, capture_output=True)
            if done.returncode != 0:
                sys.exit(f"deploy {' '.join(args)} failed:\n{done.stdout!r}\n{done.stderr!r}")

        run("configure", "public", agent.url, "Bench", "--token-file", str(token))
        run("push", "switch-000", "first")
        url = f"http://127.0.0.1:{port}/healthz"

        steady = Load(url, a.threads)  # the peer: the same app, the same load, no switch
        steady.run_until(None, 5.0, 0)

        switching = Load(url, a.threads)
        finished = threading.Event()

        def switches() -> None:
            for n in range(1, a.switches + 1):
                (tree / "VERSION").write_text(f"2.0.{n}\n")
                run("push", f"switch-{n:03d}", f"release {n}")
            finished.set()

        pusher = threading.Thread(target=switches)
        pusher.start()
        switching.run_until(finished, 0.0, a.requests)
        pusher.join()

        sent = len(switching.ms) + len(switching.failed)
        print(
            f"{a.switches} activations behind nginx (contrib/nginx/app.conf), {a.threads} "
            "client threads, a new connection per request"
        )
        print(f"{'':28}{'switching':>12}{'steady':>12}")
        print(f"{'requests':28}{sent:>12,}{len(steady.ms) + len(steady.failed):>12,}")
        print(f"{'failed':28}{len(switching.failed):>12,}{len(steady.failed):>12,}")
        for q in (50, 99):
            print(
                f"{f'latency p{q}, ms':28}{percentile(switching.ms, q):>12.2f}"
                f"{percentile(steady.ms, q):>12.2f}"
            )
        print(f"{'max latency, ms':28}{max(switching.ms):>12.1f}{max(steady.ms):>12.1f}")
        good = not switching.failed and sent >= GOAL_REQUESTS
        print(
            f"goal: 0 failed out of at least {GOAL_REQUESTS:,}: "
            f"{'met' if good else 'MISSED'}"
            + (f" (first failures: {switching.failed[:3]})" if switching.failed else "")
        )
    finally:
        if agent is not None:
            agent.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
