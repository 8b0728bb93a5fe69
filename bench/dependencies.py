"""A 1 % re-push of an app with 40 dependencies against the same app without any.

Run: ``python bench/dependencies.py`` (about half a minute). Two copies of one app tree
(400 files / 8 MB of random bytes and a small HTTP server) are pushed to two real ``ashat
agent`` processes on loopback: one plain, one with ``[app] requirements`` naming 40 wheels
(about 12 MB, from a local wheelhouse: no index is reachable here). Each is pushed once,
then 1 % of the app's files change in both and each is pushed again. The goal (issue 17): the
re-push with dependencies costs no more than the one without, because an unchanged
requirements file reuses the wheels on ALPHA, moves none of them, and reuses the
environment on the server. The first push shows what building them once costs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

from push import change_some, make_tree, timed

from ashat.bundle import generate_keypair
from ashat.demo import start_agent

SERVE = """import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def wheel(house: Path, name: str, payload: bytes) -> None:
    """A pure-Python wheel holding ``payload`` as package data (PEP 427)."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{name}/data.bin": payload,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},"
        f"{len(b)}"
        for p, b in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join([*rows, f"{dist}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(house / f"{name}-1.0-py3-none-any.whl", "w") as z:
        for p, b in files.items():
            z.writestr(p, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3, help="re-pushes timed, the median kept")
    a = ap.parse_args()
    rng = random.Random(17)
    base = Path(tempfile.mkdtemp(prefix="ashat-bench-deps-"))
    agents = []
    try:
        house = base / "wheelhouse"
        house.mkdir()
        names = [f"dep{i:02d}" for i in range(a.deps)]
        for name in names:
            wheel(house, name, rng.randbytes(rng.randint(100_000, 500_000)))
        _, pub = generate_keypair("alpha", base / "keys")
        token = base / "token"
        token.write_text(os.urandom(16).hex())
        env = {**os.environ, "ASHAT_USER": "bench", "NO_COLOR": "1",
               "ASHAT_SIGNING_KEY": str(base / "keys" / "alpha.key"),
               "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(house)}  # fmt: skip
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        deploy = [sys.executable, "-m", "ashat.cli.deploy"]
        trees = {}
        for kind in ("plain", "with deps"):
            tree = base / kind.replace(" ", "-")
            make_tree(tree, 400, 8 * 1024 * 1024, random.Random(7))
            (tree / "serve.py").write_text(SERVE)
            toml = "[app]\nname = 'bench'\nrun = 'python3 serve.py {port}'\n"
            if kind == "with deps":
                (tree / "requirements.txt").write_text("".join(f"{n}==1.0\n" for n in names))
                toml += "requirements = 'requirements.txt'\n"
            (tree / "ashat.toml").write_text(toml)
            agent = start_agent("public", base / "servers", token, [pub], name=tree.name)
            agents.append(agent)
            timed([*deploy, "configure", "public", agent.url, "Bench", "--token-file",
                   str(token)], cwd=tree, env=env)  # fmt: skip
            trees[kind] = tree

        def push(kind: str, uid: str) -> tuple[float, dict[str, object]]:
            t, res = timed([*deploy, "push", uid, "bench", "--json"], cwd=trees[kind], env=env)
            return t, json.loads(res.stdout)

        first = {kind: push(kind, "b-000") for kind in trees}
        again: dict[str, list[tuple[float, dict[str, object]]]] = {k: [] for k in trees}
        for r in range(1, a.rounds + 1):
            for kind, tree in trees.items():
                change_some(tree, 0.01, random.Random(r))
                again[kind].append(push(kind, f"b-{r:03d}"))
        wheels_mb = sum(p.stat().st_size for p in house.glob("*.whl")) / 1e6
        print(f"app: 400 files / 8.4 MB; dependencies: {a.deps} wheels, {wheels_mb:.1f} MB")
        print(f"{'':12}{'first push s':>14}{'first bytes':>14}{'1% re-push s':>15}"
              f"{'re-push bytes':>15}")  # fmt: skip
        med = {}
        for kind in trees:
            t1, r1 = first[kind]
            med[kind] = statistics.median(t for t, _ in again[kind])
            sent = statistics.median(int(str(r["bytes_sent"])) for _, r in again[kind])
            print(f"{kind:12}{t1:>14.2f}{int(str(r1['bytes_sent'])):>14,}{med[kind]:>15.2f}"
                  f"{sent:>15,.0f}")  # fmt: skip
        ratio = med["with deps"] / med["plain"]
        print(
            f"1% re-push with {a.deps} dependencies / without: {ratio:.2f} (goal ≤ 1.0, "
            f"median of {a.rounds})"
        )
    finally:
        for agent in agents:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
