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
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import uvicorn

from ashat.agent.config import AgentConfig
from ashat.agent.core import Agent
from ashat.agent.server import RoleExtension, build_app, build_host_app
from ashat.errors import AshatError
from ashat.http.serve import Server, bind_listen, check_tls, format_host, uvicorn_config

BACKGROUND_STOP_S = 1.0  # for the background task to end once cancelled

log = logging.getLogger("ashat.agent")

Background = Callable[[], Coroutine[Any, Any, None]]  # runs until cancelled


class _Server(Server):
    """An agent's server: the background tasks beside it, SIGHUP re-reading the apps'
    environments, and the agents told to give up their waits first thing on a signal.
    A host agent (``--apps``) has one agent, and maybe one background task, per app."""

    def __init__(
        self,
        config: uvicorn.Config,
        agents: list[Agent],
        on_ready: Callable[[], None],
        background: list[Background] | None = None,
    ) -> None:
        super().__init__(config, on_ready)
        self._agents = agents
        self._background = background or []
        self._tasks: list[asyncio.Task[None]] = []

    async def started_serving(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._tasks = [
            asyncio.create_task(run(), name="ashat-background") for run in self._background
        ]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            done, _ = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_S)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background task failed: %r", task.exception())
        await super().shutdown(sockets=sockets)

    def _on_sighup(self) -> None:
        """``kill -HUP`` (``ashat agent reload``): each app's environment read again, and
        the app restarted with it once healthy (:meth:`Agent.reload_env`), off the event
        loop."""
        for agent in self._agents:
            asyncio.get_running_loop().run_in_executor(None, self._reload, agent)

    @staticmethod
    def _reload(agent: Agent) -> None:
        named = f" (app {agent.config.app_name})" if agent.config.app_name else ""
        try:
            answer = agent.reload_env()
        except AshatError as e:
            from ashat.agent.checks.base import scrub

            log.error(
                "SIGHUP%s: --app-env not applied: %s", named, scrub(e.message, agent.secrets())
            )
            return
        if not answer.get("changed"):
            log.info("SIGHUP%s: --app-env unchanged", named)

    def stopping(self) -> None:
        for agent in self._agents:
            agent.begin_shutdown()


Extension = Callable[[Agent], RoleExtension]


def run_agent(
    config: AgentConfig,
    announce: Callable[[str], None],
    *,
    extension: Extension | None = None,
    background: Callable[[Agent], Background] | None = None,
    apps: Mapping[str, AgentConfig] | None = None,
) -> None:
    """Serve until a signal; ``announce`` gets the ready line once the socket accepts.
    ``extension`` adds a role's routes (:func:`build_app`); ``background(agent)`` runs
    beside the server (a mainframe's pull loop). With ``apps``, a host agent: ``config``
    gives the listening address and TLS, and each app is a whole agent over its own
    config, mounted at ``/apps/NAME`` (:func:`build_host_app`), with the same extension
    and background. Use :func:`ashat.roles.run_role`.

    Raises :class:`InvalidInput` (TLS files) or :class:`AshatError` (busy port, unusable
    or already used data directory) before serving.
    """
    check_tls(config.tls_cert, config.tls_key)
    # A SIGHUP (ashat agent reload) before the server's handler is in place must not kill
    # an agent still starting its app: ignored until then.
    with contextlib.suppress(ValueError):  # not the main thread (an in-process test)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = bind_listen(config.host, config.port)  # before the data directory is touched
    built: list[Agent] = []
    try:
        if apps is None:
            app = build_app(config, extension)
            built.append(app.state.agent)
        else:
            mounted = {}
            for name, app_config in apps.items():
                mounted[name] = build_app(app_config, extension)
                built.append(mounted[name].state.agent)
            app = build_host_app(mounted)
    except BaseException as e:
        sock.close()
        for agent in built:  # the apps opened before one failed
            agent.shutdown()
        if isinstance(e, OSError):
            raise AshatError(f"cannot use data directory {config.data}: {e.strerror or e}") from e
        raise
    tasks = [background(agent) for agent in built] if background is not None else []
    uv_config = uvicorn_config(app, config.tls_cert, config.tls_key)
    port = sock.getsockname()[1]
    url = f"{config.scheme}://{format_host(config.host)}:{port}"
    line = f"ashat agent ({config.role.value}) serving {url} data={config.data}"
    if apps is not None:
        line += f" apps={','.join(apps)}"
    server = _Server(uv_config, built, lambda: announce(line), tasks)
    try:
        server.serve_on(sock)
    finally:
        for agent in built:
            agent.shutdown()
