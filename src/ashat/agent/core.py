"""The agent's operations: stage, activate, roll back, list, health, start-up and shutdown.

Each public method of :class:`Agent` is blocking and thread-safe; the server
(:mod:`.server`) calls them from worker threads. One lock serializes everything that
changes which releases exist or run — the final rename of a staged tree, activation,
rollback, pruning, the app processes — while the slow part of staging (materializing a
tree from blobs) runs outside it. Reads (health, the release list) never wait for it.

Activation, for both ``activate`` and ``rollback``: run ``prepare`` in the new tree, start
the new app on a fresh port and wait for its health path, and only then swap
``previous`` and ``current`` and stop the old app. If anything before the swap fails,
nothing switched: the old release and its process are untouched, the new process is gone,
and a release that was never active is deleted (unless the agent is stopping: then it was
not the release's fault), so it can never become a rollback target. Each one is timed, from
the moment it holds the lock to the end of the switch (``ashat_agent_activation_seconds``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ashat import __version__
from ashat.agent.blobs import BLOB_MODE, BlobStore
from ashat.agent.checks.base import app_env_secrets, scrub
from ashat.agent.config import AgentConfig, AgentRole
from ashat.agent.confine import choose_jail
from ashat.agent.environments import Environments, EnvSpec
from ashat.agent.errors import (
    ActivationFailed,
    AgentError,
    BlobsMissing,
    ReleaseConflict,
    ReleaseDamaged,
    RequestInvalid,
    ShuttingDown,
    StorageFailed,
    WrongApp,
)
from ashat.agent.layout import CURRENT, PREVIOUS, Layout, remove_tree
from ashat.agent.metrics import Metrics
from ashat.agent.releases import MODE_MASK, ReleaseStore
from ashat.agent.state import AgentState, previous_after_rollback, prune_plan
from ashat.agent.supervisor import AppProcess, AppSpec, Supervisor, free_port
from ashat.agent.upstream import AppProxy
from ashat.bundle.errors import BundleError
from ashat.bundle.keys import PublicKey
from ashat.bundle.manifest import Manifest, parse_manifest
from ashat.bundle.sign import check_signatures
from ashat.clock import iso
from ashat.clock import now as clock_now
from ashat.errors import AshatError
from ashat.faults import crash_point
from ashat.ids import UPDATE_ID_RE

log = logging.getLogger("ashat.agent")

SHUTDOWN_LOCK_WAIT_S = 60.0  # how long shutdown waits for an activation in progress
WATCH_INTERVAL_S = 0.5  # how often the watcher looks whether the app still runs
RESTART_PAUSES_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # before each restart of a dying app
STABLE_S = 60.0  # an app that ran this long is no longer "dying": the pauses start again
CRASH_LOOP_DEATHS = 3  # deaths in a row, each within STABLE_S of its start: a crash loop
APP_PROBE_REUSE_S = 1.0  # a live health probe of the app serves the callers of this long


def _now() -> str:
    return iso(clock_now())


def _disk_full(error: BaseException) -> bool:
    """Whether ``error``, or what caused it, is a disk (or a quota) out of room."""
    seen: BaseException | None = error
    for _ in range(5):  # an error, the OSError it wraps, and so on
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_id(update_id: str) -> str:
    if not isinstance(update_id, str) or not UPDATE_ID_RE.fullmatch(update_id):
        raise RequestInvalid(f"invalid update id {str(update_id)[:80]!r}")
    return update_id


class ReleasePolicy(Protocol):
    """What a host with a root of trust requires of every release it stages."""

    def trusted_by_role(self) -> dict[str, Mapping[str, PublicKey]]: ...

    def admit(self, m: Manifest) -> None:
        """Raise (a Refused error) unless ``m`` may run here."""


class Agent:
    def __init__(self, config: AgentConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics(config.role.value)
        self.proxy: AppProxy | None = None  # --app-listen: set by the server (server.py)
        self.layout = Layout(config.data, config.blob_dir)
        self.blobs = BlobStore(self.layout.blobs, self.layout.blob_tmp, config.max_blob_bytes)
        self.releases = ReleaseStore(self.layout, self.blobs)
        self.stopping = threading.Event()
        self.jail = choose_jail(
            config.sandbox,
            config.app_user,
            data=config.host_data or config.data,  # a host's other apps are hidden too
            hidden=config.secret_files,
            binds=config.sandbox_binds,
        )
        self.supervisor = Supervisor(
            self.layout, config.app_env, self.stopping, config.stop_timeout_s, self.jail
        )
        self.environments = Environments(self.layout.envs, self.layout.root)
        self.lock = threading.Lock()
        # deletes pruned trees after the activation that pruned them has answered
        self._sweeper = ThreadPoolExecutor(1, thread_name_prefix="ashat-sweep")
        # per release: (its manifest, the blobs and the mode files it links to)
        self._used_by: dict[str, tuple[Manifest, frozenset[str], frozenset[tuple[str, int]]]] = {}
        # The blobs and mode files of each stage in flight (told present, so not sent again):
        # an activation's collection spares them
        self._staging: dict[object, tuple[frozenset[str], frozenset[tuple[str, int]]]] = {}
        self._full_collect_at = 0.0  # time.monotonic() of the next scan of the whole store
        self.state = AgentState()
        self.app: AppProcess | None = None
        self._lock_fd: int | None = None
        # A mainframe's pull loop (ashat.fleet.mainframe) reports its state here, for health.
        self.fleet_status: Callable[[], dict[str, Any]] | None = None
        # The app's deaths since its release was activated (watch_app restarts it).
        self.restarts = 0
        self.last_exit: int | None = None
        self._dying = 0  # deaths in a row, each restart's pause longer
        self.metrics.release_current.set_function(self._has_current)
        self._probing = threading.Lock()  # one live probe of the app at a time
        self._probed: tuple[float, int, bool] | None = None  # (when, app pid, healthy)
        self._restart_at: float | None = None
        self._dead_pid: int | None = None  # the app last seen dead (logged once)
        self._secrets: list[str] = app_env_secrets(config.app_env)  # every value it had
        self.env_reloaded_at: str | None = None  # --app-env last applied (reload_env)
        # Set by a mainframe holding a root of trust: the keys it takes for each role, and
        # the chain every staged release must carry, whoever stages it.
        self.release_policy: ReleasePolicy | None = None
        # OMEGA names the releases its fleet may still need (ashat.fleet.omega): never pruned.
        self.pinned: Callable[[], Collection[str]] | None = None

    # -- start-up and shutdown ---------------------------------------------------------------

    def open(self) -> None:
        """Take the data directory (creating it) and repair what a crash may have left.

        Raises ``OSError``, or :class:`~ashat.errors.AshatError` if another agent uses it.
        """
        offload = self.config.blob_offload is not None
        if offload:  # nginx (in the agent's group) reads the blob store: dirs group-readable
            os.umask(os.umask(0) & ~0o050)  # (UMask=0077 in the systemd unit: 0027 here)
        if self.layout.ensure():  # a new store holds nothing older than the grace to collect
            self._full_collect_at = time.monotonic() + self.config.blob_grace_s
        self._lock_fd = self.layout.lock()
        self.layout.confine(
            self.jail.user.uid if self.jail.user else None,
            by_path=self.jail.mode == "user",
            blobs_to_group=offload,
        )
        if self.jail.warning:
            log.warning("UNCONFINED APP: %s", self.jail.warning)
        for name in self.layout.clean_tmp():
            log.info("removed leftover %s", name)
        if not self.layout.keep_reserve():
            log.warning("no room for the agent's reserve (%s): a switch away from an app "
                        "that fills the disk may fail", self.layout.reserve)  # fmt: skip
        marker = self.layout.root / "modes-masked"  # once: a store of an earlier version
        if not marker.exists():
            unshared = self.releases.unshare_writes()
            if unshared:
                log.warning("took group and other write from %d stored release files", unshared)
            marker.touch()
        self.state = self._load_state()
        in_use = set()
        for name in (CURRENT, PREVIOUS):
            link = self.layout.link(name)
            target = self.releases.link_target(name)
            if target is None and link.is_symlink():
                log.warning("%s pointed at a missing release; removed", name)
                self.releases.set_link(name, None)
            elif target is not None:
                in_use.add(target)
        for note in self.releases.reconcile(in_use):
            log.warning("%s", note)
        current, previous = self.links()
        if previous is not None and previous == current:
            # A crash between a switch's two links (crash point switch.links): current did
            # not move, and previous is what it was before, as the history says.
            earlier = self._previous_in_history(current)
            log.warning("previous pointed at current %s; restored to %s", current, earlier)
            self.releases.set_link(PREVIOUS, earlier)
        self._record_lost_switch()
        for record in self.state.apps:
            if self.supervisor.reap(record):
                log.warning(
                    "stopped app pid %d of release %s left running by an earlier agent",
                    record.pid,
                    record.release,
                )
        for pid in self.supervisor.reap_strays():
            log.warning("stopped process %d an earlier agent started and never recorded", pid)
        self.state.apps = []
        staged = set(self.releases.ids())
        self.state.recency = [i for i in self.state.recency if i in staged]
        for update_id in sorted(staged - set(self.state.recency)):
            self.state.recency.insert(0, update_id)
        self._save()

    def _record_lost_switch(self) -> None:
        """At start: record a switch whose links moved but whose record was not written, so
        a release rolled back stays rolled back (never offered again by default, nor taken
        again by hand on a mainframe). Saved with the rest of the start's repairs."""
        current, previous = self.links()
        lost = self.state.lost_switch(current, previous)
        if lost is None or current is None:
            return
        how, rolled = lost
        self.state.record_activation(current, how, _now())
        if rolled is not None and self.releases.exists(rolled):
            self.state.mark_rolled_back(rolled)
        log.warning("current is %s, which the history did not say: recorded the %s to it%s",
                    current, how, f" ({rolled} rolled back)" if rolled else "")  # fmt: skip

    def _load_state(self) -> AgentState:
        path = self.layout.state_file
        try:
            return AgentState.load(path)
        except ValueError as e:
            aside = path.with_name(f"state.json.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error("%s; moved it to %s and started with an empty history", e, aside.name)
            return AgentState()

    def start_current_app(self) -> None:
        """Start the app of ``current`` (if it has one), as after a restart; log a failure."""
        with self.lock:
            self._start_current_app()

    def _start_current_app(self) -> None:
        """:meth:`start_current_app`, the lock held."""
        current = self.releases.link_target(CURRENT)
        if current is None or self.app is not None or self.stopping.is_set():
            return  # nothing to run, or an activation got here first
        try:
            spec = self._spec(current)
            if spec.run is None:
                return
            app = self._launch(current, spec, prepare=False)
        except AgentError as e:  # it did not come up, or its record found no room
            secrets = self.secrets()
            log.error(
                "the app of current release %s did not start: %s",
                current,
                scrub(e.message, secrets),
            )
            tail = getattr(e, "log_tail", None)
            if tail:
                log.error("its log ends with:\n%s", scrub(tail, secrets))
            return
        self.app = app
        if app is not None:
            self.metrics.app_up.set(1)
            log.info("started the app of %s on port %d", current, app.port)
            self._publish_or_log(app)

    def watch_app(self) -> None:
        """Restart the current release's app when it exits (run in a thread until the agent
        stops): a pause first, longer each time it dies again soon, and a log line saying
        why. A restart does not run ``prepare`` again."""
        while not self.stopping.wait(WATCH_INTERVAL_S):
            if self.lock.acquire(timeout=WATCH_INTERVAL_S):  # an activation may hold it
                try:
                    self._look_after_app()
                finally:
                    self.lock.release()

    def _look_after_app(self) -> None:
        app = self.app
        if app is None or self.stopping.is_set():
            return
        if app.alive():
            if self._dying and app.started_at + STABLE_S < time.monotonic():
                self._dying = 0
            return
        now = time.monotonic()
        if self._restart_at is None:
            pause = RESTART_PAUSES_S[min(self._dying, len(RESTART_PAUSES_S) - 1)]
            self._restart_at = now + pause
            self.metrics.app_up.set(0)
            if self._dead_pid != app.pid:  # first seen dead (a failed restart keeps it)
                self._dead_pid = app.pid
                self.last_exit = app.proc.returncode
                self.supervisor.stop(app)  # what it left running in its process group
                with contextlib.suppress(OSError):  # a full disk: the next start reaps it
                    self._untrack(app)
                log.error(
                    "the app of %s (pid %d) exited with status %s; restarting in %gs",
                    app.release, app.pid, app.proc.returncode, pause,
                )  # fmt: skip
            return
        if now < self._restart_at:
            return
        self._restart_at = None
        self._dying += 1
        try:
            new = self._launch(app.release, self._spec(app.release), prepare=False)
        except AgentError as e:  # it did not come up, or its record found no room
            log.error(
                "the app of %s did not come back: %s", app.release, scrub(e.message, self.secrets())
            )
            return
        if new is not None:
            self._publish_or_log(new)
            self.app = new
            self.restarts += 1
            self.metrics.app_up.set(1)
            self.metrics.app_restarts.inc()
            log.warning("restarted the app of %s (pid %d, port %d)", new.release, new.pid, new.port)

    def begin_shutdown(self) -> None:
        """Make waits for health give up now (called from the signal handler)."""
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop the supervised app, and finish deleting pruned trees. Idempotent."""
        self.stopping.set()
        self._sweeper.shutdown(wait=True)
        locked = self.lock.acquire(timeout=SHUTDOWN_LOCK_WAIT_S)
        try:
            app, self.app = self.app, None
            if app is not None:
                code = self.supervisor.stop(app)
                log.info("stopped the app of %s (status %s)", app.release, code)
                self._untrack(app)
            self.metrics.app_up.set(0)
        finally:
            if locked:
                self.lock.release()

    # -- reading ------------------------------------------------------------------------------

    def secrets(self) -> list[str]:
        """What the agent never shows: every value the app's environment had since the agent
        started (by value, not by name) and the passwords in URL-valued ones."""
        return self._secrets

    def reload_env(self) -> dict[str, Any]:
        """Read ``--app-env`` again (SIGHUP, ``ashat agent reload``). When it changed and an
        app runs, start the current release's app anew with it and stop the old one only
        once the new one is healthy: an environment the app does not come up with is
        refused, and the old app keeps serving with the old one.

        Returns what changed (variable names, never values). Raises InvalidInput (the file)
        or ActivationFailed (the app did not come up with it).
        """
        from ashat.agent.config import read_app_env

        path = self.config.app_env_file
        if path is None:
            return {"changed": False, "note": "the agent was started without --app-env"}
        new = read_app_env(path)
        with self.lock:
            self._refuse_if_stopping()
            old = dict(self.supervisor.app_env)
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if not keys:
                return {"changed": False, "keys": []}
            self._remember_secrets(new)
            self.supervisor.app_env = dict(new)
            app = self.app
            if app is None or not app.alive():
                self.env_reloaded_at = _now()
                log.info("--app-env reloaded (%s); no app runs now", ", ".join(keys))
                return {"changed": True, "keys": keys, "restarted": False}
            try:
                fresh = self._launch(app.release, self._spec(app.release), prepare=False)
            except ActivationFailed:
                self.supervisor.app_env = old
                log.error("--app-env not applied: the app did not come up with it (%s)", keys)
                raise
            if fresh is None:  # cannot happen: the release runs an app
                return {"changed": True, "keys": keys, "restarted": False}
            try:
                self._publish(fresh)
            except ActivationFailed:
                self.supervisor.app_env = old
                self.supervisor.stop(fresh)
                self._untrack(fresh)
                raise
            self.app = fresh
            self.restarts, self._dying, self._restart_at = 0, 0, None
            self.supervisor.stop(app)
            self._untrack(app)
            self._save()
            self.env_reloaded_at = _now()
        log.info("--app-env reloaded (%s): the app of %s restarted", ", ".join(keys), app.release)
        return {"changed": True, "keys": keys, "restarted": True, "app": self.app_info()}

    def _fresh_env(self) -> None:
        """Each activation starts its app with ``--app-env`` as the file says now; a file
        that cannot be read keeps the environment in force (and says so). Locked."""
        from ashat.agent.config import read_app_env

        path = self.config.app_env_file
        if path is None:
            return
        try:
            new = read_app_env(path)
        except AshatError as e:
            log.error("--app-env not re-read, the environment in force stays: %s", e.message)
            return
        if new != self.supervisor.app_env:
            self._remember_secrets(new)
            self.supervisor.app_env = dict(new)
            self.env_reloaded_at = _now()
            log.info("--app-env re-read for this activation")

    def _remember_secrets(self, env: Mapping[str, str]) -> None:
        known = set(self._secrets)
        self._secrets = self._secrets + [s for s in app_env_secrets(env) if s not in known]

    def _has_current(self) -> float:
        try:
            return 1.0 if self.links()[0] is not None else 0.0
        except OSError:
            return 0.0

    def links(self) -> tuple[str | None, str | None]:
        return self.releases.link_target(CURRENT), self.releases.link_target(PREVIOUS)

    def app_info(self) -> dict[str, Any] | None:
        app = self.app
        if app is None:
            return None
        alive = app.alive()
        healthy = alive and self._healthy_now(app)
        info = app.info(healthy)
        info["restarts"] = self.restarts
        info["last_exit"] = self.last_exit
        info["state"] = self._app_state(alive, healthy)
        return info

    def _healthy_now(self, app: AppProcess) -> bool:
        """Whether the app answers its health path: probed at most once per
        :data:`APP_PROBE_REUSE_S`, by one caller at a time (the others take the last answer).
        ``/v1/health`` needs no token, and an app slow to answer on purpose must not hold
        a thread per request."""
        last = self._probed if self._probed is not None and self._probed[1] == app.pid else None
        if last is not None and time.monotonic() - last[0] < APP_PROBE_REUSE_S:
            return last[2]
        if not self._probing.acquire(blocking=False):
            return last[2] if last is not None else False
        try:
            healthy = app.probe(1.0)[0]
            self._probed = (time.monotonic(), app.pid, healthy)
            return healthy
        finally:
            self._probing.release()

    def _app_state(self, alive: bool, healthy: bool) -> str:
        if self._dying >= CRASH_LOOP_DEATHS:
            return "crash_loop"  # died again and again, each soon after its restart
        if not alive:
            return "restarting"
        return "healthy" if healthy else "unhealthy"

    def app_state(self) -> tuple[str, int]:
        """What a mainframe tells OMEGA of its app at each poll: ``none`` (no app runs),
        ``healthy``, ``unhealthy``, ``restarting`` or ``crash_loop``; and its restarts."""
        info = self.app_info()
        return (str(info["state"]) if info else "none"), self.restarts

    def health(self) -> dict[str, Any]:
        current, previous = self.links()
        answer = {
            "status": "ok",
            "role": self.config.role.value,
            "version": __version__,
            "current": current,
            "previous": previous,
            "app": self.app_info(),
            "app_env": {
                "variables": len(self.supervisor.app_env),
                "file": str(self.config.app_env_file) if self.config.app_env_file else None,
                "reloaded_at": self.env_reloaded_at,
            },
            "app_isolation": self.jail.describe(),
            # what a release must stay within here, so a push can say so before it starts
            "limits": {
                "max_blob_bytes": self.config.max_blob_bytes,
                "max_files": self.config.max_files,
                "max_path_depth": self.config.max_path_depth,
            },
        }
        if self.config.app_name is not None:
            answer["app_name"] = self.config.app_name
        if self.fleet_status is not None:
            answer["fleet"] = self.fleet_status()
        return answer

    def list_releases(self) -> dict[str, Any]:
        current, previous = self.links()
        rolled_back = set(self.state.rolled_back)
        out = []
        for update_id in self.releases.ids():
            try:
                summary = self.releases.summary(update_id)
            except AgentError:  # removed while we looked
                continue
            except (BundleError, OSError) as e:  # its manifest cannot be read: listed so
                summary = {"update_id": update_id, "sequence": 0, "unreadable": str(e)[:200]}
            if update_id == current:
                summary["status"] = "current"
            elif update_id == previous:
                summary["status"] = "previous"
            elif update_id in rolled_back:
                summary["status"] = "rolled_back"
            else:
                summary["status"] = "staged"
            out.append(summary)
        out.sort(key=lambda r: (r["sequence"], r["update_id"]))
        return {"current": current, "previous": previous, "releases": out}

    # -- staging ------------------------------------------------------------------------------

    def _required_roles(self) -> tuple[str, ...]:
        # A mainframe runs only what OMEGA approved, whoever sends it: its pull loop, or a
        # holder of its bearer token staging by hand.
        return ("release", "approval") if self.config.mainframe else ("release",)

    def _trusted_by_role(self) -> dict[str, Mapping[str, PublicKey]] | None:
        if self.release_policy is not None:
            return self.release_policy.trusted_by_role()
        if self.config.mainframe is None:
            return None
        return {"release": self.config.trusted, "approval": self.config.mainframe.trusted_omega}

    def _check_limits(self, m: Manifest) -> None:
        """Refuse a manifest over this agent's file-count or path-depth limit (400, the
        limit and its option named), before anything is materialized."""
        limit = self.config.max_files
        if len(m.files) > limit:
            raise RequestInvalid(
                f"manifest of {m.update_id} lists {len(m.files)} files, over this agent's "
                f"limit of {limit} (--max-files)",
                limit="max_files",
            )
        depth = max((e.path.count("/") for e in m.files), default=0)
        if depth > self.config.max_path_depth:
            deepest = max(m.files, key=lambda e: e.path.count("/")).path
            raise RequestInvalid(
                f"manifest of {m.update_id} has a path {depth} directories deep "
                f"({deepest[:60]}…), over this agent's limit of {self.config.max_path_depth} "
                "(--max-path-depth)",
                limit="max_path_depth",
            )

    def stage(self, data: bytes) -> tuple[dict[str, Any], bool]:
        """Verify and stage signed manifest bytes; return the answer and whether it is new.

        A mainframe requires OMEGA's ``approval`` signature too (by a ``--trust-omega`` key).

        Raises a :class:`~ashat.bundle.errors.BundleError` (bad manifest or signature),
        :class:`BlobsMissing`, or :class:`ReleaseConflict` (same id, other manifest).
        """
        m = parse_manifest(data, max_bytes=self.config.max_manifest_bytes)
        self._check_limits(m)  # before any work proportional to the tree
        check_signatures(
            m, self.config.trusted, self._required_roles(), trusted_by_role=self._trusted_by_role()
        )
        AppSpec.from_app(m.app)  # refuse an app table we could not run, now
        self._check_app_name(m)
        if self.release_policy is not None:
            self.release_policy.admit(m)
        if self._staged_as(m):
            with self.lock:
                return self._restage(m, data), False
        ticket = object()
        files = [(e.sha256, e.mode & MODE_MASK) for e in m.files if e.kind == "file"]
        uses = (frozenset(f[0] for f in files), frozenset(f for f in files if f[1] != BLOB_MODE))
        with self.lock:  # before the blobs are looked at
            self._staging[ticket] = uses
        try:
            return self._stage_new(m, data)
        finally:
            with self.lock:
                del self._staging[ticket]

    def _stage_new(self, m: Manifest, data: bytes) -> tuple[dict[str, Any], bool]:
        missing = self.releases.missing_blobs(m)
        if missing:
            raise BlobsMissing(missing)
        try:
            staging: Path | None = self.releases.materialize(m, sealed=self.jail.isolated)
        except OSError as e:
            raise StorageFailed(f"release {m.update_id}", e) from e
        try:
            with self.lock:
                if self._staged_as(m):
                    return self._restage(m, data), False
                assert staging is not None
                try:  # all or nothing: a full disk here keeps no release
                    self.releases.install(m, data, staging)
                    staging = None
                    self.state.touch(m.update_id)
                    self._save()
                except OSError as e:  # its manifest and tree, whichever were made
                    with contextlib.suppress(OSError):
                        self.releases.remove(m.update_id)
                    raise StorageFailed(f"release {m.update_id}", e) from e
        finally:
            if staging is not None:
                remove_tree(staging)
        self.metrics.releases_staged.inc()
        log.info("staged %s (sequence %d, %d files)", m.update_id, m.sequence, len(m.files))
        return self._stage_answer(m, already=False), True

    def _check_app_name(self, m: Manifest) -> None:
        """An app of a host agent (``--apps``) takes the releases of its own app only: the
        ``[app] name`` its project signed into the manifest."""
        want = self.config.app_name
        if want is None:
            return
        got = m.app.get("name")
        if got != want:
            of = f"of app {got!r}" if isinstance(got, str) else "of a project with no [app] name"
            raise WrongApp(
                f"release {m.update_id} is {of}; this is app {want!r} of its host agent "
                f"(its project's ashat.toml needs [app] name = {want!r})",
                app=want,
            )

    def _staged_as(self, m: Manifest) -> bool:
        """Whether ``m``'s id is staged already with the same manifest (else a conflict)."""
        if not self.releases.exists(m.update_id):
            return False
        old = self.releases.manifest(m.update_id)
        if old.digest() != m.digest():
            raise ReleaseConflict(
                f"release {m.update_id} is already staged with a different manifest "
                f"(digest {old.digest()[:16]}, this one {m.digest()[:16]})",
                update_id=m.update_id,
            )
        return True

    def _restage(self, m: Manifest, data: bytes) -> dict[str, Any]:
        # Same content; the bytes may carry more signatures (OMEGA's approval): keep them.
        if self._staged_as(m) and self.releases.manifest_bytes(m.update_id) != data:
            self.releases.replace_manifest(m, data)
        return self._stage_answer(m, already=True)

    @staticmethod
    def _stage_answer(m: Manifest, already: bool) -> dict[str, Any]:
        return {
            "update_id": m.update_id,
            "sequence": m.sequence,
            "files": len(m.files),
            "bytes": m.total_size,
            "already": already,
        }

    # -- activation and rollback ------------------------------------------------------------

    def activate(self, update_id: str, *, directed: bool = False) -> dict[str, Any]:
        """Make a staged release current (see the module docstring). On a mainframe, only
        forward unless ``directed`` (its pull loop, on a directive OMEGA signed):
        :meth:`_refuse_going_back`.

        Raises :class:`NoSuchRelease`, :class:`ReleaseConflict` or :class:`ActivationFailed`.
        """
        _check_id(update_id)
        with self.lock:
            self._refuse_if_stopping()
            m = self.releases.manifest(update_id)  # NoSuchRelease if not staged
            if self.release_policy is not None:  # staged before a root, or since revoked
                self.release_policy.admit(m)
            current, previous = self.links()
            if current == update_id:
                return {
                    "current": current,
                    "previous": previous,
                    "app": self.app_info(),
                    "already": True,
                }
            if self.config.mainframe is not None and not directed:
                self._refuse_going_back(m, current)
            with self.metrics.switching("activate"):
                return self._switch(update_id, current or previous, "activate")

    def rollback(
        self, from_id: str | None, to_id: str | None, *, directed: bool = False
    ) -> dict[str, Any]:
        """Go back to ``to_id`` (default: ``previous``), recording ``from_id`` as rolled back.
        A mainframe goes back only when ``directed`` (a rollback directive OMEGA signed).

        Raises :class:`ReleaseConflict` (``from`` is not current, no target, target not
        staged, a mainframe asked by hand) or :class:`ActivationFailed`.
        """
        if from_id is not None:
            _check_id(from_id)
        if to_id is not None:
            _check_id(to_id)
        if self.config.mainframe is not None and not directed:
            raise ReleaseConflict(
                "a mainframe goes back only on a rollback directive OMEGA signed for it, not "
                "on its bearer token: run 'deploy rollback UPDATE_ID' where the release was "
                "approved",
                rule="mainframe_forward_only",
            )
        with self.lock:
            self._refuse_if_stopping()
            current, previous = self.links()
            if from_id is not None and from_id != current:
                raise ReleaseConflict(
                    f"cannot roll back {from_id}: the current release is {current or 'none'}",
                    current=current,
                )
            target = to_id or previous
            if target is None:
                raise ReleaseConflict("no previous release to roll back to", current=current)
            if not self.releases.exists(target):
                raise ReleaseConflict(
                    f"cannot roll back to {target}: it is not staged here", current=current
                )
            if target == current:
                raise ReleaseConflict(f"{target} is already the current release", current=current)
            if self.release_policy is not None:  # only to a release that carried its chain
                self.release_policy.admit(self.releases.manifest(target))
            rolled = from_id or current
            excluded = set(self.state.rolled_back) | ({rolled} if rolled else set())
            new_previous = previous_after_rollback(
                [a.update_id for a in self.state.history],
                target,
                excluded,
                set(self.releases.ids()),
            )
            with self.metrics.switching("rollback"):
                self._confirm(target)  # its files, before any migration is undone for it
                undone: list[tuple[str, bool]] = []
                try:
                    self._migrate_back(target, undone)
                    answer = self._rollback_with_room(target, new_previous, rolled)
                except BaseException:
                    if self.links()[0] != target:  # what runs keeps running: on its schema
                        self._migrate_again(undone)
                    raise
            answer["rolled_back"] = rolled
            return answer

    def _refuse_going_back(self, m: Manifest, current: str | None) -> None:
        """On a mainframe, by hand (its bearer token): refuse a release rolled back here, or
        one not newer than what runs (DESIGN §7: only OMEGA's signed rollback directive goes
        back). Raises :class:`ReleaseConflict`. Locked."""
        if m.update_id in self.state.rolled_back:
            raise ReleaseConflict(
                f"{m.update_id} was rolled back here; a mainframe runs it again only on a "
                "directive OMEGA signed for it, not on its bearer token",
                current=current,
                rule="mainframe_forward_only",
            )
        if current is None:
            return
        running = self.releases.manifest(current).sequence
        if m.sequence <= running:
            raise ReleaseConflict(
                f"{m.update_id} has sequence {m.sequence}, not higher than {running} of the "
                f"running {current}; a mainframe goes back only on a rollback directive OMEGA "
                "signed for it: run 'deploy rollback UPDATE_ID' where the release was approved",
                current=current,
                rule="mainframe_forward_only",
            )

    def _migrate_back(self, target: str, undone: list[tuple[str, bool]]) -> None:
        """Before going back to ``target``: the ``rollback_migrate`` hook of each release
        migrated here since, newest first, in its own directory. A failing one stops the
        rollback (what runs keeps running). Appends to ``undone`` each release no longer
        counted as migrated, and whether its hook ran, as it goes. Locked."""
        for release in self.state.migrated_after(target):
            if not self.releases.exists(release):
                continue
            spec = self._spec(release)
            ran = spec.rollback_migrate is not None
            if spec.rollback_migrate is not None:
                self.supervisor.hook(
                    release,
                    "rollback_migrate",
                    spec.rollback_migrate,
                    spec.prepare_timeout_s,
                    free_port(),
                    self.supervisor.log_offset(release),
                    then=f"nothing was rolled back to {target}",
                )
            self.state.migrated.remove(release)
            undone.append((release, ran))
            self._save()

    def _migrate_again(self, undone: list[tuple[str, bool]]) -> None:
        """A rollback failed after migrating back (its target's app did not come up): the
        release that still runs gets its schema back — each undone release's ``migrate``
        hook again, oldest first — or the log says loudly that it runs on the one migrated
        back. Locked."""
        for release, ran in reversed(undone):
            spec = self._spec(release)
            if ran and spec.migrate is not None:
                try:
                    self.supervisor.hook(
                        release, "migrate", spec.migrate, spec.prepare_timeout_s, free_port(),
                        self.supervisor.log_offset(release),
                        then="it runs on the schema migrated back",
                    )  # fmt: skip
                except ActivationFailed as e:
                    log.error("%s", scrub(e.message, self.secrets()))
                    return
            self.state.migrated.append(release)
            try:
                self._save()
            except OSError as e:
                log.error("%s migrated again, not recorded: %s", release, e.strerror or e)

    def _refuse_if_stopping(self) -> None:
        if self.stopping.is_set():
            raise ShuttingDown("the agent is shutting down")

    def _spec(self, update_id: str) -> AppSpec:
        return AppSpec.from_app(self.releases.manifest(update_id).app)

    def _launch(
        self, release: str, spec: AppSpec, *, prepare: bool, migrate: bool = False
    ) -> AppProcess | None:
        """Prepare (if asked), migrate (if asked, once per release here) and start
        ``release``'s app, healthy; None if it has no ``run``."""
        log_from = self.supervisor.log_offset(release)
        port = free_port()
        self._environment(release, spec)
        if prepare:
            self.supervisor.prepare(release, spec, port, log_from)
        migrated_now = False
        if migrate and spec.migrate is not None and release not in self.state.migrated:
            self.supervisor.hook(
                release, "migrate", spec.migrate, spec.prepare_timeout_s, port, log_from
            )
            self.state.migrated.append(release)
            self._save()
            migrated_now = True
        if spec.run is None:
            return None
        try:
            app = self.supervisor.start(release, spec, port, log_from)
        except ActivationFailed:
            if migrated_now:
                self._unmigrate(release, spec, port)
            raise
        crash_point("app.started")
        try:  # from here on a failure (a full disk too) stops the app it started
            self.state.apps.append(app.record())
            self._save()
            self.supervisor.wait_healthy(app, spec.health_timeout_s, log_from)
        except BaseException as e:
            self._stop_new(app)
            if migrated_now:
                self._unmigrate(release, spec, port)
            if isinstance(e, OSError):  # 507 for a full disk, not an internal error
                raise StorageFailed(f"the record of {release}'s app", e) from e
            raise
        return app

    def _stop_new(self, app: AppProcess) -> None:
        """Stop an app started for a switch that did not happen and forget it (its record
        too, if the disk takes it: the next start reaps what a full disk left recorded)."""
        if app.alive():
            self.supervisor.stop(app)
        try:
            self._untrack(app)
        except OSError as e:
            log.error("the app of %s is stopped, but not its record: %s", app.release,
                      e.strerror or e)  # fmt: skip

    def _environment(self, release: str, spec: AppSpec) -> None:
        """Build (or find) the Python environment of ``release``'s shipped wheels and give
        it to the supervisor. Raises :class:`ActivationFailed`. Locked."""
        if spec.environment is None:
            self.supervisor.venvs.pop(release, None)
            return
        path_env = self.supervisor.app_env.get("PATH") or os.environ.get("PATH")
        try:
            base = spec.environment.base_python(path_env)
        except FileNotFoundError as e:
            raise ActivationFailed(f"{release}: {e}; nothing was switched", log_tail="") from e
        venv, reused = self.environments.ensure(
            self.layout.release_dir(release),
            spec.environment,
            base,
            self.layout.log_file(release),
            spec.prepare_timeout_s,
        )
        if not reused:
            log.info("%s: built its Python environment %s", release, venv.name)
        self.supervisor.venvs[release] = venv

    def venv_of(self, release: str) -> Path | None:
        """Where the Python environment of ``release``'s shipped wheels is (built when it is
        activated), or None if it ships none."""
        try:
            spec = EnvSpec.from_app(self.releases.manifest(release).app)
            if spec is None:
                return None
            path_env = self.supervisor.app_env.get("PATH") or os.environ.get("PATH")
            return self.environments.path(spec, spec.base_python(path_env))
        except (BundleError, OSError):
            return None

    def _unmigrate(self, release: str, spec: AppSpec, port: int) -> None:
        """The new release's app did not come up after its migration ran: undo the
        migration (its ``rollback_migrate``) while the old app still serves, or say loudly
        that the database stays migrated. Locked."""
        if spec.rollback_migrate is None:
            log.error(
                "%s did not come up after its migrate hook: the database stays migrated "
                "(the release has no rollback_migrate hook)",
                release,
            )
            return
        try:
            self.supervisor.hook(
                release,
                "rollback_migrate",
                spec.rollback_migrate,
                spec.prepare_timeout_s,
                port,
                self.supervisor.log_offset(release),
                then="the database stays migrated",
            )
        except ActivationFailed as e:
            log.error("%s", scrub(e.message, self.secrets()))
            return
        if release in self.state.migrated:
            self.state.migrated.remove(release)
            self._save()

    def _switch(
        self, target: str, new_previous: str | None, how: str, rolled_back: str | None = None
    ) -> dict[str, Any]:
        """Confirm ``target``'s files, start its app, then swap the symlinks, then stop the
        old app. Locked."""
        self._confirm(target)
        self._fresh_env()
        spec = self._spec(target)
        was_migrated = target in self.state.migrated
        try:
            new_app = self._launch(target, spec, prepare=True, migrate=how != "rollback")
        except ActivationFailed as e:
            log.warning("%s of %s failed: %s", how, target, e.message)
            # Not the release's fault when the agent is stopping: keep it for next time.
            if not self.state.was_activated(target) and not self.stopping.is_set():
                self.releases.remove(target)
                self.state.forget(target)
                self._save()
                log.info("removed %s: a release that never became active is not kept", target)
            raise
        was_previous = self.releases.link_target(PREVIOUS)
        try:
            if new_app is not None:  # traffic moves to the new app before the links do
                self._publish(new_app)
            crash_point("switch.begin")
            self.releases.set_link(PREVIOUS, new_previous)
            crash_point("switch.links")
            self.releases.set_link(CURRENT, target)
        except BaseException as e:  # the links did not move: all back as it was
            self._undo_switch(new_app, was_previous)
            if not was_migrated and target in self.state.migrated:  # migrated for this switch
                self._unmigrate(target, spec, free_port())
            if isinstance(e, OSError):
                raise StorageFailed(f"the {how} to {target} (the previous release runs)", e) from e
            raise
        crash_point("switch.done")
        old_app, self.app = self.app, new_app
        self.restarts, self.last_exit, self._dying, self._restart_at = 0, None, 0, None
        self.state.record_activation(target, how, _now())
        if rolled_back is not None:
            self.state.mark_rolled_back(rolled_back)
        unsaved: OSError | None = None
        try:  # the links moved: what follows must happen, a full disk or not
            crash_point("switch.save")
            self._save()
        except OSError as e:
            unsaved = e
        self.metrics.app_up.set(1 if new_app is not None else 0)
        log.info("%s: %s is current, previous %s", how, target, new_previous or "none")
        if old_app is not None:
            code = self.supervisor.stop(old_app)
            log.info("stopped the app of %s (status %s)", old_app.release, code)
            crash_point("switch.old_stopped")
            try:
                self._untrack(old_app)
            except OSError as e:
                unsaved = unsaved or e
        if unsaved is not None:  # it runs, and the old app is stopped; its record is not kept
            log.error("%s: %s is current, but its state could not be saved: %s", how, target,
                      unsaved.strerror or unsaved)  # fmt: skip
            raise StorageFailed(f"the state of {how} to {target} (it is current)", unsaved)
        self._prune()
        self._keep_template(target)
        return {"current": target, "previous": new_previous, "app": self.app_info()}

    def _rollback_with_room(
        self, target: str, new_previous: str | None, rolled_back: str | None
    ) -> dict[str, Any]:
        """:meth:`_switch` back to ``target``; where it failed for a full disk (ENOSPC,
        EDQUOT) before the links moved, stop the app that runs (its log or its ``shared/``
        may be what filled the disk: it must not keep the rollback away from it from
        happening, nor take the room freed), free the agent's reserve and switch again, with
        that app down. (A forward activation on a full disk fails as it did, 507: nothing
        stops what runs for it.) Locked."""
        how = "rollback"
        try:
            return self._switch(target, new_previous, how, rolled_back)
        except (OSError, AshatError) as e:
            running = self.app
            if not _disk_full(e) or running is None or self.links()[0] == target:
                raise
            log.error(
                "%s to %s: the disk is full; stopping the app of %s (it may be what fills "
                "it) and using the agent's reserve to switch", how, target, running.release,
            )  # fmt: skip
        self.supervisor.stop(running)
        self.app = None
        self.metrics.app_up.set(0)
        freed = self.layout.release_reserve()
        try:
            self._untrack(running)
        except OSError as e:
            log.error("the app of %s is stopped, not its record: %s", running.release, e)
        log.warning("freed %d files of the reserve; switching again", freed)
        try:
            answer = self._switch(target, new_previous, how, rolled_back)
        except BaseException:
            if self.links()[0] != target:  # not switched: what ran runs again, if it can
                self._start_current_app()
                if self.app is None:  # not now (no room): the watcher tries again, paced
                    self.app = running
            raise
        if not self.layout.keep_reserve():
            log.error("the disk is still full: the agent's reserve could not be made again "
                      "(free room on %s)", self.layout.root)  # fmt: skip
        return answer

    def _undo_switch(self, new_app: AppProcess | None, was_previous: str | None) -> None:
        """A switch failed before ``current`` moved (a full disk, the proxy): traffic back to
        the app that runs, the new app stopped, ``previous`` as it was. Best effort: each
        step that fails is logged, and the next start reconciles."""
        if new_app is not None:
            if self.app is not None:
                self._publish_or_log(self.app)
            self._stop_new(new_app)
        if self.releases.link_target(PREVIOUS) != was_previous:
            try:
                self.releases.set_link(PREVIOUS, was_previous)
            except OSError as e:
                log.error("could not put 'previous' back on %s: %s", was_previous or "nothing",
                          e.strerror or e)  # fmt: skip

    def _publish(self, app: AppProcess) -> None:
        """Point the stable address at ``app`` (``--upstream-file`` or ``--app-listen``; see
        :mod:`.upstream`). Raises :class:`ActivationFailed`."""
        if self.config.upstream is not None:
            moved = self.config.upstream.publish(app.port)
        elif self.proxy is not None:
            moved = self.proxy.point_at(app.port)
        else:
            return
        if moved:
            log.info("traffic moved to the app of %s on port %d", app.release, app.port)
            time.sleep(self.config.switch_drain_s)  # requests sent to the old app finish

    def _publish_or_log(self, app: AppProcess) -> None:
        try:
            self._publish(app)
        except ActivationFailed as e:
            log.error("%s%s", e.message, f": {e.log_tail}" if e.log_tail else "")

    def _confirm(self, update_id: str) -> None:
        """Refuse to switch to a release whose files are not the signed bytes: quarantine
        the blobs that were altered, remove the tree (unless it runs), raise
        :class:`ReleaseDamaged`. A file is read again unless its inode was hashed and has
        not changed since (its ctime, which no unprivileged process can set back)."""
        m = self.releases.manifest(update_id)
        bad = self.releases.damaged(m, by_hash=True)
        if not bad:
            return
        entries = {e.path: e for e in m.files if e.kind == "file"}
        for sha in sorted({entries[p].sha256 for p in bad if p in entries}):
            self.blobs.size(sha)  # quarantines the blob if its own bytes were altered
        self.metrics.releases_damaged.inc()
        if update_id != self.links()[0]:
            self.releases.remove(update_id)
            if update_id in self.state.recency:
                self.state.recency.remove(update_id)
            self._save()
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.error("release %s is damaged (%s): not switched to", update_id, shown)
        raise ReleaseDamaged(
            f"{update_id}: {len(bad)} file(s) are not the signed bytes ({shown}); nothing "
            "was switched, the altered blobs are quarantined and the release must be sent "
            "again",
            update_id=update_id,
            files=bad[:100],
        )

    def _prune(self) -> None:
        current, previous = self.links()
        protected = {i for i in (current, previous) if i is not None}
        if self.pinned is not None:
            protected.update(self.pinned())
        doomed = prune_plan(
            self.state.recency, self.config.keep, protected, set(self.releases.ids())
        )
        pruned = [u for u in map(self._doomed_uses, doomed) if u is not None]  # before removal
        deletions: list[Callable[[], None]] = []  # the trees, once their blobs are collected
        for update_id in doomed:
            try:
                self.releases.remove(update_id, sealed=self.jail.isolated, later=deletions.append)
                with contextlib.suppress(FileNotFoundError):
                    self.layout.log_file(update_id).unlink()
            except OSError as e:
                log.error("could not prune %s: %s", update_id, e)
                continue
            self._used_by.pop(update_id, None)
            self.state.forget(update_id)
            log.info("pruned %s (keeping %d releases)", update_id, self.config.keep)
        if doomed:
            self._save()
        self._prune_environments()
        # First: deleting a tree's links moves its blobs' ctimes, and a blob touched within
        # --blob-grace is spared (it may be an upload in flight), so the pruned trees'
        # blobs would wait for the next full scan.
        self._collect_blobs(pruned)
        for work in deletions:
            self._sweep(work, "could not delete a pruned release")

    def _keep_template(self, update_id: str) -> None:
        """After a switch on PUBLIC, off the request's path: a copy of ``update_id``'s tree
        for the next stage to start from (:meth:`ReleaseStore.prepare_template`). PUBLIC
        only: pushes follow each other there, and a developer waits for each; OMEGA and
        the mainframes stage a release now and then, where a copy kept between would be
        work done for nothing (and, for a fleet sharing a host, during its rollout)."""
        if self.config.role is not AgentRole.PUBLIC:
            return
        m = self.releases.manifest(update_id)
        sealed = self.jail.isolated
        self._sweep(
            lambda: self.releases.prepare_template(m, sealed=sealed),
            f"no template of {update_id} for the next stage (it is made anew)",
            level=logging.WARNING,
        )

    def _sweep(self, work: Callable[[], None], failed: str, level: int = logging.ERROR) -> None:
        """Run ``work`` after this request, off its path; an error is logged after
        ``failed`` (an ``OSError`` at ``level``, anything else with its traceback)."""

        def run() -> None:
            try:
                work()
            except OSError as e:  # what is left in tmp/ goes at the next start
                log.log(level, "%s: %s", failed, e)
            except Exception:  # not lost in the executor: said, with where it came from
                log.exception("%s", failed)

        try:
            self._sweeper.submit(run)
        except RuntimeError:  # shut down: do it now
            run()

    def _prune_environments(self) -> None:
        """Remove the Python environments no kept release uses (a rollback to a kept one
        finds its environment built)."""
        kept = set(self.releases.ids())
        for release in [r for r in self.supervisor.venvs if r not in kept]:
            del self.supervisor.venvs[release]
        path_env = self.supervisor.app_env.get("PATH") or os.environ.get("PATH")
        used: set[Path] = set()
        for release in kept:
            try:
                spec = EnvSpec.from_app(self.releases.manifest(release).app)
                if spec is not None:
                    used.add(self.environments.path(spec, spec.base_python(path_env)))
            except (BundleError, OSError):
                continue  # unreadable: its environment, if any, is rebuilt when needed
        for name in self.environments.prune(used):
            log.info("removed the Python environment %s: no kept release uses it", name)

    def _previous_in_history(self, current: str) -> str | None:
        """The release active before ``current`` by the activation history, if staged and
        not rolled back here (as a rollback picks ``previous``)."""
        return previous_after_rollback(
            [a.update_id for a in self.state.history],
            current,
            set(self.state.rolled_back),
            set(self.releases.ids()),
        )

    def _uses(self, update_id: str) -> tuple[frozenset[str], frozenset[tuple[str, int]]] | None:
        """The blobs and the mode files ``(digest, mode)`` release ``update_id`` links to,
        remembered per manifest; None if it has no readable manifest (half-removed)."""
        try:
            m = self.releases.manifest(update_id)
        except AgentError:
            return None
        got = self._used_by.get(update_id)
        if got is None or got[0] is not m:
            files = [(e.sha256, e.mode & MODE_MASK) for e in m.files if e.kind == "file"]
            modes = frozenset(f for f in files if f[1] != BLOB_MODE)
            got = self._used_by[update_id] = (m, frozenset(sha for sha, _ in files), modes)
        return got[1], got[2]

    def _doomed_uses(self, update_id: str) -> tuple[frozenset[str], frozenset[Any]] | None:
        """:meth:`_uses` of a release about to be pruned; None, and a scan of the whole store
        at the next collection, if its manifest cannot be read (damaged, or refused by a
        stricter version): it is pruned all the same, as it was before."""
        try:
            return self._uses(update_id)
        except (BundleError, OSError) as e:
            log.warning("pruning %s, whose manifest cannot be read: %s", update_id, e)
            self._full_collect_at = 0.0
            return None

    def _collect_blobs(self, pruned: Collection[tuple[frozenset[str], frozenset[Any]]]) -> None:
        """Delete the blobs no staged release uses (they are kept only for releases kept;
        OMEGA never prunes a release its fleet may still be sent, :attr:`pinned`): those the
        ``pruned`` releases used, and once per ``--blob-grace`` the whole store's (a blob
        uploaded for a release never staged is in no release; a scan of 2,000 blobs took
        ~10 ms of each activation, issue 20). A blob store shared by OMEGA replicas
        (``--blob-dir``) is not collected: one replica does not know the others' releases."""
        if self.config.blob_dir is not None:
            return
        ids = self.releases.ids()
        kept = []
        for update_id in ids:
            try:
                uses = self._uses(update_id)
            except (BundleError, OSError) as e:  # what it uses is unknown: nothing may go
                log.warning("no unused blobs collected: %s's manifest cannot be read (%s)",
                            update_id, e)  # fmt: skip
                return
            if uses is not None:
                kept.append(uses)
        present = set(ids)  # a release removed another way (a failed or damaged one): forgotten
        self._used_by = {i: u for i, u in self._used_by.items() if i in present}
        kept += self._staging.values()  # a stage in flight was told its blobs are there
        digests: frozenset[str] = frozenset().union(*(d for d, _ in kept))
        modes: frozenset[tuple[str, int]] = frozenset().union(*(m for _, m in kept))
        grace = self.config.blob_grace_s
        try:
            if time.monotonic() >= self._full_collect_at:
                files, freed = self.blobs.collect(digests, modes, grace)
                self._full_collect_at = time.monotonic() + grace
            else:
                unused = {(sha, BLOB_MODE) for d, _ in pruned for sha in d - digests}
                unused.update(f for _, m in pruned for f in m - modes)
                files, freed = self.blobs.collect_some(unused, grace)
        except OSError as e:
            log.error("could not collect unused blobs: %s", e)
            return
        if files:
            log.info("freed %d unused blob file(s), %d bytes", files, freed)
            self.metrics.blob_bytes_freed.inc(freed)

    # -- state ---------------------------------------------------------------------------------

    def _untrack(self, app: AppProcess) -> None:
        self.state.apps = [r for r in self.state.apps if r.pid != app.pid]
        self._save()

    def _save(self) -> None:
        self.state.save(self.layout.state_file)
