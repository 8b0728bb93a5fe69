"""The processes ``bench/fleet.py`` starts: many mainframes, many plain clients, a static server.

``python bench/fleet_worker.py mainframes SPEC.json`` runs the mainframes of SPEC, each the
real client code — an :class:`~ashat.agent.core.Agent` over its own data directory and a
:class:`~ashat.fleet.mainframe.Mainframe` pull loop with its own license and HTTP client —
on one event loop, without the agent's uvicorn server (a mainframe's serves only
``/v1/health`` and ``/metrics``). The one change is :class:`ProbedMainframe`: httpx event
hooks on the mainframe's client note when it sends and receives what (:class:`Probe`).
It prints ``{"ready": n}``, then answers each ``summary SINCE UPDATE_ID`` line on stdin with
what each mainframe saw since then, and stops at ``quit`` or end of input.

``… peer SPEC.json``: on ``go``, each client of SPEC downloads every file from the static
server (httpx, 4 files at a time, written to disk) and the process says when each ended.
``… serve DIR``: uvicorn + Starlette ``StaticFiles`` over DIR on a free loopback port.

Times are ``time.monotonic()``: one clock for every process of the machine on Linux.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import secrets
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

STREAMS = 4  # files a plain client fetches at once: as ashat.fleet.download.STREAMS
DOWNLOADED = "ashat_mainframe_bytes_downloaded_total"  # a mainframe's /metrics
# a blob, or a run of them in a pack: from OMEGA, or from the mirror it redirects to
# (bench/fleet.py's runs at /ashat)
BYTES_ROUTES = ("/v1/blobs/", "/v1/packs/", "/ashat/sha256/", "/ashat/packs/")


@dataclass
class Probe:
    """What one mainframe's HTTP client saw, each with its ``time.monotonic()``."""

    blob_requests: list[float] = field(default_factory=list)
    blob_answers: list[tuple[float, int, int]] = field(default_factory=list)  # t, status, bytes
    directives: list[tuple[float, int]] = field(default_factory=list)  # t, bytes of the answer
    acks: list[tuple[float, str, str]] = field(default_factory=list)  # t, update id, status

    async def on_request(self, request: httpx.Request) -> None:
        if request.url.path.startswith(BYTES_ROUTES):
            self.blob_requests.append(time.monotonic())

    async def on_response(self, response: httpx.Response) -> None:
        t, path, status = time.monotonic(), response.request.url.path, response.status_code
        size = int(response.headers.get("content-length") or 0)
        if path.startswith(BYTES_ROUTES):
            self.blob_answers.append((t, status, size))
        elif path == "/v1/fleet/poll" and status == 200:
            body = await response.aread()  # small; the mainframe then reads it from here
            if b'"manifest' in body:  # "manifest" or "manifest_delta", not "no directive"
                self.directives.append((t, len(body)))
        elif path == "/v1/fleet/report" and status < 300:
            report = json.loads(response.request.content)
            self.acks.append((t, report["update_id"], report["status"]))

    def summary(self, since: float, update_id: str) -> dict[str, Any]:
        answers = [(t, s, n) for t, s, n in self.blob_answers if t >= since]
        requests = [t for t in self.blob_requests if t >= since]
        directives = [(t, n) for t, n in self.directives if t >= since]
        acks = [(t, s) for t, u, s in self.acks if t >= since and u == update_id]
        return {
            "first_request": min(requests, default=None),
            "first_answer": min((t for t, _, _ in answers), default=None),
            "blob_gets": len(answers),
            "blob_bytes": sum(n for _, s, n in answers if s in (200, 206)),
            "directive_at": directives[0][0] if directives else None,
            "directive_bytes": sum(n for _, n in directives),
            "acked_at": acks[0][0] if acks else None,
            "status": acks[0][1] if acks else None,
        }


def _probed_mainframe_class() -> type:
    from ashat.fleet.mainframe import Mainframe

    class ProbedMainframe(Mainframe):
        """The real pull loop; only its HTTP client gets event hooks (see :class:`Probe`)."""

        probe: Probe

        def _client(self, base_url: str | None = None) -> httpx.AsyncClient:
            client = super()._client(base_url)
            client.event_hooks = {
                "request": [self.probe.on_request],
                "response": [self.probe.on_response],
            }
            return client

    return ProbedMainframe


def _commands() -> asyncio.Queue[str]:
    """Lines from stdin, on the running loop (EOF arrives as "quit")."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "quit")

    threading.Thread(target=read, daemon=True).start()
    return lines


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) this process, or process ``pid``, has used."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def mainframe_worker(spec: dict[str, Any]) -> None:
    """Run ``spec["mainframes"]`` until told to quit; answer ``summary SINCE UPDATE``."""
    from ashat.agent.config import AgentConfig, AgentRole, MainframeConfig
    from ashat.agent.core import Agent
    from ashat.bundle.keys import load_public_key
    from ashat.fleet.license import read_license_file

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(spec["threads"]))
    release_key = load_public_key(Path(spec["trust"]))
    omega_key = load_public_key(Path(spec["trust_omega"]))
    probed = _probed_mainframe_class()
    agents: dict[str, Agent] = {}
    probes: dict[str, Probe] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        omegas = spec.get("omegas") or [spec["omega"]]  # replicas: mainframes take turns
        for k, home in enumerate(map(Path, spec["mainframes"])):
            token, mainframe_id, license_id = read_license_file(home / "license")
            mf_config = MainframeConfig(
                omega_url=omegas[k % len(omegas)],
                license=token,
                mainframe_id=mainframe_id,
                license_id=license_id,
                trusted_omega={omega_key.keyid: omega_key},
                poll_wait_s=spec["poll_wait"],
            )
            config = AgentConfig(
                role=AgentRole.MAINFRAME,
                data=home / "data",
                host="127.0.0.1",
                port=0,
                token=secrets.token_urlsafe(32),
                trusted={release_key.keyid: release_key},
                mainframe=mf_config,
                app_user=os.environ.get("ASHAT_APP_USER")
                or ("nobody" if os.geteuid() == 0 else None),
            )
            agent = Agent(config)
            agent.open()
            agents[mainframe_id] = agent
            mf = probed(agent, mf_config)
            mf.probe = probes[mainframe_id] = Probe()
            tasks.append(asyncio.create_task(mf.run(), name=mainframe_id))
        _say({"ready": len(tasks)})
        commands = _commands()
        while (command := await commands.get()) != "quit":
            _, since, update_id = command.split()
            seen = {mid: p.summary(float(since), update_id) for mid, p in probes.items()}
            for mid, agent in agents.items():  # the mainframe's own count, if it keeps one
                seen[mid]["downloaded"] = agent.metrics.registry.get_sample_value(DOWNLOADED)
            _say({"mainframes": seen, "cpu_s": cpu_s()})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for agent in agents.values():
            agent.shutdown()


async def peer_worker(spec: dict[str, Any]) -> None:
    """On ``go``, each client downloads every file of ``spec["files"]``; say when each ended."""
    commands = _commands()
    _say({"ready": len(spec["clients"])})
    if await commands.get() != "go":
        return

    async def one(dest: Path) -> tuple[float, int]:
        got = 0
        gate = asyncio.Semaphore(STREAMS)
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=spec["url"], limits=limits, timeout=60) as http:

            async def fetch(name: str) -> None:
                nonlocal got
                async with gate, http.stream("GET", f"/{name}") as response:
                    response.raise_for_status()
                    fd = os.open(dest / name.replace("/", "_"), os.O_WRONLY | os.O_CREAT, 0o600)
                    try:
                        async for chunk in response.aiter_bytes():
                            view = memoryview(chunk)
                            while view:
                                view = view[os.write(fd, view) :]
                            got += len(chunk)
                    finally:
                        os.close(fd)

            async with asyncio.TaskGroup() as group:
                for name in spec["files"]:
                    group.create_task(fetch(name))
        return time.monotonic(), got

    dests = [Path(d) for d in spec["clients"]]
    for d in dests:
        d.mkdir(parents=True, exist_ok=True)
    work = asyncio.ensure_future(asyncio.gather(*(one(d) for d in dests)))
    quit_ = asyncio.ensure_future(commands.get())
    await asyncio.wait({work, quit_}, return_when=asyncio.FIRST_COMPLETED)
    if work.done():
        _say({"done": work.result(), "cpu_s": cpu_s()})
        await quit_
    else:
        work.cancel()


def serve_static(directory: str) -> None:
    """uvicorn + Starlette StaticFiles on a free loopback port; print the URL, serve."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    app = Starlette(routes=[Mount("/", StaticFiles(directory=directory))])
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets
    # whose proto says TCP; without it a kept-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # as the agent's
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    _say({"url": f"http://127.0.0.1:{sock.getsockname()[1]}"})
    uvicorn.Server(config).run(sockets=[sock])


def main(kind: str, arg: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us, in order
    if kind == "serve":
        serve_static(arg)
        return
    spec = json.loads(Path(arg).read_text())
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=spec.get("log", os.devnull),
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as ``ashat agent`` does
    asyncio.run(mainframe_worker(spec) if kind == "mainframes" else peer_worker(spec))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
