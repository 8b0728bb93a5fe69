"""Running the agent's app on uvicorn until SIGTERM or SIGINT, then stopping cleanly.

The listening socket is bound before the server starts, so a busy port is a clear error
and port 0 works (the ready line names the port the OS chose). A signal first tells the
agent to give up any wait for an app's health, then lets uvicorn finish the requests in
flight; the lifespan's end stops the supervised app, and :func:`run_agent` makes sure of it
even after a forced exit (a second Ctrl-C).

A background task (a mainframe's pull loop, given by :mod:`ashat.roles`) is started once
the server accepts and cancelled first thing at shutdown, so a long poll in flight does
not hold the agent up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

from ashat.agent.config import AgentConfig
from ashat.agent.core import Agent
from ashat.agent.server import RoleExtension, build_app
from ashat.errors import AshatError
from ashat.http.serve import Server, bind_listen, check_tls, format_host, uvicorn_config

BACKGROUND_STOP_S = 1.0  # for the background task to end once cancelled

log = logging.getLogger("ashat.agent")

Background = Callable[[], Coroutine[Any, Any, None]]  # runs until cancelled


class _Server(Server):
    """An agent's server: the background task beside it, SIGHUP re-reading the app's
    environment, and the agent told to give up its waits first thing on a signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        agent: Agent,
        on_ready: Callable[[], None],
        background: Background | None = None,
    ) -> None:
        super().__init__(config, on_ready)
        self._agent = agent
        self._background = background
        self._task: asyncio.Task[None] | None = None

    async def started_serving(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self._background is not None:
            self._task = asyncio.create_task(self._background(), name="ashat-background")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=BACKGROUND_STOP_S)
            if task in done and not task.cancelled() and task.exception() is not None:
                log.error("background task failed: %r", task.exception())
        await super().shutdown(sockets=sockets)

    def _on_sighup(self) -> None:
        """``kill -HUP`` (``ashat agent reload``): the app's environment read again, and the
        app restarted with it once healthy (:meth:`Agent.reload_env`), off the event loop."""
        asyncio.get_running_loop().run_in_executor(None, self._reload)

    def _reload(self) -> None:
        try:
            answer = self._agent.reload_env()
        except AshatError as e:
            from ashat.agent.checks.base import scrub

            log.error("SIGHUP: --app-env not applied: %s", scrub(e.message, self._agent.secrets()))
            return
        if not answer.get("changed"):
            log.info("SIGHUP: --app-env unchanged")

    def stopping(self) -> None:
        self._agent.begin_shutdown()


def run_agent(
    config: AgentConfig,
    announce: Callable[[str], None],
    *,
    extension: Callable[[Agent], RoleExtension] | None = None,
    background: Callable[[Agent], Background] | None = None,
) -> None:
    """Serve until a signal; ``announce`` gets the ready line once the socket accepts.
    ``extension`` adds a role's routes (:func:`build_app`); ``background(agent)`` runs
    beside the server (a mainframe's pull loop). Use :func:`ashat.roles.run_role`.

    Raises :class:`InvalidInput` (TLS files) or :class:`AshatError` (busy port, unusable
    or already used data directory) before serving.
    """
    check_tls(config.tls_cert, config.tls_key)
    # A SIGHUP (ashat agent reload) before the server's handler is in place must not kill
    # an agent still starting its app: ignored until then.
    with contextlib.suppress(ValueError):  # not the main thread (an in-process test)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = bind_listen(config.host, config.port)  # before the data directory is touched
    try:
        app = build_app(config, extension)
    except OSError as e:
        sock.close()
        raise AshatError(f"cannot use data directory {config.data}: {e.strerror or e}") from e
    except BaseException:
        sock.close()
        raise
    agent: Agent = app.state.agent
    task = background(agent) if background is not None else None
    uv_config = uvicorn_config(app, config.tls_cert, config.tls_key)
    port = sock.getsockname()[1]
    url = f"{config.scheme}://{format_host(config.host)}:{port}"
    line = f"ashat agent ({config.role.value}) serving {url} data={config.data}"
    server = _Server(uv_config, agent, lambda: announce(line), task)
    try:
        server.serve_on(sock)
    finally:
        agent.shutdown()
