"""A stable address in front of the app, and a switch that drops no request (issue 17).

The app gets a new port at every activation; clients need one that does not move. With
``--upstream-file FILE --upstream-reload CMD``, the agent keeps ``FILE`` naming the port of
the app that should take traffic, for a proxy to include (``contrib/nginx/app.conf``)::

    server 127.0.0.1:43817;

and runs ``CMD`` (e.g. ``nginx -s reload``) after each change. An activation (or a
rollback, an ``--app-env`` reload, a restart after a crash) then goes: the new app starts
beside the old one and becomes healthy; the file names it and the proxy reloads (nginx
lets its old workers finish the requests in flight); the agent waits ``--upstream-drain``
seconds; only then is the old app stopped. If the proxy cannot be reloaded, the activation
fails with its output and the old app keeps serving.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ashat.agent.errors import ActivationFailed

RELOAD_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class Upstream:
    file: Path
    reload: tuple[str, ...]  # argv, run without a shell
    drain_s: float = 2.0

    @classmethod
    def parse(cls, file: Path, reload: str, drain_s: float) -> Upstream:
        argv = tuple(shlex.split(reload))
        if not argv:
            raise ValueError("--upstream-reload must be a command, e.g. 'nginx -s reload'")
        return cls(file, argv, drain_s)

    def publish(self, port: int) -> None:
        """Point the proxy at ``port``: the file replaced atomically, then the reload, then
        the drain. Raises :class:`ActivationFailed` (the file is put back as it was)."""
        text = f"# written by ashat agent: the app that takes traffic\nserver 127.0.0.1:{port};\n"
        before = self.file.read_text() if self.file.exists() else None
        if before == text:
            return
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
        time.sleep(self.drain_s)  # requests already sent to the old app finish there

    def _write(self, text: str) -> None:
        tmp = self.file.with_name(f".{self.file.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.file)

    def _restore(self, before: str | None) -> None:
        if before is None:
            self.file.unlink(missing_ok=True)
        else:
            self._write(before)
