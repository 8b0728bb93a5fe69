"""``ashat demo``: the whole workflow on loopback, with real processes, in a temporary directory.

It starts the agents, copies ``examples/hello-service`` into a fresh project, and runs the
``deploy`` verbs exactly as an operator would type them (each printed with ``$``), then stops
everything it started. Nothing here is simulated: the bytes, checks and processes are real.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from ashat.errors import InvalidInput, OperationFailed


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_app_dir() -> Path:
    """``examples/hello-service`` of the source checkout this package runs from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "hello-service"
        if (candidate / "ashat.toml").is_file():
            return candidate
    raise InvalidInput("examples/hello-service not found next to this installation; pass --app DIR")


@dataclass
class AgentProcess:
    role: str
    url: str
    data: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 20) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise OperationFailed(f"agent at {url} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise OperationFailed(f"agent at {url} did not answer /v1/health within {timeout_s:.0f}s")


def start_agent(
    role: str, base: Path, token_file: Path, trust: Sequence[Path], extra: Sequence[str] = ()
) -> AgentProcess:
    port = free_port()
    data = base / role
    data.mkdir(parents=True, exist_ok=True)
    log = base / f"{role}.agent.log"
    args = [
        sys.executable, "-m", "ashat.cli.ashat", "agent", "--role", role,
        "--data", str(data), "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
    ]  # fmt: skip
    for t in trust:
        args += ["--trust", str(t)]
    args += list(extra)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    agent = AgentProcess(role, f"http://127.0.0.1:{port}", data, proc, log)
    try:
        wait_healthy(agent.url, proc, log)
    except BaseException:
        agent.stop()
        raise
    return agent


@dataclass
class Demo:
    base: Path
    project: Path
    env: dict[str, str]
    agents: list[AgentProcess] = field(default_factory=list)

    def deploy(self, *args: str, expect: int = 0) -> str:
        """Run one ``deploy`` verb as a real process, echo it and its output."""
        click.echo(click.style(f"\n$ deploy {' '.join(_quote(a) for a in args)}", bold=True))
        res = subprocess.run(
            [sys.executable, "-m", "ashat.cli.deploy", *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = (res.stdout + res.stderr).rstrip()
        if out:
            click.echo(out)
        if res.returncode != expect:
            raise OperationFailed(
                f"demo step 'deploy {' '.join(args)}' exited {res.returncode}, expected {expect}"
            )
        return res.stdout


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or not arg) else arg


@contextlib.contextmanager
def demo_environment(app_dir: Path, keep: bool) -> Iterator[Demo]:
    base = Path(tempfile.mkdtemp(prefix="ashat-demo-"))
    demo: Demo | None = None
    try:
        project = base / "alpha" / "hello-service"
        shutil.copytree(
            app_dir, project, ignore=shutil.ignore_patterns(".ashat", "data", "__pycache__")
        )
        keys = base / "keys"
        from ashat.bundle import generate_keypair

        _, alpha_pub = generate_keypair("alpha", keys)
        token = base / "public.token"
        token.write_text(os.urandom(24).hex() + "\n")
        token.chmod(0o600)
        env = {
            **os.environ,
            "ASHAT_USER": "alice",
            "ASHAT_SIGNING_KEY": str(keys / "alpha.key"),
            "NO_COLOR": "1",
        }
        demo = Demo(base, project, env)
        click.echo(f"ashat demo in {base}")
        demo.agents.append(start_agent("public", base / "servers", token, [alpha_pub]))
        yield demo
    finally:
        if demo:
            for agent in reversed(demo.agents):
                agent.stop()
        if keep:
            click.echo(f"\n(kept {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)


def run_demo(app_dir: Path | None = None, keep: bool = False) -> None:
    app_dir = (app_dir or default_app_dir()).resolve()
    with demo_environment(app_dir, keep) as demo:
        public = demo.agents[0]
        token = demo.base / "public.token"
        demo.deploy("configure", "public", public.url, "PublicStaging", "--token-file", str(token))
        demo.deploy("servers", "--check")
        demo.deploy("push", "hello-001", "First release of hello-service")
        demo.deploy("verify", "hello-001")
        version = demo.project / "VERSION"
        version.write_text("1.0.1\n")
        demo.deploy("push", "hello-002", "Bump to 1.0.1 (only changed bytes move)")
        demo.deploy("rollback", "hello-002", "--reason", "demo: back to hello-001")
        demo.deploy("status")
        demo.deploy("log", "hello-002")
        demo.deploy("audit", "verify")
        click.echo("\nDemo finished: every step above ran against real processes on loopback.")
