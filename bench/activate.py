"""What checking a release's files costs its activation (issue 15).

Run: ``python bench/activate.py`` (under a minute; ``--files``/``--size-mb``/``--rounds``).
It stages releases of 2,000 files / 50 MB of random bytes in a real agent (in this process,
with its real blob store, release trees and app supervisor), each with a small app that must
answer its health check, and times ``activate``:

- **peer: today's activation without the check** (the tree check switched off in this run);
- **confined app** (bwrap, or another user): the hashes taken as the blobs arrived are
  carried across the hard links, so the check only reads inodes;
- **unconfined app, or after a restart**: every file is hashed again.

Goal: the confined activation within 1.2 × the peer's time. Medians of ``--rounds``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ashat.agent.blobs import BlobStore, BlobWriter
from ashat.agent.config import AgentConfig, AgentRole
from ashat.agent.core import Agent
from ashat.bundle import build_from_dir, generate_keypair, sign_manifest
from ashat.bundle.keys import load_private_key

APP = {
    "run": 'python3 -c "import http.server, os; http.server.ThreadingHTTPServer('
    "('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler)"
    '.serve_forever()"',
    "health_path": "/",
}


def make_tree(root: Path, files: int, total_bytes: int, rng: random.Random) -> None:
    per = total_bytes // files
    for i in range(files):
        d = root / f"pkg{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.bin").write_bytes(
            rng.randbytes(max(1, int(per * rng.uniform(0.5, 1.5))))
        )


def put_blobs(store: BlobStore, blobs: dict[str, Path]) -> None:
    for sha, path in blobs.items():
        w = BlobWriter(store, sha)
        w.write(path.read_bytes())
        w.finish()
        w.commit()


def agent_in(base: Path, pub: Path, sandbox: str) -> Agent:
    from ashat.bundle.keys import load_public_key

    key = load_public_key(pub)
    user = os.environ.get("ASHAT_APP_USER") or ("nobody" if os.geteuid() == 0 else None)
    config = AgentConfig(
        role=AgentRole.PUBLIC,
        data=base,
        host="127.0.0.1",
        port=0,
        token="t",
        trusted={key.keyid: key},
        keep=100,
        app_user=user,
        sandbox=sandbox,
    )
    agent = Agent(config)
    agent.open()
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-mb", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="ashat-bench-activate-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        make_tree(tree, args.files, int(args.size_mb * 1024 * 1024), rng)
        key_path, pub_path = generate_keypair("alpha", base / "keys")
        key = load_private_key(key_path)
        agent = agent_in(base / "data", pub_path, "auto")
        print(f"app confinement of this agent: {agent.jail.mode}", file=sys.stderr)
        times: dict[str, list[float]] = {"peer": [], "confined": [], "unconfined": []}
        confirm = agent._confirm
        n = 0
        for _ in range(args.rounds):
            for how in times:
                n += 1
                (tree / "round.txt").write_text(f"{n}\n")
                built = build_from_dir(
                    tree, update_id=f"r{n:03d}", sequence=n, description="bench", app=APP,
                    created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                )  # fmt: skip
                signed = sign_manifest(built.manifest, key)
                put_blobs(agent.blobs, built.blobs)
                agent.stage(signed.to_bytes())
                if how == "unconfined":
                    agent.blobs._hashed.clear()  # as after a restart: nothing hashed yet
                agent._confirm = (lambda _id: None) if how == "peer" else confirm  # type: ignore[method-assign]
                t0 = time.perf_counter()
                agent.activate(signed.update_id)
                times[how].append(time.perf_counter() - t0)
        agent._confirm = confirm  # type: ignore[method-assign]
        m = agent.releases.manifest(f"r{n:03d}")
        check: dict[str, float] = {}
        for how, clear in (("hashing every file", True), ("inodes only (confined)", False)):
            if clear:
                agent.blobs._hashed.clear()
            t0 = time.perf_counter()
            assert agent.releases.damaged(m, by_hash=True) == []
            check[how] = time.perf_counter() - t0
        agent.shutdown()
        peer = statistics.median(times["peer"])
        print(
            f"activation of a {args.size_mb:g} MB / {args.files}-file release, app healthy "
            f"(median of {args.rounds}):"
        )
        print(f"  peer, today's activation without the tree check: {peer * 1000:7.1f} ms")
        for how in ("confined", "unconfined"):
            t = statistics.median(times[how])
            print(f"  with the check, {how + ' app':<16}:               {t * 1000:7.1f} ms  "
                  f"({t / peer:.2f} × the peer)")  # fmt: skip
        for how, t in check.items():
            print(f"  the tree check alone, {how}: {t * 1000:.1f} ms")
        print("goal (issue 15): the confined activation within 1.2 × the peer")


if __name__ == "__main__":
    main()
