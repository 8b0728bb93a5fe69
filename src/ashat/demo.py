"""``ashat demo``: the whole workflow on loopback, with real processes, in a temporary directory.

It starts the agents, copies ``examples/hello-service`` into a fresh project, and runs the
``deploy`` verbs exactly as an operator would type them (each printed with ``$``), then stops
everything it started. Nothing here is simulated: the bytes, checks and processes are real.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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

    from ashat.transport import outgoing

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise OperationFailed(f"agent at {url} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError), outgoing.client(timeout_s=1.0) as http:
            if http.get(f"{url}/v1/health").status_code == 200:
                return
        time.sleep(0.1)
    raise OperationFailed(f"agent at {url} did not answer /v1/health within {timeout_s:.0f}s")


def start_agent(
    role: str,
    base: Path,
    token_file: Path | None,
    trust: Sequence[Path],
    extra: Sequence[str] = (),
    name: str | None = None,
    detach: bool = False,
) -> AgentProcess:
    """Start ``ashat agent`` on a free loopback port and wait until it answers."""
    name = name or role
    port = free_port()
    data = base / name
    data.mkdir(parents=True, exist_ok=True)
    log = base / f"{name}.agent.log"
    args = [
        sys.executable, "-m", "ashat.cli.ashat", "agent", "--role", role,
        "--data", str(data), "--listen", f"127.0.0.1:{port}",
    ]  # fmt: skip
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    for t in trust:
        args += ["--trust", str(t)]
    args += list(extra)
    if os.geteuid() == 0 and not os.environ.get("ASHAT_APP_USER"):
        args += ["--app-user", "nobody"]  # as root, the app must run as someone else
    with open(log, "ab") as out:
        # detach: a session of its own, so that --keep leaves it running after we exit
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=detach
        )
    agent = AgentProcess(name, f"http://127.0.0.1:{port}", data, proc, log)
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
        return self.run("deploy", *args, expect=expect)

    def ashat(self, *args: str, expect: int = 0) -> str:
        """Run one ``ashat`` command as a real process, echo it and its output."""
        return self.run("ashat", *args, expect=expect)

    def run(self, command: str, *args: str, expect: int = 0) -> str:
        shown = " ".join(_quote(a.replace(str(self.base), "$DEMO")) for a in args)
        click.echo(click.style(f"\n$ {command} {shown}", bold=True))
        res = subprocess.run(
            [sys.executable, "-m", f"ashat.cli.{command}", *args],
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
                f"demo step '{command} {' '.join(args)}' exited {res.returncode}, expected {expect}"
            )
        return res.stdout


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or not arg) else arg


def _secret_file(path: Path) -> Path:
    path.write_text(os.urandom(24).hex() + "\n")
    path.chmod(0o600)
    return path


MAINFRAMES = ("mf-1", "mf-2", "mf-3")


@contextlib.contextmanager
def demo_environment(app_dir: Path, keep: bool) -> Iterator[Demo]:
    """Keys, licenses, PUBLIC, OMEGA and three mainframes in a temporary directory."""
    from ashat.bundle import generate_keypair, load_private_key
    from ashat.fleet.license import issue

    base = Path(tempfile.mkdtemp(prefix="ashat-demo-"))
    if os.geteuid() == 0:  # the apps run as nobody: let it reach its release (not list)
        base.chmod(0o711)
    demo: Demo | None = None
    ok = False
    try:
        project = base / "alpha" / "hello-service"
        shutil.copytree(
            app_dir, project, ignore=shutil.ignore_patterns(".ashat", "data", "__pycache__")
        )
        keys = base / "keys"
        _, alpha_pub = generate_keypair("alpha", keys)
        omega_key, omega_pub = generate_keypair("omega", keys)
        license_key, license_pub = generate_keypair("license", keys)
        verifier_key, verifier_pub = generate_keypair("verifier", keys)
        generate_keypair("root", keys)  # offline, in real life: it signs root.json only
        generate_keypair("bob", keys)  # bob's own approver key, on bob's machine in real life
        env = {
            **os.environ,
            "ASHAT_USER": "alice",
            "ASHAT_SIGNING_KEY": str(keys / "alpha.key"),
            "NO_COLOR": "1",
        }
        env.pop("ASHAT_DB", None)
        demo = Demo(base, project, env)
        click.echo(f"ashat demo in {base} ($DEMO below)")
        click.echo("The root of trust: alice releases, PUBLIC verifies, bob approves, OMEGA ships")
        demo.ashat(
            "trust", "init", "--root-key", str(keys / "root.key"),
            "--releaser", f"alice={alpha_pub}", "--verifier", str(verifier_pub),
            "--approver", f"bob={keys / 'bob.pub'}", "--approvals", "1",
            "--omega", str(omega_pub), "--license-issuer", str(license_pub),
        )  # fmt: skip
        root_file = project / "trust" / "root.json"
        servers = base / "servers"
        public_token = _secret_file(base / "public.token")
        omega_token = _secret_file(base / "omega.token")
        click.echo("Starting PUBLIC, OMEGA and three Licensed Mainframes on loopback ...")
        demo.agents.append(
            start_agent(
                "public", servers, public_token, [alpha_pub], detach=keep,
                extra=["--verifier-key", str(verifier_key)],
            )
        )  # fmt: skip
        omega = start_agent(
            "omega", servers, omega_token, [alpha_pub], detach=keep,
            extra=["--omega-key", str(omega_key), "--license-trust", str(license_pub),
                   "--root", str(root_file)],
        )  # fmt: skip
        demo.agents.append(omega)
        signer = load_private_key(license_key)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
        for mf in MAINFRAMES:
            token, _ = issue(signer, mf, "Demo Customer", expires)
            lic = base / "licenses" / f"{mf}.license"
            lic.parent.mkdir(exist_ok=True)
            lic.write_text(token + "\n")
            lic.chmod(0o600)
            demo.agents.append(
                start_agent(
                    "mainframe",
                    servers,
                    None,
                    [alpha_pub],
                    name=mf,
                    detach=keep,
                    extra=[
                        "--omega",
                        omega.url,
                        "--license",
                        str(lic),
                        "--root",
                        str(root_file),
                        "--poll-wait",
                        "5",
                    ],
                )
            )
        yield demo
        ok = True
    finally:
        if demo and not (keep and ok):
            for agent in reversed(demo.agents):
                agent.stop()
        if keep and ok and demo:
            click.echo(f"\nKept everything in {base}; the servers are still running:")
            for agent in demo.agents:
                click.echo(f"  {agent.role:<9} {agent.url}  (pid {agent.proc.pid})")
            click.echo(f"Use deploy against them:  cd {demo.project} && deploy status")
            click.echo(f"  (as the demo did: ASHAT_SIGNING_KEY={base / 'keys' / 'alpha.key'})")
            pids = " ".join(str(a.proc.pid) for a in demo.agents)
            click.echo(f"Stop them with:  kill {pids}")
        elif keep:
            click.echo(f"\n(kept the files in {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)


def run_demo(app_dir: Path | None = None, keep: bool = False) -> None:
    app_dir = (app_dir or default_app_dir()).resolve()
    with demo_environment(app_dir, keep) as demo:
        public, omega = demo.agents[0], demo.agents[1]
        demo.deploy(
            "configure", "public", public.url, "PublicStaging",
            "--token-file", str(demo.base / "public.token"),
        )  # fmt: skip
        demo.deploy(
            "configure", "omega", omega.url, "OmegaProduction",
            "--token-file", str(demo.base / "omega.token"),
        )  # fmt: skip
        demo.deploy("servers", "--check")
        demo.deploy("push", "hello-001", "First release of hello-service")
        demo.deploy("verify", "hello-001")
        demo.deploy(
            "approve", "hello-001", "--key", str(demo.base / "keys" / "bob.key"),
            "--comment", "looks good",
        )  # fmt: skip
        demo.deploy("status", "hello-001")
        demo.deploy("history")
        demo.deploy("audit", "verify")
        click.echo(
            "\nDemo finished: every step above ran against real processes on loopback "
            f"(PUBLIC, OMEGA and {len(MAINFRAMES)} mainframes). Each mainframe installed "
            "hello-001 only after checking, against the root of trust, alice's release "
            "signature, PUBLIC's verification statement and bob's approval signature."
        )
