"""How long ``deploy status`` and ``deploy history`` take on a big store, as whole processes.

Run: ``python bench/cli_latency.py`` (about half a minute). In a temporary project it fills
the SQLite control store with 10,000 deployments and about 100,000 audit events (a valid
hash chain, so ``deploy audit verify`` passes), then times each command N times as a fresh
process against ``python -c pass`` in the same run, and prints medians and ratios; then
again with a warm helper (``deploy helper start``) running.
Goal (DESIGN §3): each verb answers in at most 150 ms on this machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ashat.canonical import canonical_json
from ashat.cli.warm import ENV_SOCKET
from ashat.store.audit import GENESIS_HASH, chain_hash, event_body
from ashat.store.db import Database, default_sqlite_url
from ashat.workflow.ports import iso

GOAL_MS = 150.0
CHECKS = ("health", "api", "performance")  # of the six, those that leave an event here


def _plan(i: int, n: int) -> list[str]:
    """The states deployment ``i`` of ``n`` went through (the newest few are in flight)."""
    if i == n - 1:
        return ["pushing", "pushed", "verifying"]
    if i >= n - 4:
        return ["pushing", "pushed", "verifying", "verified"]
    tail = {
        0: ["verification_failed", "cancelled"],
        1: ["verified", "cancelled"],
        2: ["verified", "approved", "releasing", "distributing", "completed", "rolled_back"],
    }.get(i % 10, ["verified", "approved", "releasing", "distributing", "completed"])
    return ["pushing", "pushed", "verifying", *tail]


def fill(db_path: Path, deployments: int) -> tuple[int, float]:
    """Write ``deployments`` deployments and their events in one transaction."""
    t0 = time.perf_counter()
    Database(f"sqlite:///{db_path}").close()  # create the schema through the migrations
    con = sqlite3.connect(db_path, isolation_level=None)
    start = datetime(2029, 1, 1, tzinfo=UTC)
    seq, prev = 0, GENESIS_HASH
    dep_rows, ev_rows = [], []

    def event(uid: str, kind: str, at: str, details: dict[str, object]) -> None:
        nonlocal seq, prev
        seq += 1
        digest = chain_hash(prev, event_body(seq, uid, kind, "alice", at, details))
        ev_rows.append(
            (seq, uid, kind, "alice", at, canonical_json(details).decode(), prev, digest)
        )
        prev = digest

    for i in range(deployments):
        uid = f"r{i:05d}"
        t = start + timedelta(minutes=10 * i)
        states = _plan(i, deployments)
        event(uid, "deployment.pushing", iso(t), {"description": f"release {i}"})
        for a, b in itertools.pairwise(states):
            t += timedelta(seconds=30)
            if a == "verifying":
                for check in CHECKS:
                    event(uid, "check.result", iso(t), {"check": check, "status": "passed"})
            event(uid, f"deployment.{b}", iso(t), {"from": a, "to": b})
        dep_rows.append(
            (
                uid,
                states[-1],
                f"release {i}",
                "alice",
                iso(start + timedelta(minutes=10 * i)),
                iso(t),
                None,
                "{}",
            )
        )
    con.execute("BEGIN")
    con.executemany("INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dep_rows)
    con.executemany(
        "INSERT INTO events (seq, deployment_id, kind, actor, at, details, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ev_rows,
    )
    con.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
    last = dep_rows[-1]
    con.execute(
        "INSERT INTO leases VALUES ('public', ?, 'alice@bench:1', ?, ?)",
        (last[0], last[5], "2999-01-01T00:00:00.000000Z"),
    )
    con.execute("COMMIT")
    con.close()
    return seq, time.perf_counter() - t0


def timed(cmd: list[str], cwd: Path, env: dict[str, str], runs: int) -> float:
    """Median wall time in ms of ``cmd`` as a fresh process (after one warm-up run)."""
    samples = []
    for k in range(runs + 1):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=60)
        dt = (time.perf_counter() - t0) * 1000
        if res.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode()[-500:]}")
        if k:
            samples.append(dt)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deployments", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ashat-bench-"))
    try:
        (root / "ashat.toml").write_text("", encoding="utf-8")
        db = Path(default_sqlite_url(root)[len("sqlite:///") :])
        events, fill_s = fill(db, args.deployments)
        print(
            f"store: {args.deployments} deployments, {events} events, "
            f"{db.stat().st_size / 1e6:.1f} MB, filled in {fill_s:.1f} s ({root})"
        )
        env = {**os.environ, "ASHAT_USER": "bench", "NO_COLOR": "1"}
        env.pop("ASHAT_DB", None)
        # As installed (pip compiles a package's bytecode): the warm-up run writes it. With
        # PYTHONDONTWRITEBYTECODE set (this sandbox sets it), an editable checkout would
        # recompile ashat's modules at every start and measure the compiler, not ashat.
        no_bytecode = env.pop("PYTHONDONTWRITEBYTECODE", None)
        script = Path(sys.executable).with_name("deploy")
        deploy = [str(script)] if script.exists() else [sys.executable, "-m", "ashat.cli.deploy"]
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("deploy status", [*deploy, "status"]),
            ("deploy status r09999", [*deploy, "status", f"r{args.deployments - 1:05d}"]),
            ("deploy history --limit 50", [*deploy, "history", "--limit", "50"]),
        ]
        helper = root / "helper"
        helper.mkdir(mode=0o700)
        env[ENV_SOCKET] = str(helper / "deploy.sock")  # none listens there yet
        results = [(name, timed(cmd, root, env, args.runs)) for name, cmd in cases]
        subprocess.run([*deploy, "helper", "start"], cwd=root, env=env, check=True,
                       capture_output=True)  # fmt: skip
        try:
            results += [
                (f"{name} (warm helper)", timed(cmd, root, env, args.runs))
                for name, cmd in cases[1:]
            ]
        finally:
            subprocess.run([*deploy, "helper", "stop"], cwd=root, env=env, capture_output=True)
        base = results[0][1]
        print(f"median of {args.runs} runs each (goal: <= {GOAL_MS:.0f} ms per verb)")
        for name, ms in results:
            verdict = "" if name.startswith("python") else ("ok" if ms <= GOAL_MS else "SLOW")
            print(f"  {name:<40} {ms:7.1f} ms  x{ms / base:4.1f} of python -c pass  {verdict}")
        if no_bytecode:
            print("  (PYTHONDONTWRITEBYTECODE unset for these runs: bytecode kept, as installed)")
        check = subprocess.run(
            [*deploy, "audit", "verify"], cwd=root, env=env, capture_output=True, text=True
        )
        print(f"  audit verify: {check.stdout.strip() or check.stderr.strip()}")
        if any(ms > GOAL_MS for name, ms in results[1:]):
            sys.exit(1)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
