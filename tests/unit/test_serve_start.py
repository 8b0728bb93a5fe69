"""What a server does once it serves (ashat.http.serve), seen in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc

    from ashat.http.serve import Server, bind_listen, uvicorn_config

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    made_at_start = [object() for _ in range(10_000)]  # as an app's configuration is

    def ready():
        print(gc.get_freeze_count(), flush=True)
        server.should_exit = True

    server = Server(uvicorn_config(app, None, None), ready)
    server.serve_on(bind_listen("127.0.0.1", 0))
    """
)


def test_what_start_up_made_is_out_of_the_collectors_sight_once_the_server_serves() -> None:
    """A stage of 2,000 files makes ~20 collections; each walked the ~42,000 objects the
    agent's start-up made (15 ms of a 70 ms stage, issue 20). Frozen once it serves
    (``gc.freeze``), they are not walked again."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert int(out.split()[0]) > 10_000, out
