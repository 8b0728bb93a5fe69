"""What the fault tests share: the run's seed and size, the injection plans, and the checks made
after every restart (a release tree verified file by file against its signed manifest).

Settings (read once per run):

- ``ASHAT_FAULT_SEED``: the seed, printed in the summary and in every failure message, so
  that a failing run is re-run exactly with ``ASHAT_FAULT_SEED=N``. The default is
  :data:`DEFAULT_SEED`, so that the suite CI runs is the same plan every time (kills from
  outside still land at moments the machine decides); ``ASHAT_FAULT_SEED=random`` draws a
  new one, to explore;
- ``ASHAT_FAULT_INJECTIONS``: how many kills the whole suite injects (default 100);
- ``ASHAT_FAULT_LONG=1``: the release-check size, 1,000 injections.

Each test draws its own :class:`random.Random` from the seed and its name, so one test's
choices do not depend on which other tests ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.agent.layout import ROOT_LEFTOVERS
from ashat.bundle.manifest import Manifest, parse_manifest

DEFAULT_INJECTIONS = 100
DEFAULT_SEED = 11
LONG_INJECTIONS = 1000


@dataclass(frozen=True)
class Settings:
    seed: int
    injections: int

    def share(self, fraction: float) -> int:
        """This test's part of the run's injections (at least one)."""
        return max(1, round(self.injections * fraction))

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def rerun(self) -> str:
        return f"re-run with ASHAT_FAULT_SEED={self.seed} ASHAT_FAULT_INJECTIONS={self.injections}"


def _settings() -> Settings:
    seed_text = os.environ.get("ASHAT_FAULT_SEED", "")
    if seed_text == "random":
        seed = secrets.randbelow(10**9)
    else:
        seed = int(seed_text) if seed_text.isdigit() else DEFAULT_SEED
    count_text = os.environ.get("ASHAT_FAULT_INJECTIONS", "")
    if count_text.isdigit() and int(count_text) > 0:
        injections = int(count_text)
    elif os.environ.get("ASHAT_FAULT_LONG", "") not in ("", "0"):
        injections = LONG_INJECTIONS
    else:
        injections = DEFAULT_INJECTIONS
    return Settings(seed, injections)


SETTINGS = _settings()


@dataclass
class Tally:
    """Injections made by the run, by test and by point (shown in the terminal summary)."""

    by_test: dict[str, int] = field(default_factory=dict)
    by_point: dict[str, int] = field(default_factory=dict)

    def add(self, test: str, point: str) -> None:
        self.by_test[test] = self.by_test.get(test, 0) + 1
        self.by_point[point] = self.by_point.get(point, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_test.values())


TALLY = Tally()


NONE = "none"  # a restart without a planned crash


@dataclass(frozen=True)
class Injection:
    """One planned crash: ``point`` at its ``hit``-th pass, or ``external`` after ``delay_s``."""

    point: str
    hit: int = 1
    delay_s: float = 0.0

    @property
    def external(self) -> bool:
        return self.point == "external"

    def env(self) -> dict[str, str]:
        if self.external or self.point == NONE:
            return {}
        return {"ASHAT_CRASH_AT": f"{self.point}:{self.hit}"}

    def __str__(self) -> str:
        if self.external:
            return f"kill -9 from outside after {self.delay_s:.3f}s"
        return f"{self.point}:{self.hit}"


def choose(
    rng: random.Random, points: dict[str, int], external_delay_s: float, later: bool = True
) -> Injection:
    """A point (``points`` maps each to how many times one operation passes it, roughly; the
    hit is drawn up to one more than that when ``later``, so some kills land in a later
    operation), or, one time in six, a kill from outside at a random moment up to
    ``external_delay_s``."""
    if rng.random() < 1 / 6:
        return Injection("external", delay_s=rng.uniform(0.0, external_delay_s))
    point = rng.choice(sorted(points))
    return Injection(point, rng.randint(1, points[point] + (1 if later else 0)))


# -- what must hold on disk ----------------------------------------------------------------


class Broken(AssertionError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


def verify_release(data: Path, update_id: str) -> Manifest:
    """``releases/<id>`` holds exactly its manifest's files, each with its digest, size and
    kind; the manifest. Raises :class:`Broken` naming the first difference."""
    tree = data / "releases" / update_id
    try:
        m = parse_manifest((data / "manifests" / f"{update_id}.json").read_bytes())
    except FileNotFoundError:
        raise Broken(f"release {update_id} has no manifest") from None
    if m.update_id != update_id:
        raise Broken(f"manifests/{update_id}.json names {m.update_id}")
    if not tree.is_dir() or tree.is_symlink():
        raise Broken(f"releases/{update_id} is not a directory")
    expected = {e.path for e in m.files}
    found = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = (Path(dirpath) / name).relative_to(tree).as_posix()
            if "__pycache__" not in rel:  # an app importing a module writes these
                found.add(rel)
    if found != expected:
        raise Broken(
            f"release {update_id}: files differ from its manifest: "
            f"extra {sorted(found - expected)[:5]}, missing {sorted(expected - found)[:5]}"
        )
    for e in m.files:
        path = tree / e.path
        st = path.lstat()
        if e.kind == "symlink":
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != e.target:
                raise Broken(f"release {update_id}: {e.path} is not the symlink it should be")
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            raise Broken(f"release {update_id}: {e.path} is not a file of {e.size} bytes")
        if sha256_file(path) != e.sha256:
            raise Broken(f"release {update_id}: {e.path} does not hash to {e.sha256}")
    return m


def link(data: Path, name: str) -> str | None:
    """The release id ``current``/``previous`` names, or None."""
    p = data / name
    if not p.is_symlink():
        if p.exists():
            raise Broken(f"{name} is not a symlink")
        return None
    return os.path.basename(os.readlink(p))


def _before(path: Path, since: float | None) -> bool:
    """Whether ``path`` was last changed before ``since`` (always, without ``since``)."""
    try:
        return since is None or path.lstat().st_mtime < since
    except FileNotFoundError:
        return False


def check_data_dir(
    data: Path, allowed_current: set[str | None], intact: set[str], since: float | None = None
) -> str | None:
    """After a restart (the agent repaired what it could at start-up): ``current`` is one of
        ``allowed_current`` and a complete, digest-verified release; ``previous`` (if any) and
        every id of ``intact`` are too; every release has its manifest and the reverse; ``tmp/``
        holds nothing but resumable downloads, no half-made symlink is left, and every stored blob
    hashes to its name. Returns the current id.

    With ``since`` (when the agent now running there started; it may be at work), what it
    changed since is its own work in progress, not a leftover: temporary files and a
    manifest written for a tree not yet renamed into place are then not counted.
    """
    current = link(data, "current")
    if current not in allowed_current:
        raise Broken(f"current is {current}, expected one of {sorted(map(str, allowed_current))}")
    previous = link(data, "previous")
    for update_id in {current, previous, *intact} - {None}:
        assert update_id is not None
        verify_release(data, update_id)
    releases = {p.name for p in (data / "releases").iterdir()}
    manifests = {
        p.name.removesuffix(".json")
        for p in (data / "manifests").iterdir()
        if _before(p, since) or p.name.removesuffix(".json") in releases
    }
    if releases != manifests:
        raise Broken(f"releases {sorted(releases)} and manifests {sorted(manifests)} differ")
    leftovers = sorted(
        p.name for p in (data / "tmp").iterdir() if p.name != "partial" and _before(p, since)
    )
    if leftovers:
        raise Broken(f"tmp/ still holds {leftovers}")
    half = sorted(
        p.name for p in data.iterdir() if p.name.startswith(ROOT_LEFTOVERS) and _before(p, since)
    )
    if half:
        raise Broken(f"half-made symlinks or state files left: {half}")
    for blob in (data / "blobs" / "sha256").glob("*/*"):
        if sha256_file(blob) != blob.name:
            raise Broken(f"blob {blob.name} does not hold the bytes its name says")
    state = json.loads((data / "state.json").read_text())
    if state.get("schema") != 1:
        raise Broken("state.json is not a state file")
    return current


# -- a process under test -------------------------------------------------------------------


class Victim:
    """A process under test (an agent or a mainframe handle from the process fixtures),
    restarted under one injection at a time.

    ``start(env)`` starts it on the same data directory with ``env`` added and returns the
    new handle, which must have ``.proc`` and ``.stop()``; ``factory.handles`` is where the
    fixture keeps the handles it made (to find one killed while starting).
    """

    def __init__(
        self,
        name: str,
        handle: Any,
        start: Callable[[dict[str, str]], Any],
        factory: Any,
        points: dict[str, int],
        rng: random.Random,
        external_delay_s: float,
    ) -> None:
        self.name = name
        self.handle = handle
        self._start = start
        self.factory = factory
        self.points = points
        self.rng = rng
        self.external_delay_s = external_delay_s
        self.injection = Injection(NONE)
        self.fired: list[str] = []  # what fired, for failure messages
        self._timer: threading.Timer | None = None
        self._killed = False
        self.started_at = time.time()  # of the process now running (see check_data_dir)

    def draw(self) -> Injection:
        return choose(self.rng, self.points, self.external_delay_s)

    def restart(self, injection: Injection | None = None) -> int:
        """Stop it (if alive) and start it under ``injection`` (default: a new draw). Start-up
        repairs the data directory and may itself be killed: that injection fired, and the
        next is drawn. Returns how many fired while starting (counted in :data:`TALLY`)."""
        if self.handle.proc.poll() is None:
            self.handle.stop()
        fired = 0
        self.injection = injection or self.draw()
        while True:
            before = len(self.factory.handles)
            self.started_at = time.time()
            try:
                self.handle = self._start(self.injection.env())
                return fired
            except BaseException as e:  # pytest.fail() raises a BaseException
                if len(self.factory.handles) > before:
                    self.handle = self.factory.handles[-1]
                    killed = self.handle.proc.wait(5) == -signal.SIGKILL
                else:
                    killed = "exited with -9" in str(e)
                if not killed:
                    raise
            fired += 1
            self.note(f"{self.injection.point} (start-up)")
            self.injection = self.draw()

    def died(self, expected: bool) -> bool:
        """Whether it was killed (waiting for that a little when it is ``expected``)."""
        try:
            code = self.handle.proc.wait(5.0 if expected else 0.05)
        except subprocess.TimeoutExpired:
            return False
        assert code == -signal.SIGKILL, f"{self.name} exited with {code}:\n{self.handle.output()}"
        return True

    def note(self, point: str) -> None:
        TALLY.add(self.name, point)
        self.fired.append(point)

    def kill_later(self) -> None:
        """For an injection from outside: kill it after the injection's delay (in a timer;
        :meth:`settle` stops the timer and says whether it fired)."""
        self._killed = False
        if not self.injection.external:
            self._timer = None
            return

        def kill() -> None:
            self._killed = True
            self.handle.proc.kill()

        self._timer = threading.Timer(self.injection.delay_s, kill)
        self._timer.start()

    def settle(self) -> bool:
        """Stop the timer of :meth:`kill_later`; whether it killed the process. A kill from
        outside that the operation outlived comes at half the delay next time: on a quick
        machine a rollout can end before any delay drawn, and the test would wait for ever
        for that victim's kill."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
            self._timer = None
            if not self._killed:
                self.injection = Injection("external", delay_s=self.injection.delay_s / 2)
        return self._killed


# -- the tiny project's releases --------------------------------------------------------------

# How often one push (or install) of the tiny project passes each point on an agent, roughly.
AGENT_POINTS = {
    "blob.write": 3,  # each new blob's bytes as they are written
    "blob.commit": 3,  # each blob renamed into the store
    "pack.received": 1,  # a whole pack read and verified, nothing stored yet
    "stage.link": 6,  # each file linked into the staging tree
    "stage.install": 1,  # manifest written, tree not yet renamed into releases/
    "app.started": 1,  # the new app spawned, not yet recorded in state.json
    "switch.begin": 1,  # new app healthy, no symlink changed
    "switch.links": 1,  # previous replaced, current not yet
    "link.replace": 2,  # a new symlink made, not yet renamed over the old one
    "switch.done": 1,  # both symlinks switched, state.json not yet written
    "switch.old_stopped": 1,  # old app stopped, not yet untracked
    "state.save": 5,  # each write of state.json
    "release.remove": 1,  # a pruned release renamed into tmp/, its manifest not yet gone
}


def mutate(root: Path, k: int, rng: random.Random) -> None:
    """Make release ``k``'s tree: a new marker, one new small file, sometimes a large one."""
    (root / "marker.txt").write_text(f"release {k}\n")
    (root / "files" / f"small-{k % 4}.txt").write_bytes(rng.randbytes(rng.randint(0, 4000)))
    if rng.random() < 0.3:  # over the agent's small-blob size: streamed in pieces
        (root / "files" / "large.bin").write_bytes(rng.randbytes(300_000))


def rollouts_of(omega_data: Path, update_id: str) -> list[tuple[str, str]]:
    """``(kind, state)`` of every rollout OMEGA's fleet.db holds for ``update_id``."""
    db = sqlite3.connect(f"file:{omega_data / 'fleet.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT kind, state FROM rollouts WHERE update_id = ?", (update_id,)
        ).fetchall()
    finally:
        db.close()
    return [(str(k), str(s)) for k, s in rows]
