"""``deploy push`` against rsync: bytes sent and wall time, first push and a 1 % change.

Run: ``python bench/push.py`` (two minutes or so; ``--files``/``--size-mb`` to change the
tree, ``--repeat N`` re-push rounds, 5 by default, and ``--first N`` first-push rounds, 3 by
default, of each the median is shown).
Each push runs as the ``deploy`` script does, in a new process, as a user's shell runs it (outside
CI): the first push finds no warm helper and starts one as it ends, and the re-pushes run in it;
then the same re-push rounds with no helper (``ASHAT_HELPER=off``: Python's start and imports
in each). Then the first push again, ``--first`` times with no helper and as many with the
helper running: each time a new copy of the tree (no hash cache) to a new agent (no blobs),
and rsync to a new directory, so that the figure is a median, not one run's luck.
It builds a tree of 2,000 files / 50 MB of random bytes, starts a real ``ashat agent`` on
loopback and an rsync daemon on loopback, then for each tool: a first transfer of the whole
tree, a change of 1 % of the files, and a second transfer. ``deploy push`` is timed as a
whole process (hashing, signing, upload, staging, activation); rsync as
``rsync -a --delete`` to the daemon (``--stats`` gives its bytes sent; its first transfer
also with ``--fsync``, which makes each file durable as a push does its blobs), each after a
``sync`` (untimed: neither pays for the other's dirty pages). Before the first push it
times creating 2,000 empty files where each tool will write: on a filesystem that makes a
new file slow (ext4 without a journal, soon after many deletions), that is most of either
tool's first push, and the two directories need not cost the same (``--dir`` puts it all
on another filesystem, one with a journal, say; the run prints which it is). Goals (issue 3):
re-push ≤ 1.1 × the changed bytes and ≤ 1.0 × rsync's time; first push ≤ 1.5 × rsync's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ashat.bundle import generate_keypair
from ashat.cli.warm import ENV_SOCKET
from ashat.demo import free_port, start_agent


def make_tree(root: Path, files: int, total_bytes: int, rng: random.Random) -> None:
    per = total_bytes // files
    for i in range(files):
        d = root / f"pkg{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = max(1, int(per * rng.uniform(0.5, 1.5)))
        (d / f"file{i:05d}.bin").write_bytes(rng.randbytes(size))
    (root / "ashat.toml").write_text("[app]\nname = 'bench'\n")


def change_some(root: Path, fraction: float, rng: random.Random) -> int:
    """Rewrite ``fraction`` of the files with new bytes of the same size; return bytes changed."""
    files = sorted(p for p in root.rglob("*.bin"))
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    changed = 0
    for p in chosen:
        size = p.stat().st_size
        p.write_bytes(rng.randbytes(size))
        changed += size
    return changed


def timed(args: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run and time ``args``, after writing back what earlier runs left dirty (untimed): a
    push makes its blobs durable, and must not pay for the bytes rsync left in the page
    cache, nor rsync for a push's. Half a second first: what an agent does after it answered
    (deleting a pruned tree, copying the current one for the next stage) is not the next
    run's to pay either."""
    time.sleep(0.5)
    os.sync()
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{args[:4]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return elapsed, res


def rsync_daemon(base: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    dest = base / "rsync-dest"
    dest.mkdir()
    (base / "rsync-dest2").mkdir()
    (base / "rsync-dest3").mkdir()
    conf = base / "rsyncd.conf"
    conf.write_text(
        f"pid file = {base / 'rsyncd.pid'}\nuse chroot = false\n"
        f"uid = {os.getuid()}\ngid = {os.getgid()}\n"
        f"[dest]\npath = {dest}\nread only = false\n"
        f"[dest2]\npath = {dest}2\nread only = false\n"
        f"[dest3]\npath = {dest}3\nread only = false\n"
    )
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
         "--address=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            subprocess.run(["rsync", f"rsync://127.0.0.1:{port}/"], capture_output=True, check=True)
            break
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    return proc, port, dest


PROBE_FILES = 2000


def named_rounds(
    warm: list[Any], cold: list[Any], in_venv: list[Any]
) -> list[tuple[str, list[Any]]]:
    return [("1% re-push", warm), ("1% re-push, no helper", cold),
            ("1% re-push, deploy in a venv", in_venv)]  # fmt: skip


def creation_s(where: Path) -> float:
    """Seconds to create ``PROBE_FILES`` empty files in ``where`` (left there: deleting them
    would slow the next creations, see the note printed). A first push of 2,000 files
    creates as many, with either tool."""
    t0 = time.perf_counter()
    for i in range(PROBE_FILES):
        os.close(os.open(where / f".probe-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return time.perf_counter() - t0


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on; for ext4, whether it keeps a journal (the
    kernel lists a ``data=`` mode in /proc/fs/ext4/<device>/options only then)."""
    where, dev, kind = "", "", "unknown"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            device, point, fstype = line.split()[:3]
            point = point.replace("\\040", " ")
            inside = str(path.resolve()).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(where):
                where, dev, kind = point, device, fstype
    if kind != "ext4":
        return kind
    try:
        options = Path(f"/proc/fs/ext4/{os.path.basename(dev)}/options").read_text()
    except OSError:
        return "ext4"
    return "ext4 with a journal" if "data=" in options else "ext4 without a journal"


# The deploy script as pip 25 or later (and uv) write it: it imports no re (older pip's does).
SCRIPT = """#!{python}
import sys
from ashat.cli.warm import main
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(main())
"""


def venv_deploy(base: Path) -> list[str]:
    """``deploy`` in a virtual environment of its own, as pipx or ``uv tool`` make one: its
    interpreter finds ashat and its dependencies where this one does, through a ``.pth``
    that only names those directories, so no ``.pth`` of this interpreter's site-packages is
    run (an import one of those makes is paid by every Python start, not by ashat's)."""
    import site

    import ashat

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python3"
    where = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    roots = [str(Path(ashat.__file__).parents[1]), *site.getsitepackages()]
    (Path(where) / "ashat-bench.pth").write_text("".join(f"{r}\n" for r in roots))
    script = venv / "bin" / "deploy"
    script.write_text(SCRIPT.format(python=python))
    script.chmod(0o755)
    return [str(script)]


def start_ms(args: list[str], n: int = 15) -> float:
    """The median wall time of running ``args`` ``n`` times, in milliseconds."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1000


def rsync_sent(stdout: str) -> int:
    m = re.search(r"Total bytes sent: ([\d,.]+)", stdout)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--change", type=float, default=0.01, help="fraction of files changed")
    ap.add_argument("--repeat", type=int, default=5, help="1%% re-push rounds (median shown)")
    ap.add_argument(
        "--first", type=int, default=3, help="first-push rounds, with no helper and with one"
    )
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--dir",
        help="where to make the temporary directory (the tree, the agent's and rsync's files): "
        "a filesystem with a journal shows what this VM's journal-less root hides (see the "
        "note printed)  [default: the system's temporary directory]",
    )
    a = ap.parse_args()
    if a.repeat < 1 or a.first < 1:
        sys.exit("--repeat and --first must be 1 or more")
    if not shutil.which("rsync"):
        sys.exit("rsync is not installed (apt-get install rsync): it is the yardstick")
    rng = random.Random(7)
    base = Path(tempfile.mkdtemp(prefix="ashat-bench-push-", dir=a.dir))
    agent = daemon = None
    try:
        tree = base / "tree"
        make_tree(tree, a.files, int(a.size_mb * 1024 * 1024), rng)
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        _, pub = generate_keypair("alpha", base / "keys")
        token = base / "token"
        token.write_text(os.urandom(16).hex())
        agent = start_agent("public", base / "servers", token, [pub])
        env = {**os.environ, "ASHAT_USER": "bench", "NO_COLOR": "1", "ASHAT_HELPER": "auto",
               "CI": "", "ASHAT_SIGNING_KEY": str(base / "keys" / "alpha.key")}  # fmt: skip
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode written once, kept
        # the deploy script the installation made (its wrapper's imports are paid too), or
        # what it runs, where there is none
        script = Path(sys.executable).with_name("deploy")
        deploy = [str(script)] if script.exists() else [sys.executable, "-m", "ashat.cli.warm"]
        env[ENV_SOCKET] = str(base / "helper" / "deploy.sock")
        (base / "helper").mkdir(mode=0o700)
        timed([*deploy, "configure", "public", agent.url, "Bench", "--token-file", str(token)],
              cwd=tree, env=env)  # fmt: skip
        daemon, port, rsync_dest = rsync_daemon(base)
        probes = {
            "where the agent writes blobs": creation_s(agent.data / "tmp"),
            "where rsync writes": creation_s(rsync_dest),
        }

        def rsync(src: Path = tree, module: str = "dest", *more: str) -> list[str]:
            return ["rsync", "-a", "--delete", "--stats", "--exclude=.ashat", "--exclude=.probe-*",
                    *more, f"{src}/", f"rsync://127.0.0.1:{port}/{module}/"]  # fmt: skip

        import json

        count = iter(range(1, 10_000))

        def push(
            cwd: Path = tree, cmd: list[str] = deploy, **more: str
        ) -> tuple[float, dict[str, object]]:
            uid = f"bench-{next(count):03d}"
            t, res = timed([*cmd, "push", uid, "bench", "--json"], cwd=cwd, env={**env, **more})
            return t, json.loads(res.stdout)

        def helper_up(cmd: list[str] = deploy, **more: str) -> None:
            """Wait (untimed) until the helper the first push started answers: its start-up
            must not be paid by the rsync run that follows."""
            for _ in range(600):
                out = subprocess.run([*cmd, "helper", "status", "--json"], cwd=tree,
                                     env={**env, **more}, capture_output=True, text=True,
                                     check=True)  # fmt: skip
                if json.loads(out.stdout)["running"]:
                    return
                time.sleep(0.05)
            sys.exit("the warm helper the first push started did not answer")

        clean: list[str] = []
        own = {ENV_SOCKET: str(base / "helper" / "venv.sock")}
        try:
            t_push1, _ = push()  # no helper runs: this one starts it as it ends
            helper_up()
            timed(rsync())

            def rounds(
                cmd: list[str] = deploy, **more: str
            ) -> list[tuple[int, float, dict[str, object], float, str]]:
                """``--repeat`` rounds of a change, a push and rsync; sorted by the ratio."""
                out = []
                for _ in range(a.repeat):
                    changed = change_some(tree, a.change, rng)
                    t_push, r = push(tree, cmd, **more)
                    t_rsync, rs = timed(rsync())
                    out.append((changed, t_push, r, t_rsync, rs.stdout))
                return sorted(out, key=lambda x: x[1] / x[3])

            warm = rounds()  # in the helper the first push left
            cold = rounds(ASHAT_HELPER="off")  # each in a new interpreter, as with no helper
            # deploy in a venv of its own: a helper of its own, left by its first push
            clean = venv_deploy(base)
            push(tree, clean, **own)
            helper_up(clean, **own)
            in_venv = rounds(clean, **own)
            firsts = iter(range(1, 10_000))
            dests = ("rsync-dest2", "rsync-dest3")

            def first_round(**more: str) -> tuple[float, dict[str, object], float, str, float]:
                """A first push of a new copy of the tree (no hash cache) to a new agent (no
                blobs), and rsync's first transfer of it to a new directory, plain and with
                ``--fsync``; what it made is removed after (untimed)."""
                n = next(firsts)
                copy, servers = base / f"first-{n}", base / f"servers-first-{n}"
                shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".ashat"))
                fresh = start_agent("public", servers, token, [pub], name=f"first{n}")
                try:
                    timed([*deploy, "configure", "public", fresh.url, f"First{n}",
                           "--token-file", str(token)], cwd=copy, env=env)  # fmt: skip
                    t_push, r = push(copy, deploy, **more)
                    t_rsync, rs = timed(rsync(copy, f"dest2/first-{n}"))
                    t_durable, _ = timed(rsync(copy, f"dest3/first-{n}", "--fsync"))
                finally:
                    fresh.stop()
                for gone in (copy, servers, *(base / d / f"first-{n}" for d in dests)):
                    shutil.rmtree(gone, ignore_errors=True)
                return t_push, r, t_rsync, rs.stdout, t_durable

            def median(runs: list[tuple[float, dict[str, object], float, str, float]]) -> Any:
                return sorted(runs, key=lambda x: x[0] / x[2])[len(runs) // 2]

            first_cold = [first_round(ASHAT_HELPER="off") for _ in range(a.first)]
            first_warm = [first_round() for _ in range(a.first)]
        finally:
            subprocess.run([*deploy, "helper", "stop"], cwd=tree, env=env, capture_output=True)
            if clean:
                subprocess.run([*clean, "helper", "stop"], cwd=tree, env={**env, **own},
                               capture_output=True)  # fmt: skip

        print(f"both sides' files in {base.parent}: {filesystem(base)}")
        print(f"tree: {a.files} files, {total / 1e6:.1f} MB; changed {cold[0][0] / 1e6:.2f} MB "
              f"({a.change:.0%} of the files); the median of {a.repeat} rounds shown")  # fmt: skip
        print(f"{'':24}{'ashat bytes':>14}{'ashat s':>10}{'rsync bytes':>14}{'rsync s':>10}"
              f"{'time ratio':>12}")  # fmt: skip
        rows = [
            ("first push", *median(first_cold)[:4]),
            ("first push, helper runs", *median(first_warm)[:4]),
        ]
        for name, rs_ in named_rounds(warm, cold, in_venv):
            _, tp, rp, tr, out = rs_[len(rs_) // 2]
            rows.append((name, tp, rp, tr, out))
        for name, tp, rp, tr, out in rows:
            print(f"{name:24}{rp['bytes_sent']:>14,}{tp:>10.2f}{rsync_sent(out):>14,}"
                  f"{tr:>10.2f}{tp / tr:>12.2f}")  # fmt: skip
        print("where a push's time goes, s (as the push's --json reports its steps):")
        steps = ("build", "record", "sign", "plan", "upload", "stage", "activate")
        print(f"{'':24}" + "".join(f"{s:>9}" for s in (*steps, "other")))
        for name, tp, rp, _, _ in rows:
            timings = rp.get("timings") or {}
            assert isinstance(timings, dict)
            other = tp - sum(float(v) for v in timings.values())  # start-up, imports, exit
            cells = "".join(f"{float(timings.get(s, 0.0)):>9.3f}" for s in steps)
            print(f"{name:24}{cells}{other:>9.3f}")
        # "other" holds the deploy client's own start: an interpreter's, with its site-packages
        # (a .pth there that imports a module is paid by every Python start, ours included)
        full, bare, venv = (
            start_ms([sys.executable, "-c", "pass"]),
            start_ms([sys.executable, "-S", "-c", "pass"]),
            start_ms([str(Path(clean[0]).with_name("python3")), "-c", "pass"]),
        )
        print(f"a Python start here: {full:.0f} ms ({bare:.0f} ms without site-packages, -S; "
              f"{venv:.0f} ms in the venv); "
              f"rsync's: {start_ms(['rsync', '--version']):.0f} ms; deploy ran as "
              f"{' '.join(deploy)}")  # fmt: skip
        print(f"creating {PROBE_FILES:,} empty files before the first push took " + ", ".join(
            f"{t:.2f} s {where}" for where, t in probes.items()
        ) + ": ext4 without a journal (this VM's root) skips the inodes freed in the last "
            "60-300 s, so there a first push's time follows where each tool's directory lands "
            "(--dir on a filesystem with a journal does not)")  # fmt: skip
        durable = sorted(x[4] for x in first_cold)[len(first_cold) // 2]
        versus = sorted(x[0] / x[4] for x in first_cold)[len(first_cold) // 2]
        print(f"first push with rsync --fsync (each file durable before rsync ends, as a push's "
              f"blobs are): {durable:.2f} s; ashat's first push / that: {versus:.2f} in a new "
              "process (medians)")  # fmt: skip
        print(f"the first push that started the helper: {t_push1:.2f} s")
        ratio = {name: tp / tr for name, tp, _, tr, _ in rows}
        sent = max(int(r[2]["bytes_sent"]) / r[0] for r in cold + warm + in_venv)  # type: ignore[call-overload]
        print(f"re-push bytes / changed bytes: at most {sent:.3f} (goal ≤ 1.1)")
        for name, rs_ in named_rounds(warm, cold, in_venv):
            print(f"{name} / rsync in each round: " + ", ".join(f"{x[1] / x[3]:.2f}" for x in rs_))
        for name, fs in (("first push", first_cold), ("first push, helper runs", first_warm)):
            print(
                f"{name} / rsync in each round: "
                + ", ".join(f"{x[0] / x[2]:.2f}" for x in sorted(fs, key=lambda x: x[0] / x[2]))
            )
        print(
            "(a push that finds no warm helper starts one as it ends, outside CI: the "
            "re-pushes ran in the one the first push left; 'no helper' is ASHAT_HELPER=off; "
            "'deploy in a venv': deploy in a virtual environment of its own, as pipx or uv tool "
            "install it, which runs no .pth of this interpreter's site-packages)"
        )
        print(f"re-push time / rsync: {ratio['1% re-push']:.2f} as deploy runs (in the helper), "
              f"{ratio['1% re-push, deploy in a venv']:.2f} with deploy in a venv of its own, "
              f"{ratio['1% re-push, no helper']:.2f} with no helper (goal ≤ 1.0); "
              f"first push / rsync: {ratio['first push']:.2f} with no helper, "
              f"{ratio['first push, helper runs']:.2f} with one running (goal ≤ 1.5)")  # fmt: skip
    finally:
        if agent:
            agent.stop()
        if daemon:
            daemon.terminate()
            daemon.wait()
        if a.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
