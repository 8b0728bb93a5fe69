"""Printing for the CLI: human lines or one JSON document, and errors mapped to exit codes.

This is the one place where an :class:`~ashat.errors.AshatError` becomes a message on
stderr (or a JSON object on stdout with ``--json``) and an exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ashat.errors import AshatError, InternalError, InvalidInput, log_tail_of

_JSON = "ashat.json"  # in the root context's meta: --json was given
_REQUESTED = "ashat.json_requested"  # "--json" is among the arguments, even if parsing failed


def json_mode() -> bool:
    """Whether this invocation prints JSON (``--json``): kept in click's context, so two
    invocations in one process (tests, an embedding) never see each other's."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(_JSON))


def set_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_root().meta[_JSON] = True
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=set_json,
    help="Print one JSON document instead of text.",
)


def color_enabled() -> bool:
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


def style(text: str, **kw: Any) -> str:
    return click.style(text, **kw) if color_enabled() else text


OK = "✅"
BAD = "❌"
WARN = "⚠️"
SKIP = "⏭️"


def emit(data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else call ``human``."""
    if json_mode():
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


LOG_TAIL_SHOWN = 40  # lines of a server's log tail printed under an error (all it sends)


class Verdict(AshatError):
    """A verb that printed its own verdict (failed checks, an unreachable server, a broken
    chain) ends with this: the exit code of what it found, nothing printed again."""

    def __init__(self, found: type[AshatError], what: str) -> None:
        super().__init__(what)
        self.exit_code = found.exit_code
        self.kind = found.kind


def fail(err: AshatError) -> NoReturn:
    if isinstance(err, Verdict):
        sys.exit(err.exit_code)
    if json_mode():
        click.echo(json.dumps(err.to_json(), indent=2, sort_keys=True, default=str))
    else:
        click.echo(style(f"error: {err.message}", fg="red"), err=True)
        tail = log_tail_of(err).rstrip().splitlines()[-LOG_TAIL_SHOWN:]
        if tail:
            click.echo("the server's log of it ends with:", err=True)
            for line in tail:
                click.echo(f"  | {line}", err=True)
    sys.exit(err.exit_code)


class AshatGroup(click.Group):
    """A Click group whose commands turn :class:`AshatError` into a message and exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        requested = parent is None and "--json" in args
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        if requested:
            ctx.meta[_REQUESTED] = True
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        finally:
            if ctx.parent is None:
                flush_notifications()

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AshatError as e:
            fail(e)
        except click.UsageError as e:
            root = ctx.find_root()
            if not (json_mode() or root.meta.get(_REQUESTED)):
                raise  # Click prints the usage text and exits 2
            root.meta[_JSON] = True
            fail(InvalidInput(e.format_message()))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            reader_gone()
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # a bug: still one line (and JSON under --json), exit 1
            import traceback

            traceback.print_exc(file=sys.stderr)
            fail(InternalError(f"internal error: {type(e).__name__}: {e}"))


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports of a writer whose reader left


def reader_gone() -> NoReturn:
    """Standard output's reader went away (``deploy history | head``): end quietly, as a
    process killed by SIGPIPE does, without a traceback about it. Whatever is still
    buffered goes nowhere (the interpreter's own flush at exit would fail again)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


def run_main(command: click.Command, prog_name: str) -> None:
    """Run a console script's command; a reader that left before the last of the output
    was flushed (at exit) ends it as :func:`reader_gone` does."""
    try:
        command(prog_name=prog_name)
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            reader_gone()
        except (OSError, ValueError):
            pass


def flush_notifications() -> None:
    """Before the process exits: wait, at most 3 s, for ``[[notify]]`` deliveries in flight.

    Those still unfinished are recorded as ``notify.failed`` events and named on stderr.
    Free when no verb changed state with notifications configured (the module is not loaded).
    """
    notifications = sys.modules.get("ashat.ops.notifications")
    if notifications is None:
        return
    abandoned = notifications.flush_all()
    if abandoned:
        click.echo(
            f"warning: {abandoned} notification(s) not delivered before exit "
            "(recorded as notify.failed in the audit trail)",
            err=True,
        )
