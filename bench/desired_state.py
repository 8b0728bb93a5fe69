"""What deciding each mainframe's desired release costs OMEGA per poll, against the code
before it (issue 19): the same fleet, the same polls, two OMEGAs, one run.

Run: ``python bench/desired_state.py`` (1,000 mainframes, SQLite; about five minutes), or
``--db postgresql://postgres@127.0.0.1/postgres`` (a fresh database on that server for
each OMEGA, dropped after), ``--base REV`` the commit to compare with (default
``4d1dc76``, the last before labels, selectors, rings and pins).

For each tree (``git worktree`` of ``--base``, and this one) a child process starts a real
``ashat agent --role omega`` from that tree's code, stages and approves one small release
with that tree's own routes, registers N licensed mainframes by their first poll, rolls the
release out to them (each poll naming it as installed completes it), then times R rounds
of every mainframe polling as a converged machine would (``current`` = the release): each
such poll runs the whole desired-state decision (pending target, pin, the newest rollout for
its channels and labels) and answers with a signed "no directive". The figure is OMEGA's
CPU seconds (user + system, from ``/proc``) per poll over those rounds. This tree is also
measured with rules in play: half the fleet labelled on OMEGA, and the rollout started with
a selector and a ring, so every poll reads labels and matches selectors.

Goal (issue 19): desired state adds at most 10 % to OMEGA's CPU per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.10
GOAL_LATE_S = 1.0  # a late joiner's first blob after its first poll
DEFAULT_BASE = "4d1dc76"
CONCURRENCY = 200


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mainframes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare with")
    p.add_argument("--db", help="a PostgreSQL server URL (default: SQLite in DATA)")
    p.add_argument("--replicas", type=int, default=1, help="OMEGA replicas (with --db)")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # child: rules|plain
    args = p.parse_args()
    if args.replicas > 1 and not args.db:
        p.error("--replicas > 1 needs --db: replicas share a PostgreSQL database")
    if args.measure:
        print(json.dumps(asyncio.run(measure(args))))
        return
    with tempfile.TemporaryDirectory(prefix="ashat-desired-") as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), args.base],
            check=True,
        )
        try:
            base = child(worktree / "src", "plain", args)
            now = child(REPO / "src", "plain", args)
            rules = child(REPO / "src", "rules", args)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    n = args.mainframes * args.rounds
    store = f"PostgreSQL, {args.replicas} replica(s)" if args.db else "SQLite"
    print(f"{args.mainframes} mainframes × {args.rounds} rounds of converged polls "
          f"({store}), OMEGA CPU per poll:")  # fmt: skip
    print(f"  before ({args.base}):              {base['cpu_ms']:.3f} ms  ({n} polls)")
    print(f"  now, no rules in play:          {now['cpu_ms']:.3f} ms  "
          f"({now['cpu_ms'] / base['cpu_ms']:.2f} ×)")  # fmt: skip
    print(f"  now, labels + selector + ring:  {rules['cpu_ms']:.3f} ms  "
          f"({rules['cpu_ms'] / base['cpu_ms']:.2f} ×)")  # fmt: skip
    worst = max(now["cpu_ms"], rules["cpu_ms"]) / base["cpu_ms"]
    print(f"goal ≤ {GOAL:.2f} ×: {'met' if worst <= GOAL else 'MISSED'} ({worst:.2f} ×)")
    print("a late joiner, first poll to its first blob's first byte: "
          f"before {base['late_first_blob_s']:.3f} s, now {now['late_first_blob_s']:.3f} s, "
          f"with rules {rules['late_first_blob_s']:.3f} s (goal < {GOAL_LATE_S:g} s)")  # fmt: skip


def child(src: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure in a process importing ashat from ``src`` (its OMEGA too)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, __file__, "--measure", mode, "--mainframes", str(args.mainframes),
            "--rounds", str(args.rounds), "--replicas", str(args.replicas)]  # fmt: skip
    argv += ["--db", args.db] if args.db else []
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"measuring {src} ({mode}) failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Fleet:
    """N licensed mainframes polling OMEGA over HTTP, CONCURRENCY at a time; with several
    replicas, mainframe i polls replica i mod R (as a load balancer would spread them)."""

    def __init__(self, clients: list[Any], licenses: dict[str, str]) -> None:
        self.clients = clients
        self.licenses = licenses
        self.sem = asyncio.Semaphore(CONCURRENCY)

    def client_of(self, mid: str) -> Any:
        return self.clients[list(self.licenses).index(mid) % len(self.clients)]

    async def poll(self, mid: str, current: str, sequence: int) -> dict[str, Any]:
        params = {
            "current": current,
            "sequence": str(sequence),
            "wait": "1",
            "nonce": secrets.token_urlsafe(18),
            "os": "linux",
        }
        auth = {"Authorization": f"License {self.licenses[mid]}"}
        async with self.sem:
            r = await self.client_of(mid).get("/v1/fleet/poll", params=params, headers=auth)
            r.raise_for_status()
            answer: dict[str, Any] = r.json()
            return answer

    async def everyone(self, current: str = "", sequence: int = 0) -> None:
        await asyncio.gather(*(self.poll(m, current, sequence) for m in self.licenses))


def stage(url: str, token: str, alpha_key: Path, base: Path) -> None:
    """One small signed release, staged and activated on OMEGA."""
    from ashat.bundle import build_from_dir, load_private_key, sign_manifest
    from ashat.transport.client import AgentClient, BlobRef

    sys.path.insert(0, str(REPO / "bench"))
    from push import make_tree  # bench/ is not a package

    tree = base / "tree"
    make_tree(tree, 20, 200_000, random.Random(7))
    built = build_from_dir(
        tree, update_id="bench-001", sequence=1, description="bench", app={},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    signed = sign_manifest(built.manifest, load_private_key(alpha_key))
    sizes = {e.sha256: e.size for e in signed.files if e.kind == "file"}
    with AgentClient(url, token) as client:
        missing = client.missing(sorted(sizes))
        client.upload([BlobRef(d, sizes[d], built.blobs[d]) for d in missing])
        client.stage(signed.to_bytes())
        client.activate("bench-001")


async def roll_out(http: Any, fleet: Fleet, bearer: dict[str, str], rules: bool) -> None:
    """Approve the release, (with ``rules``) label half the fleet, start the rollout (a
    selector and a ring with ``rules``) and let every mainframe install it."""
    now = dt.datetime.now(dt.UTC).isoformat()
    record = {
        "update_id": "bench-001",
        "sequence": 1,
        "approved_at": now,
        "approvers": [{"user": "bench", "at": now, "comment": "bench"}],
    }
    r = await http.post("/v1/releases/bench-001/approve", json={"approval": record}, headers=bearer)
    r.raise_for_status()
    body: dict[str, Any] = {
        "update_id": "bench-001", "waves": [100], "wave_timeout_s": 600, "auto_rollback": False,
    }  # fmt: skip
    if rules:
        for i, mid in enumerate(fleet.licenses):
            if i % 2 == 0:
                labels = {"ring": "pilot" if i % 10 == 0 else "main", "site": f"s{i % 7}"}
                path = f"/v1/fleet/mainframes/{mid}/labels"
                (await http.post(path, json={"set": labels}, headers=bearer)).raise_for_status()
        body |= {"to": "os=linux,site notin (s9)", "rings": ["ring=pilot"]}
    r = await http.post("/v1/fleet/rollouts", json=body, headers=bearer)
    r.raise_for_status()
    rollout_id = r.json()["rollout_id"]
    for _ in range(5):  # each poll names the release as installed: the waves pass
        await fleet.everyone("bench-001", 1)
        got = await http.get(f"/v1/fleet/rollouts/{rollout_id}", headers=bearer)
        if got.json()["state"] == "completed":
            return
    raise SystemExit(f"the rollout did not complete: {got.json()['state']}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from ashat.bundle import generate_keypair, load_private_key
    from ashat.demo import start_agent
    from ashat.fleet.license import issue

    with tempfile.TemporaryDirectory(prefix="ashat-omega-") as tmp:
        base = Path(tmp)
        alpha_key, alpha_pub = generate_keypair("alpha", base)
        omega_key, _ = generate_keypair("omega", base)
        license_key, license_pub = generate_keypair("license", base)
        token = secrets.token_urlsafe(24)
        (base / "token").write_text(token + "\n")
        sys.path.insert(0, str(REPO / "bench"))
        from fleet import drop_database, make_database  # bench/ is not a package

        db = make_database(args.db) if args.db else None
        extra = ["--omega-key", str(omega_key), "--license-trust", str(license_pub),
                 "--poll-timeout", "1"]  # fmt: skip
        if db:
            extra += ["--db", db, "--blob-dir", str(base / "blobs")]
        replicas = []
        try:
            for i in range(args.replicas):
                replicas.append(
                    start_agent("omega", base, base / "token", [alpha_pub], extra, f"omega{i}")
                )
            stage(replicas[0].url, token, alpha_key, base)
            lkey = load_private_key(license_key)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
            ids = [f"mf-{i:04d}" for i in range(args.mainframes)]
            licenses = {mid: issue(lkey, mid, "ACME", expires)[0] for mid in ids}
            clients = [httpx.AsyncClient(base_url=r.url, timeout=60) for r in replicas]
            try:
                fleet = Fleet(clients, licenses)
                await fleet.everyone()  # registered by their first poll
                bearer = {"Authorization": f"Bearer {token}"}
                await roll_out(clients[0], fleet, bearer, args.measure == "rules")
                cpu = lambda: sum(cpu_s(r.proc.pid) for r in replicas)  # noqa: E731
                before, t0 = cpu(), time.perf_counter()
                for _ in range(args.rounds):
                    await fleet.everyone("bench-001", 1)
                spent, wall = cpu() - before, time.perf_counter() - t0
                late = await late_joiner(clients[-1], lkey, expires)
            finally:
                for c in clients:
                    await c.aclose()
            polls = args.mainframes * args.rounds
            return {"cpu_ms": spent / polls * 1000, "polls": polls, "wall_s": wall, **late}
        finally:
            for r in replicas:
                r.stop()
            if db:
                drop_database(args.db, db)


async def late_joiner(http: Any, key: Any, expires: dt.datetime) -> dict[str, Any]:
    """A mainframe licensed now, after the rollout completed: from its first poll to the
    first byte of its first blob (the directive, then a blob of the signed manifest)."""
    from ashat.fleet.license import issue

    token, _ = issue(key, "mf-late", "ACME", expires, license_id="lic-late")
    auth = {"Authorization": f"License {token}"}
    params = {"current": "", "sequence": "0", "wait": "1", "os": "linux",
              "nonce": secrets.token_urlsafe(18)}  # fmt: skip
    t0 = time.perf_counter()
    answer = (await http.get("/v1/fleet/poll", params=params, headers=auth)).json()
    if not answer.get("directive"):
        raise SystemExit("the late joiner got no directive on its first poll")
    manifest = json.loads(answer["manifest"])
    sha = next(f["sha256"] for f in manifest["files"] if f.get("sha256"))
    async with http.stream("GET", f"/v1/blobs/{sha}", headers=auth) as r:
        r.raise_for_status()
        async for _ in r.aiter_bytes():
            break
    return {"late_first_blob_s": time.perf_counter() - t0}


if __name__ == "__main__":
    main()
