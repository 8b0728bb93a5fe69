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
import ssl
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

from ashat.agent.config import AgentConfig, format_host
from ashat.agent.core import Agent
from ashat.agent.server import RoleExtension, build_app
from ashat.errors import AshatError, InvalidInput

GRACEFUL_SHUTDOWN_S = 15  # for requests in flight after a signal
# An idle kept-alive connection is closed by the client first: httpx forgets one after 5 s,
# the server after this. With both at uvicorn's and httpx's 5 s, a client reusing a
# connection as the server closed it met "Server disconnected without sending a response"
# (hundreds of retries in a 1,000-mainframe rollout). 65 s also outlasts the 60 s of
# common load balancers, which must close first too.
KEEP_ALIVE_S = 65
BACKGROUND_STOP_S = 1.0  # for the background task to end once cancelled

log = logging.getLogger("ashat.agent")

Background = Callable[[], Coroutine[Any, Any, None]]  # runs until cancelled


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        agent: Agent,
        on_ready: Callable[[], None],
        background: Background | None = None,
    ) -> None:
        super().__init__(config)
        self._agent = agent
        self._on_ready = on_ready
        self._background = background
        self._task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            if self._background is not None:
                self._task = asyncio.create_task(self._background(), name="ashat-background")
            self._on_ready()

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
            from ashat.agent.checks_base import scrub

            log.error("SIGHUP: --app-env not applied: %s", scrub(e.message, self._agent.secrets()))
            return
        if not answer.get("changed"):
            log.info("SIGHUP: --app-env unchanged")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: that one re-raises the signal after shutdown, so a clean stop would
        # end with "killed by SIGTERM" instead of exit status 0.
        self._agent.begin_shutdown()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def bind_listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); raises :class:`AshatError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        # Keep proto (IPPROTO_TCP): asyncio turns Nagle off on accepted sockets only when it
        # is set, and without that every answer on a kept-alive connection waits ~40 ms for
        # the peer's delayed ACK.
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise AshatError(f"cannot listen on {format_host(host)}:{port}: {e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise AshatError(f"cannot listen on {format_host(host)}:{port}: {e.strerror or e}") from e
    return sock


def _check_tls(config: AgentConfig) -> None:
    """Load the certificate and key once now, so a bad pair is an error before anything."""
    if config.tls_cert is None or config.tls_key is None:
        return
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise InvalidInput(f"cannot load --tls-cert/--tls-key: {e}") from e


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
    _check_tls(config)
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
    uv_config = uvicorn.Config(
        app,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    port = sock.getsockname()[1]
    url = f"{config.scheme}://{format_host(config.host)}:{port}"
    line = f"ashat agent ({config.role.value}) serving {url} data={config.data}"
    server = _Server(uv_config, agent, lambda: announce(line), task)
    try:
        server.run(sockets=[sock])
    finally:
        agent.shutdown()
        sock.close()
