"""``deploy verify``: is the wall time the slowest check plus a little, not the sum of all six?

Run: ``python bench/verify.py [--runs 5]`` (about half a minute). It starts a real PUBLIC agent
on loopback, pushes examples/hello-service, then runs ``deploy verify --json`` as a whole
process ``--runs`` times. For each run it takes the checks' own durations from the JSON and
compares the process's wall time with the slowest check and with their sum; the start-up
of a ``deploy`` process that does nothing (``deploy help``) is measured in the same run and
subtracted, so the overhead is what verify itself adds. Goal (issue 4): overhead ≤ 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ashat.bundle import generate_keypair
from ashat.demo import default_app_dir, start_agent

GOAL_OVERHEAD_S = 0.2


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(args[2:5])} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return elapsed, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ashat-bench-verify-"))
    agent = None
    try:
        project = base / "hello-service"
        shutil.copytree(default_app_dir(), project, ignore=shutil.ignore_patterns("data", ".ashat"))
        _, pub = generate_keypair("alpha", base / "keys")
        token = base / "token"
        token.write_text(os.urandom(16).hex())
        agent = start_agent("public", base / "servers", token, [pub])
        env = {**os.environ, "ASHAT_USER": "bench", "NO_COLOR": "1",
               "ASHAT_SIGNING_KEY": str(base / "keys" / "alpha.key")}  # fmt: skip
        env.pop("ASHAT_DB", None)
        deploy = [sys.executable, "-m", "ashat.cli.deploy"]
        run([*deploy, "configure", "public", agent.url, "Bench", "--token-file", str(token)],
            project, env)  # fmt: skip
        run([*deploy, "push", "bench-001", "bench"], project, env)
        startup = statistics.median(run([*deploy, "help"], project, env)[0] for _ in range(5))
        rows = []
        for _ in range(a.runs):
            wall, out = run([*deploy, "verify", "bench-001", "--json"], project, env)
            durations = {r["name"]: r["duration_s"] for r in json.loads(out)["results"]}
            rows.append((wall, max(durations.values()), sum(durations.values()), durations))
        print(f"deploy start-up (deploy help): {startup:.3f} s")
        print(f"{'run':>4}{'wall s':>9}{'slowest s':>11}{'sum s':>8}{'overhead s':>12}  slowest")
        for i, (wall, slowest, total, durations) in enumerate(rows, 1):
            name = max(durations, key=lambda k: durations[k])
            print(f"{i:>4}{wall:>9.3f}{slowest:>11.3f}{total:>8.3f}"
                  f"{wall - startup - slowest:>12.3f}  {name}")  # fmt: skip
        overhead = statistics.median(w - startup - s for w, s, _, _ in rows)
        ratio = statistics.median((w - startup) / t for w, _, t, _ in rows)
        print(f"median overhead over the slowest check: {overhead:.3f} s "
              f"(goal ≤ {GOAL_OVERHEAD_S} s); wall / sum of checks: {ratio:.2f}")  # fmt: skip
    finally:
        if agent:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
