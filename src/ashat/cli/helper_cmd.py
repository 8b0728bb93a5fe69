"""``deploy helper start|stop|status``: the warm helper that makes ``deploy push`` start fast
(:mod:`ashat.cli.warm` hands commands to it, :mod:`ashat.cli.helper` runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import click

from ashat.cli import warm
from ashat.cli.output import OK, AshatGroup, emit, json_option
from ashat.errors import InvalidInput, OperationFailed

START_TIMEOUT_S = 30.0
DEFAULT_IDLE_MINUTES = 120  # a helper stops after this long without a command


def _log_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".log"


def _ask(op: str, path: str) -> dict[str, Any] | None:
    """:func:`warm.ask`, a socket that cannot be trusted or answered being bad input."""
    try:
        return warm.ask(op, path)
    except (warm.HelperError, OSError) as e:
        raise InvalidInput(f"the warm helper's socket {path}: {e}") from e


def _status(path: str) -> dict[str, Any] | None:
    return _ask("status", path)


# What the helper keeps of the environment it was started from: what an interpreter, its
# imports and its locale read. Each child takes its own client's environment whole.
HELPER_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
HELPER_ENV_PREFIXES = ("PYTHON", "LC_", "XDG_", "SSL_CERT_")


def _helper_env() -> dict[str, str]:
    """The helper's own environment: each child takes its client's, so nothing of a
    command's (``ASHAT_TOKEN``, ``ASHAT_USER``, ``ASHAT_DB``…) nor of the shell it was
    started from (``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``…) is kept in the helper,
    which a push may start and which lives for hours: only :data:`HELPER_ENV`, names
    starting with :data:`HELPER_ENV_PREFIXES`, and its socket's."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in HELPER_ENV or k.startswith(HELPER_ENV_PREFIXES) or k == warm.ENV_SOCKET
    }


@click.group(cls=AshatGroup)
def helper() -> None:
    """A warm process that makes deploy push (and status, history, log) start fast."""


@helper.command()
@click.option(
    "--idle",
    "idle_minutes",
    type=click.IntRange(1, 7 * 24 * 60),
    default=DEFAULT_IDLE_MINUTES,
    show_default=True,
    metavar="MINUTES",
    help="Stop after this many minutes without a command.",
)
@json_option
def start(idle_minutes: int) -> None:
    """Start this user's warm helper (if none runs)."""
    if not warm.SUPPORTED:
        raise InvalidInput("the warm helper needs Linux (SO_PEERCRED); deploy runs without it")
    path = warm.socket_path()
    running = _status(path)
    if running is None:
        try:
            proc = launch(path, idle_minutes)
        except (OSError, warm.HelperError) as e:
            raise InvalidInput(f"cannot start the warm helper: {e}") from e
        running = _wait_up(path, proc)
        already = False
    else:
        already = True

    def human() -> None:
        word = "already runs" if already else "started"
        click.echo(f"{OK} warm helper {word} (pid {running['pid']}) on {path}")
        click.echo(
            f"  deploy {', '.join(sorted(warm.ROUTED))} now start in it; it stops after "
            f"{running['stops_after_idle_s'] / 60:.0f} minutes idle (deploy helper stop ends it)"
        )

    emit({**running, "already": already}, human)


def launch(path: str, idle_minutes: int = DEFAULT_IDLE_MINUTES) -> subprocess.Popen[bytes]:
    """Start a helper listening on ``path`` (its directory made 0700 if missing) and return
    at once: it answers once it has imported what a push needs. Raises ``OSError`` or
    :class:`~ashat.cli.warm.HelperError` (a socket directory that cannot be trusted)."""
    from ashat.cli.helper import prepare_socket_dir

    prepare_socket_dir(path)
    log = _log_path(path)
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        # -P and cwd /: nothing on its import path but the installation's (a module planted
        # in the directory it was started from must not load into it)
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "ashat.cli.helper", "--socket", path,
             "--idle", str(idle_minutes * 60)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=_helper_env(), cwd="/",
            start_new_session=True, close_fds=True,
        )  # fmt: skip


def _wait_up(path: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The status of the helper ``proc`` once it answers on ``path`` (or of another start's,
    if that one won the race). Raises OperationFailed."""
    log = _log_path(path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _status(path)
        if status is not None:
            return status
        if proc.poll() is not None:
            status = _status(path)  # another start won the race: that one runs
            if status is not None:
                return status
            raise OperationFailed(
                f"the warm helper exited at start ({proc.returncode}): {_tail(log)}"
            )
        time.sleep(0.05)
    proc.kill()
    raise OperationFailed(f"the warm helper did not answer within {START_TIMEOUT_S:.0f} s")


def _tail(log: str) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no log)"


@helper.command()
@json_option
def stop() -> None:
    """Stop the warm helper (after the commands it runs have ended)."""
    path = warm.socket_path()
    answer = _ask("stop", path)

    def human() -> None:
        if answer is None:
            click.echo("no warm helper runs")
        else:
            running = answer["commands_running"]
            click.echo(f"{OK} warm helper (pid {answer['pid']}) stops once its {running} "
                       "running commands end")  # fmt: skip

    emit({"running": answer is not None, **(answer or {})}, human)


@helper.command()
@json_option
def status() -> None:
    """Whether the warm helper runs, since when, and how many commands it ran."""
    path = warm.socket_path()
    answer = _status(path)

    def human() -> None:
        if answer is None:
            click.echo(f"no warm helper runs (it would listen on {path}); deploy helper start")
            return
        click.echo(
            f"warm helper pid {answer['pid']} on {path}, since {answer['started_at']}: "
            f"{answer['served']} commands, {answer['commands_running']} running, idle "
            f"{answer['idle_s']:.0f} s (stops after {answer['stops_after_idle_s'] / 60:.0f} min)"
        )

    emit({"running": answer is not None, "socket": path, **(answer or {})}, human)
