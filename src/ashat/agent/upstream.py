"""A stable address in front of the app, and a switch that drops no request (issue 17).

The app gets a new port at every activation; clients need one that does not move. With
``--upstream-file FILE --upstream-reload CMD``, the agent keeps ``FILE`` naming the port of
the app that should take traffic, for a proxy to include (``contrib/nginx/app.conf``)::

    server 127.0.0.1:43817;

and runs ``CMD`` (e.g. ``nginx -s reload``) after each change. Where no proxy runs,
``--app-listen HOST:PORT`` makes the agent itself the stable address (:class:`AppProxy`).
An activation (or a rollback, an ``--app-env`` reload, a restart after a crash) then
goes: the new app starts beside the old one and becomes healthy; the file names it and the
proxy reloads (nginx lets its old workers finish the requests in flight), or new
connections go to it; the agent waits ``--upstream-drain`` seconds; only then is the old
app stopped. If the proxy cannot be reloaded, the activation
fails with its output and the old app keeps serving.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashat.agent.errors import ActivationFailed

RELOAD_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class Upstream:
    file: Path
    reload: tuple[str, ...]  # argv, run without a shell

    @classmethod
    def parse(cls, file: Path, reload: str) -> Upstream:
        argv = tuple(shlex.split(reload))
        if not argv:
            raise ValueError("--upstream-reload must be a command, e.g. 'nginx -s reload'")
        return cls(file, argv)

    def publish(self, port: int) -> bool:
        """Point the proxy at ``port``: the file replaced atomically, then the reload;
        whether traffic moved (the caller lets the old app drain). Raises
        :class:`ActivationFailed` (the file is put back as it was)."""
        text = f"# written by ashat agent: the app that takes traffic\nserver 127.0.0.1:{port};\n"
        before = self.file.read_text() if self.file.exists() else None
        if before == text:
            return False
        self._write(text)
        try:
            done = subprocess.run(
                self.reload, capture_output=True, text=True, timeout=RELOAD_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            self._restore(before)
            raise ActivationFailed(
                f"could not move traffic to the new app: {shlex.join(self.reload)}: {e}",
                log_tail="",
            ) from e
        if done.returncode != 0:
            self._restore(before)
            output = (done.stdout + done.stderr)[-MAX_OUTPUT_CHARS:]
            raise ActivationFailed(
                f"could not move traffic to the new app: {shlex.join(self.reload)} exited "
                f"with status {done.returncode}",
                log_tail=output,
            )
        return True

    def _write(self, text: str) -> None:
        tmp = self.file.with_name(f".{self.file.name}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover, or a link someone planted: never followed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.file)

    def _restore(self, before: str | None) -> None:
        if before is None:
            self.file.unlink(missing_ok=True)
        else:
            self._write(before)


class AppProxy:
    """``--app-listen HOST:PORT``: the agent's own stable address, where no proxy runs.

    A TCP proxy in the agent's event loop: each new connection is forwarded to the app
    that takes traffic at that moment (:meth:`point_at`); a connection keeps the app it
    started with until it closes. A switch points new connections at the new app, lets
    those to the old one run for the drain, then the old app stops (a kept-alive
    connection still open then is closed, and its client connects again).
    """

    def __init__(self, host: str, port: int) -> None:
        from ashat.http.serve import bind_listen

        self.sock = bind_listen(host, port)  # now: a busy port is an error before serving
        self.target: int | None = None
        self._server: Any = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def point_at(self, port: int) -> bool:
        """New connections go to ``port`` from now on; whether they went elsewhere before
        (the caller lets the old app drain)."""
        old, self.target = self.target, port
        return old is not None and old != port

    async def start(self) -> None:
        import asyncio

        self._server = await asyncio.start_server(self._handle, sock=self.sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        else:
            self.sock.close()

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        target = self.target
        try:
            if target is None:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
            except OSError:
                return
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()


async def _pipe(reader: Any, writer: Any) -> None:
    """Copy until the reading side ends, then half-close the writing side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
