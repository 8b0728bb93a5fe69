"""Running a release's app: the ``prepare`` hook, the ``run`` process, its health, its stop.

What to run comes from the manifest's ``app`` table (:class:`AppSpec`, checked when the
release is staged); the environment is minimal (:func:`.confine.app_environment`): ``PATH``
and the locale of the agent's, then the ``--app-env`` file, then ``PORT``,
``ASHAT_RELEASE`` and ``ASHAT_SHARED_DIR``. Commands are split with :func:`shlex.split` and
run without a shell, in the release directory, inside the agent's :class:`~.confine.Jail`
(its own user, a bwrap sandbox), in a new session (so a stop reaches the whole process
group), with stdout and stderr appended to ``logs/<id>.log``. Nothing here logs the
environment.

The activation order (start the new process, wait for health, and only then stop the old
one) is the caller's (:mod:`.core`); this module starts, waits, stops, and reports why a
process never became healthy with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashat.agent.confine import Jail, app_environment
from ashat.agent.environments import EnvSpec
from ashat.agent.errors import ActivationFailed
from ashat.agent.layout import Layout
from ashat.agent.processes import (
    environ,
    kill_group,
    pids,
    process_start,
    signal_group,
    wait_group,
)
from ashat.agent.state import AppRecord
from ashat.bundle.errors import ManifestInvalid
from ashat.clock import iso_seconds
from ashat.clock import now as clock_now

DEFAULT_HEALTH_PATH = "/"
DEFAULT_HEALTH_TIMEOUT_S = 30.0
DEFAULT_PREPARE_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 24 * 3600.0
POLL_INTERVAL_S = 0.1  # between health probes
PROBE_TIMEOUT_S = 2.0  # one health request
LOG_TAIL_LINES = 40
MAX_HOOK_CHARS = 4096
HOOKS = ("prepare", "migrate", "rollback_migrate")
LOG_TAIL_BYTES = 64 * 1024  # read at most this much of a log for its tail


def _command(app: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = app.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ManifestInvalid(f"app.{key} must be a command string", field=f"app.{key}")
    try:
        argv = tuple(shlex.split(value))
    except ValueError as e:
        raise ManifestInvalid(
            f"app.{key} cannot be split into words: {e}", field=f"app.{key}"
        ) from e
    return argv or None


def _hook(app: Mapping[str, Any], key: str) -> str | None:
    """A hook (``prepare``, ``migrate``, ``rollback_migrate``): one shell command line, run
    by ``/bin/sh -c`` (``&&``, pipes and ``$VARIABLES`` work)."""
    value = app.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_HOOK_CHARS:
        raise ManifestInvalid(
            f"app.{key} must be a shell command line of at most {MAX_HOOK_CHARS} characters",
            field=f"app.{key}",
        )
    return value


def _seconds(app: Mapping[str, Any], key: str, default: float) -> float:
    value = app.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0 < value <= MAX_TIMEOUT_S:
        raise ManifestInvalid(
            f"app.{key} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]", field=f"app.{key}"
        )
    return float(value)


@dataclass(frozen=True)
class AppSpec:
    """How to prepare and run a release, from its manifest's ``app`` table."""

    run: tuple[str, ...] | None
    prepare: str | None  # hooks: shell command lines (/bin/sh -c)
    migrate: str | None = None
    rollback_migrate: str | None = None
    health_path: str = DEFAULT_HEALTH_PATH
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    prepare_timeout_s: float = DEFAULT_PREPARE_TIMEOUT_S
    environment: EnvSpec | None = None  # its dependencies, shipped as wheels

    @classmethod
    def from_app(cls, app: Mapping[str, Any]) -> AppSpec:
        """Raises :class:`ManifestInvalid` naming the field at fault."""
        health_path = app.get("health_path", DEFAULT_HEALTH_PATH)
        if (
            not isinstance(health_path, str)
            or not health_path.startswith("/")
            or len(health_path) > 2048
            or any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in health_path)
        ):
            raise ManifestInvalid(
                "app.health_path must be a URL path starting with '/'", field="app.health_path"
            )
        return cls(
            run=_command(app, "run"),
            prepare=_hook(app, "prepare"),
            migrate=_hook(app, "migrate"),
            rollback_migrate=_hook(app, "rollback_migrate"),
            health_path=health_path,
            health_timeout_s=_seconds(app, "health_timeout_s", DEFAULT_HEALTH_TIMEOUT_S),
            prepare_timeout_s=_seconds(app, "prepare_timeout_s", DEFAULT_PREPARE_TIMEOUT_S),
            environment=EnvSpec.from_app(app),
        )

    def run_argv(self, port: int) -> list[str]:
        assert self.run is not None
        return [arg.replace("{port}", str(port)) for arg in self.run]


def with_venv(env: dict[str, str], venv: Path | None) -> dict[str, str]:
    """``env`` with the release's Python environment first on ``PATH``, as activated."""
    if venv is None:
        return env
    path = env.get("PATH") or os.defpath
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{path}"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STATUS_LINE_RE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |\r\n)")
MAX_STATUS_LINE = 1024  # bytes read at most for the status line


def status_line(port: int, path: str, timeout_s: float) -> int | str:
    """The status of ``GET path`` on the app's port: the code, or why there is none (in
    words of ours). One deadline for all of it: connecting, sending, the status line."""
    deadline = time.monotonic() + timeout_s
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(request.encode("latin-1"))
            got = b""
            while b"\r\n" not in got and len(got) < MAX_STATUS_LINE:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(MAX_STATUS_LINE - len(got))
                if not chunk:
                    return "the connection closed before a status line"
                got += chunk
    except TimeoutError:
        return f"no status line within {timeout_s:g}s"
    except OSError as e:
        return e.strerror or type(e).__name__
    m = STATUS_LINE_RE.match(got)
    return int(m.group(1)) if m else "an answer that is not HTTP/1.x (not shown)"


@dataclass
class AppProcess:
    release: str
    port: int
    health_path: str
    proc: subprocess.Popen[bytes]
    started: int | None
    started_at: float = field(default_factory=time.monotonic)  # for the restart pauses

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
        """Whether ``GET health_path`` answers 2xx now, and if not, why. Only the status
        line is read, within ``timeout_s`` in all (an app that drips its answer a byte at a
        time holds no one longer), and the reason never quotes what the app sent: it may
        hold a secret of its environment, and the reason goes to logs and to OMEGA."""
        where = f"GET {self.health_path} on port {self.port}"
        status = status_line(self.port, self.health_path, timeout_s)
        if isinstance(status, str):
            return False, f"{where}: {status}"
        if 200 <= status < 300:
            return True, "healthy"
        return False, f"{where} answered {status}"

    def info(self, healthy: bool) -> dict[str, Any]:
        return {
            "port": self.port,
            "pid": self.pid,
            "health_path": self.health_path,
            "healthy": healthy,
        }

    def record(self) -> AppRecord:
        return AppRecord(self.release, self.pid, self.port, self.started)


class Supervisor:
    def __init__(
        self,
        layout: Layout,
        app_env: Mapping[str, str],
        stopping: threading.Event,
        stop_timeout_s: float,
        jail: Jail | None = None,
    ) -> None:
        self.layout = layout
        self.app_env = dict(app_env)
        self.stopping = stopping
        self.stop_timeout_s = stop_timeout_s
        self.jail = jail or Jail("none")
        self.venvs: dict[str, Path] = {}  # release -> its Python environment (environments.py)

    def environment(self, release: str, port: int) -> dict[str, str]:
        env = app_environment(
            self.app_env,
            {
                "PORT": str(port),
                "ASHAT_RELEASE": release,
                "ASHAT_RELEASE_DIR": str(self.layout.release_dir(release)),
                "ASHAT_SHARED_DIR": str(self.layout.shared),
                "HOME": str(self.layout.shared),
            },
        )
        return with_venv(env, self.venvs.get(release))

    def log_offset(self, release: str) -> int:
        """Where the next output of ``release`` will start in its log (for the tail)."""
        try:
            return self.layout.log_file(release).stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, release: str, offset: int) -> str:
        """The last lines written to ``release``'s log since ``offset``."""
        try:
            with open(self.layout.log_file(release), "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(offset, size - LOG_TAIL_BYTES))
                data = f.read()
        except OSError:
            return ""
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _spawn(
        self, release: str, what: str, argv: list[str], port: int
    ) -> subprocess.Popen[bytes]:
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        with open(self.layout.log_file(release), "ab") as log:
            stamp = iso_seconds(clock_now())
            log.write(f"--- ashat {stamp}: {what}: {shlex.join(argv)} (port {port})\n".encode())
            log.flush()
            cwd = self.layout.release_dir(release)
            venv = self.venvs.get(release)
            return self.jail.popen(
                argv, cwd, self.layout.shared, self.environment(release, port),
                (venv,) if venv else (),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _note(self, release: str, text: str) -> None:
        with contextlib.suppress(OSError), open(self.layout.log_file(release), "ab") as log:
            stamp = iso_seconds(clock_now())
            log.write(f"--- ashat {stamp}: {text}\n".encode())

    def prepare(self, release: str, spec: AppSpec, port: int, log_from: int) -> None:
        """Run the ``prepare`` hook to completion. Raises :class:`ActivationFailed`."""
        self.hook(release, "prepare", spec.prepare, spec.prepare_timeout_s, port, log_from)

    def hook(
        self,
        release: str,
        name: str,
        line: str | None,
        timeout_s: float,
        port: int,
        log_from: int,
        then: str = "nothing was switched",
    ) -> None:
        """Run the hook ``name`` (``/bin/sh -c LINE``, in the release's directory, confined
        like the app) to completion. Raises :class:`ActivationFailed` with its log's tail."""
        if line is None:
            return
        argv = ["/bin/sh", "-c", line]
        try:
            proc = self._spawn(release, name, argv, port)
        except OSError as e:
            raise ActivationFailed(
                f"{release}: {name} hook cannot start: {e.strerror}",
                log_tail=self.log_tail(release, log_from),
            ) from e
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(POLL_INTERVAL_S * 2)
            if proc.returncode is not None:
                break
            if self.stopping.is_set() or time.monotonic() >= deadline:
                kill_group(proc.pid, reaper=self.jail.reaps)
                proc.wait()
                why = "the agent is shutting down" if self.stopping.is_set() else "timed out"
                raise ActivationFailed(
                    f"{release}: {name} hook stopped after {timeout_s:g}s: {why}; {then}",
                    log_tail=self.log_tail(release, log_from),
                )
        kill_group(proc.pid, reaper=self.jail.reaps, ended=True)  # what it left running
        if proc.returncode != 0:
            raise ActivationFailed(
                f"{release}: {name} hook {line[:200]!r} failed with exit status "
                f"{proc.returncode}; {then}",
                log_tail=self.log_tail(release, log_from),
            )

    def start(self, release: str, spec: AppSpec, port: int, log_from: int) -> AppProcess:
        """Start the ``run`` command on ``port``. Raises :class:`ActivationFailed`."""
        argv = spec.run_argv(port)
        try:
            proc = self._spawn(release, "run", argv, port)
        except OSError as e:
            raise ActivationFailed(
                f"{release} did not become healthy within {spec.health_timeout_s:g}s: "
                f"cannot start {argv[0]!r}: {e.strerror}",
                log_tail=self.log_tail(release, log_from),
            ) from e
        return AppProcess(release, port, spec.health_path, proc, process_start(proc.pid))

    def wait_healthy(self, app: AppProcess, timeout_s: float, log_from: int) -> None:
        """Wait for a 2xx from the health path; on failure stop the app and raise
        :class:`ActivationFailed` with the tail of its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = app.proc.poll()
            if code is not None:
                reason = f"the app exited with status {code}"
                break
            ok, reason = app.probe()
            if ok:
                return
            if self.stopping.is_set():
                reason = "the agent is shutting down"
                break
            if time.monotonic() >= deadline:
                reason = f"last probe: {reason}"
                break
            self.stopping.wait(POLL_INTERVAL_S)
        self.stop(app)
        raise ActivationFailed(
            f"{app.release} did not become healthy within {timeout_s:g}s: {reason}",
            log_tail=self.log_tail(app.release, log_from),
        )

    def stop(self, app: AppProcess) -> int:
        """SIGTERM the app's process group, SIGKILL it after the stop timeout; exit status.

        The wait is for every process of the group, not only the one started: in the
        sandbox that one is bwrap's, which the SIGTERM ends at once while the app inside,
        signalled too, is still finishing what it does."""
        if app.proc.poll() is None:
            signal_group(app.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                app.proc.wait(self.stop_timeout_s)
            wait_group(app.pid, deadline)
        # what is left: stragglers, or all of it
        kill_group(app.pid, reaper=self.jail.reaps, ended=app.proc.returncode is not None)
        app.proc.wait()
        code = app.proc.returncode
        self._note(app.release, f"app (pid {app.pid}) stopped with status {code}")
        return code

    def reap(self, record: AppRecord) -> bool:
        """Stop a process an earlier run of the agent started and left behind (a crash).

        Only if ``/proc`` shows the same process (pid *and* start time); True if one went.
        """
        if record.started is None or process_start(record.pid) != record.started:
            return False
        signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while process_start(record.pid) == record.started and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_group(record.pid, deadline)  # the app in the sandbox outlives bwrap's process
        kill_group(record.pid, ended=process_start(record.pid) != record.started)
        return True

    def reap_strays(self) -> list[int]:
        """Stop every process still carrying this data directory's ``ASHAT_SHARED_DIR`` in its
        environment — apps and hooks (and their children) an earlier run started — and
        return their pids. Called at start-up, after :meth:`reap`: it finds those a crash
        left before they were recorded (between spawning an app and saving ``state.json``,
        or in the middle of a ``prepare`` hook). Each one's process group is stopped.
        """
        marker = f"ASHAT_SHARED_DIR={self.layout.shared}".encode()
        found = [pid for pid in pids() if pid != os.getpid() and marker in environ(pid)]
        groups = set()
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups.add(os.getpgid(pid))
        groups.discard(os.getpgid(0))  # never our own group (an agent started by an app)
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline and any(process_start(p) is not None for p in found):
            time.sleep(0.05)
        for pgid in groups:
            kill_group(pgid)
        return found
