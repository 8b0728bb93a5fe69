"""Real agents on loopback: the ``agent_factory`` fixture, and helpers to build, sign, upload,
stage and activate releases through the real :class:`~ashat.transport.client.AgentClient`.

``agent_factory(**options)`` starts ``ashat agent`` as a subprocess (``python -m
ashat.cli.ashat agent``) on a port the OS picks (the ready line names it), waits for
``/v1/health``, and returns an :class:`AgentHandle` (``.url``, ``.token``, ``.token_file``,
``.data``, ``.key``, ``.pub_path``, ``.ca_cert``, ``.stop()``, and ``.client()``,
``.build()``, ``.upload()``, ``.stage()``, ``.deploy()`` for releases; with
``role="omega"`` also ``.release()`` (staged, activated and approved), and
``.omega_key_path``, ``.omega_pub_path``, ``.license_key`` and ``.license_pub_path``, keys
made for it). At teardown every agent still running is stopped with SIGTERM, and the test
fails if it did not exit cleanly or if any process is still running inside its data
directory (an app it should have stopped). The ``trees`` fixture makes release trees:
examples/hello-service, or a tiny app that notes its start, first health answer and stop in
the shared directory.

``serve_process(root, env)`` (and ``module_serve_process``) starts ``ashat serve`` on the
project at ``root`` and returns a :class:`ServeHandle` (``.url``, ``.add_user(name, role)``
returning a token, ``.http(token)``, ``.call(method, path, token, body)``, ``.output()``,
``.stop()``); at teardown each must exit 0 without a
traceback in its log. ``hello_fleet(n)`` sets up a whole fleet around a copy of
examples/hello-service (PUBLIC and OMEGA configured, ``n`` mainframes registered) and
returns a :class:`HelloFleet` (``.deploy(...)``, ``.ship(id, version)``, ``.currents()``).

A pytest plugin, registered by tests/conftest.py, so every test directory (integration/,
faults/, e2e/) has these fixtures. The tests directories are not packages: plain functions
are in tests/support.py (``from support import deploy, wait_for``), which this file uses
too; tests/ is on ``sys.path`` because tests/conftest.py lives there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle import Built, Manifest, SigningKey, build_from_dir, sign_manifest
from ashat.bundle.keys import generate_keypair, load_private_key
from ashat.transport.client import AgentClient, BlobRef
from support import (
    HELLO_SERVICE,
    REPO,
    ashat,
    configure,
    deploy,
    enter_hello_project,
    verify_health_only,
    wait_for,
)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
READY_RE = re.compile(r"ashat agent \((\w+)\) serving (https?://\S+) data=(\S+)")


def agent_command() -> list[str]:
    """How to start the agent: ``ashat agent``, as a fresh interpreter."""
    return [sys.executable, "-m", "ashat.cli.ashat", "agent"]


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is inside ``directory``, one pid per process
    group (its leader's, if it is one of them): an app and the bubblewrap sandbox around
    it (ashat.agent.confine) are one group, led by the pid the agent reports."""
    root = str(directory.resolve())
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and (cwd == root or cwd.startswith(root + "/")):
            found.append(int(name))
    groups: dict[int, int] = {}
    for pid in sorted(found):
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        groups[pgid] = pgid if pgid in found else min(groups.get(pgid, pid), pid)
    return sorted(groups.values())


def wait_ready(
    proc: subprocess.Popen[bytes], log: Path, ready: re.Pattern[str], what: str, timeout_s: float
) -> re.Match[str]:
    """Wait until ``ready`` matches the output ``proc`` writes to ``log``; the match. Fails
    the test if ``what`` exits first, or (killing it) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = ready.search(log.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{what} not ready within {timeout_s}s:\n{log.read_text()}")
        time.sleep(0.05)


@dataclass
class AgentHandle:
    url: str
    token: str
    token_file: Path
    data: Path
    key: SigningKey
    key_path: Path
    pub_path: Path
    ca_cert: Path | None
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    # role omega: OMEGA's key (approvals, directives) and the key licenses are signed with
    omega_key_path: Path | None = None
    omega_pub_path: Path | None = None
    license_key: SigningKey | None = None
    license_pub_path: Path | None = None

    def client(self, token: str | None = None, **kwargs: Any) -> AgentClient:
        ca = str(self.ca_cert) if self.ca_cert else None
        return AgentClient(self.url, token or self.token, ca_cert=ca, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def build(
        self,
        tree: Path,
        update_id: str,
        *,
        sequence: int = 1,
        app: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> tuple[Manifest, Built]:
        """Bundle ``tree`` and sign it (``release`` role) with this agent's trusted key."""
        built = build_from_dir(
            tree,
            update_id=update_id,
            sequence=sequence,
            description=f"test release {update_id}",
            app=dict(app or {}),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        return sign_manifest(built.manifest, key or self.key), built

    @staticmethod
    def upload(client: AgentClient, signed: Manifest, built: Built) -> list[str]:
        """Send the blobs the agent lacks; return their digests."""
        sizes = {e.sha256: e.size for e in signed.files if e.kind == "file"}
        missing = client.missing(sorted(sizes))
        client.upload([BlobRef(d, sizes[d], built.blobs[d]) for d in missing])
        return missing

    def stage(
        self,
        tree: Path,
        update_id: str,
        *,
        sequence: int = 1,
        app: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Build, sign, upload and stage ``tree`` as ``update_id``; the agent's answer."""
        signed, built = self.build(tree, update_id, sequence=sequence, app=app)
        with self.client() as client:
            self.upload(client, signed, built)
            return client.stage(signed.to_bytes())

    def deploy(
        self,
        tree: Path,
        update_id: str,
        *,
        sequence: int = 1,
        app: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`stage`, then activate; the activation's answer."""
        self.stage(tree, update_id, sequence=sequence, app=app)
        with self.client() as client:
            return client.activate(update_id)

    def release(
        self,
        tree: Path,
        update_id: str,
        *,
        sequence: int = 1,
        app: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """On OMEGA: stage and activate ``tree`` as ``update_id``, then approve it as carol
        (``POST /v1/releases/ID/approve``); the signed manifest."""
        signed, built = self.build(tree, update_id, sequence=sequence, app=app)
        with self.client() as client:
            self.upload(client, signed, built)
            client.stage(signed.to_bytes())
            client.activate(update_id)
        now = dt.datetime.now(dt.UTC).isoformat()
        record = {
            "update_id": update_id,
            "sequence": sequence,
            "approvers": [{"user": "carol", "at": now, "comment": "ok"}],
            "approved_at": now,
        }
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            r = http.post(f"/v1/releases/{update_id}/approve", json={"approval": record})
        assert r.status_code == 200, r.text
        return signed

    def link(self, name: str) -> str | None:
        """Where ``current`` or ``previous`` points (``releases/<id>``), or None."""
        p = self.data / name
        return os.readlink(p) if p.is_symlink() else None

    def processes(self, under: str = "") -> list[int]:
        """Live processes running in the data directory (apps), or in ``releases/<under>``."""
        return processes_in(self.data / "releases" / under if under else self.data)

    def events(self) -> list[str]:
        """What tiny apps noted in the shared directory (``start``/``healthy``/``stop`` id)."""
        path = self.data / "shared" / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def snapshot(self) -> dict[str, Any]:
        """What refused input must not change: blobs, releases, manifests, links; tmp/ empty."""

        def names(d: Path) -> list[str]:
            return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []

        return {
            "blobs": names(self.data / "blobs"),
            "releases": sorted(os.listdir(self.data / "releases")),
            "manifests": names(self.data / "manifests"),
            "links": {name: self.link(name) for name in ("current", "previous")},
            # but the template the next stage may start from (made after a switch)
            "tmp": [n for n in names(self.data / "tmp") if not n.startswith("template-")],
        }

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the agent, wait for it, and check that no app process is left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"agent did not stop within {STOP_TIMEOUT_S}s:\n{self.output()}")
        if sig != signal.SIGKILL:
            wait_for(lambda: not processes_in(self.data), 5, f"no process left in {self.data}")
        return code


def _tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1 and localhost, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ashat test agent")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "agent-cert.pem", directory / "agent-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class AgentFactory:
    """Starts agents under ``base``; :meth:`close` stops those still running."""

    command = staticmethod(agent_command)  # the argv prefix that runs ``ashat agent``

    def __init__(self, base: Path) -> None:
        self.base = base
        self.handles: list[AgentHandle] = []
        self._n = 0

    def __call__(
        self,
        *,
        role: str = "public",
        tls: bool = False,
        keep: int | None = None,
        app_env: Mapping[str, str] | None = None,
        max_blob_bytes: int | None = None,
        like: AgentHandle | None = None,
        extra_trust: tuple[Path, ...] = (),
        poll_timeout: int | None = None,
        fleet_db: str | None = None,
        blob_dir: Path | None = None,
        replica_of: AgentHandle | None = None,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        args: tuple[str, ...] = (),
        omega_keypair: tuple[Path, Path] | None = None,
    ) -> AgentHandle:
        """Start an agent; ``like`` reuses another's data directory, token, key and TLS;
        ``replica_of`` (an OMEGA) all that but the data directory: another replica.
        ``env`` is added to this process's environment for the agent (this start only);
        ``port`` is the one to listen on (0: the OS picks one); ``args`` are added to the
        command line (this start only).

        ``role="omega"`` also makes an OMEGA key (``omega.key``) and a license key
        (``license.key``) and passes ``--omega-key``/``--license-trust`` (and
        ``--poll-timeout``, ``--db``, ``--blob-dir``); the handle names them.
        ``omega_keypair`` (key, pub) is OMEGA's key made beforehand (a root of trust names it).
        """
        self._n += 1
        home = self.base / f"agent{self._n}"
        home.mkdir(parents=True)
        like = like or replica_of
        if like is not None:
            data, token, token_file = like.data, like.token, like.token_file
            key_path, pub_path, ca_cert = like.key_path, like.pub_path, like.ca_cert
            options = dict(like.options)
            if replica_of is not None:
                data = home / "data"
        else:
            data = home / "data"
            token = secrets.token_urlsafe(24)
            token_file = home / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            key_path, pub_path = generate_keypair("alpha", home)
            ca_cert = None
            options = {
                "role": role,
                "keep": keep,
                "app_env": dict(app_env) if app_env else None,
                "max_blob_bytes": max_blob_bytes,
                "extra_trust": extra_trust,
                "tls": None,
                "omega": None,
                "poll_timeout": poll_timeout,
                "fleet_db": fleet_db,
                "blob_dir": blob_dir,
            }
            if role == "omega":
                omega_key_path, omega_pub_path = omega_keypair or generate_keypair("omega", home)
                license_key_path, license_pub_path = generate_keypair("license", home)
                options["omega"] = (
                    omega_key_path,
                    omega_pub_path,
                    license_key_path,
                    license_pub_path,
                )
            if tls:
                options["tls"] = _tls_files(home)
                ca_cert = options["tls"][0]
        argv = [
            *agent_command(),
            "--role",
            options["role"],
            "--data",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
            "--token-file",
            str(token_file),
            "--trust",
            str(pub_path),
        ]
        for extra in options["extra_trust"]:
            argv += ["--trust", str(extra)]
        argv += args
        if options["keep"] is not None:
            argv += ["--keep", str(options["keep"])]
        if options["max_blob_bytes"] is not None:
            argv += ["--max-blob-bytes", str(options["max_blob_bytes"])]
        if options["app_env"]:
            env_file = home / "app.env"
            env_file.write_text(
                "# test app environment\n"
                + "".join(f"{k}={v}\n" for k, v in options["app_env"].items())
            )
            env_file.chmod(0o600)
            argv += ["--app-env", str(env_file)]
        if options["tls"]:
            argv += ["--tls-cert", str(options["tls"][0]), "--tls-key", str(options["tls"][1])]
        if options.get("omega"):
            argv += ["--omega-key", str(options["omega"][0])]
            argv += ["--license-trust", str(options["omega"][3])]
        if options.get("poll_timeout") is not None:
            argv += ["--poll-timeout", str(options["poll_timeout"])]
        if options.get("fleet_db"):
            argv += ["--db", options["fleet_db"]]
        if options.get("blob_dir"):
            argv += ["--blob-dir", str(options["blob_dir"])]
        log = home / "agent.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, cwd=home,
                env={**os.environ, **env} if env else None,
            )  # fmt: skip
        url = wait_ready(proc, log, READY_RE, "agent", START_TIMEOUT_S).group(2)
        handle = AgentHandle(
            url=url,
            token=token,
            token_file=token_file,
            data=data,
            key=load_private_key(key_path),
            key_path=key_path,
            pub_path=pub_path,
            ca_cert=ca_cert,
            proc=proc,
            log=log,
            argv=argv,
            options=options,
        )
        if options.get("omega"):
            handle.omega_key_path, handle.omega_pub_path = options["omega"][:2]
            handle.license_key = load_private_key(options["omega"][2])
            handle.license_pub_path = options["omega"][3]
        self.handles.append(handle)
        with handle.client() as client:
            wait_for(lambda: client.health()["status"] == "ok", 10, "/v1/health")
        return handle

    def close(self) -> None:
        """Stop every agent still running (newest first), then look for leftover apps."""
        problems = []
        for h in reversed(self.handles):
            if h.proc.poll() is None:
                code = h.stop()
                if code != 0:
                    problems.append(f"agent exited with {code}:\n{h.output()}")
        for data in {h.data for h in self.handles}:
            left = processes_in(data)
            for pid in left:
                _kill(pid)
            if left:
                problems.append(f"app processes left running in {data}: {left}")
        self.handles.clear()
        if problems:
            pytest.fail("\n".join(problems))


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path / "agents")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_agent_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path_factory.mktemp("agents"))
    yield factory
    factory.close()


# -- release trees ------------------------------------------------------------------------

# A tiny app: notes "start", "healthy" (first health answer) and "stop" in the shared dir,
# and answers /health with its release and one app-env variable.
TINY_APP = """\
import http.server, json, os, signal, sys, threading
release = os.environ["ASHAT_RELEASE"]
events = os.path.join(os.environ["ASHAT_SHARED_DIR"], "events.log")
def note(what):
    with open(events, "a") as f:
        f.write(f"{what} {release}\\n")
served = []
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if not served:
            served.append(1)
            note("healthy")
        body = json.dumps({"release": release, "secret": os.environ.get("APP_SECRET"),
                           "cwd": os.getcwd()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
def stop(*_):
    note("stop")
    threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGTERM, stop)
note("start")
server.serve_forever(poll_interval=0.05)
"""

TINY_RUN = "python3 app.py"


class Trees:
    """Release trees under ``base`` (each name once)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def hello(self, name: str, version: str | None = None) -> Path:
        """examples/hello-service as a release would hold it, optionally another VERSION."""
        dest = self.base / name
        shutil.copytree(HELLO_SERVICE, dest, ignore=shutil.ignore_patterns("data", "__pycache__"))
        if version is not None:
            (dest / "VERSION").write_text(version + "\n")
        return dest

    @staticmethod
    def hello_app() -> dict[str, Any]:
        with (HELLO_SERVICE / "ashat.toml").open("rb") as f:
            return dict(tomllib.load(f)["app"])

    def tiny(self, name: str, marker: str = "") -> Path:
        dest = self.base / name
        dest.mkdir(parents=True)
        (dest / "app.py").write_text(TINY_APP)
        (dest / "marker.txt").write_text(marker or name)
        return dest

    @staticmethod
    def tiny_app(**extra: Any) -> dict[str, Any]:
        return {"run": TINY_RUN, "health_path": "/health", "health_timeout_s": 10, **extra}


@pytest.fixture
def trees(tmp_path: Path) -> Trees:
    return Trees(tmp_path / "trees")


# -- Licensed Mainframes ------------------------------------------------------------------


@dataclass
class MainframeHandle:
    """A mainframe agent process (``--role mainframe``) started by :class:`MainframeFactory`."""

    mainframe_id: str
    data: Path
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(f"{self.url}/v1/health", timeout=5).json())

    def current(self) -> str | None:
        p = self.data / "current"
        return os.path.basename(os.readlink(p)) if p.is_symlink() else None

    def stop(self, sig: int = signal.SIGTERM, *, signalled: bool = False) -> int:
        """Signal the agent (unless ``signalled`` already: a second SIGTERM may land after
        the agent restored the default handler, and kill it) and wait; with SIGTERM, check
        it left no app running."""
        if self.proc.poll() is None and not signalled:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"mainframe did not stop within {STOP_TIMEOUT_S}s:\n{self.output()}")
        if sig != signal.SIGKILL:
            wait_for(lambda: not processes_in(self.data), 5, f"no process left in {self.data}")
        return code


class MainframeFactory:
    """Starts mainframe agents under ``base``: :meth:`start` returns at once, :meth:`ready`
    waits for the ready line (so a fleet starts in parallel); :meth:`close` stops them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.handles: list[MainframeHandle] = []
        self._n = 0

    def start(
        self,
        *,
        omega: str,
        license_token: str,
        mainframe_id: str,
        trust: Path,
        trust_omega: Path | None,
        poll_wait: int = 5,
        token_file: Path | None = None,
        ca_cert: Path | None = None,
        app_env: Mapping[str, str] | None = None,
        root: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> MainframeHandle:
        """Start a mainframe (not waiting for it: see :meth:`ready`); ``root`` is the root of
        trust it starts from (``--root``); ``args`` are added to its command line."""
        self._n += 1
        home = self.base / f"mainframe{self._n}"
        home.mkdir(parents=True)
        license_file = home / "license"
        license_file.write_text(license_token + "\n")
        license_file.chmod(0o600)
        argv = [
            *agent_command(),
            "--role",
            "mainframe",
            "--data",
            str(home / "data"),
            "--listen",
            "127.0.0.1:0",
            "--trust",
            str(trust),
            "--omega",
            omega,
            "--license",
            str(license_file),
            "--poll-wait",
            str(poll_wait),
        ]
        if trust_omega is not None:
            argv += ["--trust-omega", str(trust_omega)]
        if root is not None:
            argv += ["--root", str(root)]
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        if ca_cert is not None:
            argv += ["--omega-ca-cert", str(ca_cert)]
        if app_env:
            env_file = home / "app.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in app_env.items()))
            env_file.chmod(0o600)
            argv += ["--app-env", str(env_file)]
        argv += args
        return self._spawn(mainframe_id, home / "data", home / "agent.log", argv)

    def restart(
        self, stopped: MainframeHandle, env: Mapping[str, str] | None = None
    ) -> MainframeHandle:
        """Start a stopped mainframe again: same options and data directory, a new log;
        ``env`` is added to this process's environment for it."""
        self._n += 1
        log = stopped.log.with_name(f"agent-{self._n}.log")
        return self._spawn(stopped.mainframe_id, stopped.data, log, stopped.argv, env)

    def _spawn(
        self,
        mainframe_id: str,
        data: Path,
        log: Path,
        argv: list[str],
        env: Mapping[str, str] | None = None,
    ) -> MainframeHandle:
        with log.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                cwd=log.parent, env={**os.environ, **env} if env else None,
            )  # fmt: skip
        handle = MainframeHandle(mainframe_id, data, proc, log, argv)
        self.handles.append(handle)
        return handle

    def ready(self, *handles: MainframeHandle) -> None:
        for h in handles:
            h.url = wait_ready(h.proc, h.log, READY_RE, "mainframe", START_TIMEOUT_S).group(2)

    def __call__(self, **kwargs: Any) -> MainframeHandle:
        handle = self.start(**kwargs)
        self.ready(handle)
        return handle

    def close(self) -> None:
        problems = []
        running = [h for h in self.handles if h.proc.poll() is None]
        for h in running:
            h.proc.send_signal(signal.SIGTERM)
        for h in running:
            code = h.stop(signalled=True)
            if code != 0:
                problems.append(f"mainframe exited with {code}:\n{h.output()}")
        for data in {h.data for h in self.handles}:
            left = processes_in(data)
            for pid in left:
                _kill(pid)
            if left:
                problems.append(f"app processes left running in {data}: {left}")
        self.handles.clear()
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture
def mainframe_factory(tmp_path: Path) -> Iterator[MainframeFactory]:
    factory = MainframeFactory(tmp_path / "mainframes")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_mainframe_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MainframeFactory]:
    factory = MainframeFactory(tmp_path_factory.mktemp("mainframes"))
    yield factory
    factory.close()


# -- ashat serve ---------------------------------------------------------------------------

SERVE_READY_RE = re.compile(r"ashat serve: serving (https?://\S+)")
SERVE_START_TIMEOUT_S = 30.0  # it imports the whole API and opens the project's store


@dataclass
class ServeHandle:
    """An ``ashat serve`` process started by :class:`ServeFactory`."""

    url: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path
    db_url: str | None = None  # --db, when not the project's own SQLite file

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, token: str | None = None) -> httpx.Client:
        """A client for this server, with ``token`` as its bearer (if any)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=300)

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> httpx.Response:
        """One request, ``body`` sent as JSON; the response."""
        with self.http(token) as c:
            return c.request(method, path, json=body)

    def add_user(self, name: str, role: str) -> str:
        """Add a user to the project's store (as ``ashat users`` does); return its token."""
        from ashat.ops.project import Project
        from ashat.ops.users import add_user, issue_token

        project = Project(self.root, self.db_url)
        try:
            add_user(project, name, role, actor="test")
            return issue_token(project, name, actor="test")[1]
        finally:
            project.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"ashat serve did not stop:\n{self.output()}")


class ServeFactory:
    """Starts ``ashat serve --project ROOT`` on a port the OS picks; :meth:`close` stops each
    and fails the test if one did not exit 0 or logged a traceback."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.handles: list[ServeHandle] = []

    def __call__(
        self,
        root: Path,
        env: Mapping[str, str] | None = None,
        db_url: str | None = None,
        args: tuple[str, ...] = (),
    ) -> ServeHandle:
        self.base.mkdir(parents=True, exist_ok=True)
        log = self.base / f"serve{len(self.handles)}.log"
        argv = [
            sys.executable, "-m", "ashat.cli.ashat", "serve",
            "--listen", "127.0.0.1:0", "--project", str(root),
            *(["--db", db_url] if db_url else []), *args,
        ]  # fmt: skip
        full_env = {k: v for k, v in os.environ.items() if k != "ASHAT_DB"}
        full_env.update(env or {})
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                env=full_env,
            )  # fmt: skip
        m = wait_ready(proc, log, SERVE_READY_RE, "ashat serve", SERVE_START_TIMEOUT_S)
        handle = ServeHandle(m.group(1), root, proc, log, db_url)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        problems = []
        for h in self.handles:
            code = h.stop()
            if code != 0 or "Traceback" in h.output():
                problems.append(f"ashat serve exited with {code}:\n{h.output()}")
        self.handles.clear()
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServeFactory]:
    factory = ServeFactory(tmp_path / "serve")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_serve_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    factory = ServeFactory(tmp_path_factory.mktemp("serve"))
    yield factory
    factory.close()


# -- a whole fleet: examples/hello-service, PUBLIC, OMEGA and mainframes -------------------

HELLO_WAVES = """[distribution]
waves = [50, 100]
max_failure_ratio = 0.5
wave_timeout_s = 60
auto_rollback = true
"""


@dataclass
class HelloFleet:
    """A copy of examples/hello-service as the cwd (acting as alice) with PUBLIC and OMEGA
    configured and ``mainframes`` registered with OMEGA."""

    root: Path
    public: AgentHandle
    omega: AgentHandle
    mainframes: list[MainframeHandle]

    deploy = staticmethod(deploy)  # ``deploy ARGS`` in this process, for tests given a fleet

    def ship(self, update_id: str, version: str) -> None:
        """Change VERSION, push and verify (health only, to keep tests short) as alice."""
        (self.root / "VERSION").write_text(version + "\n")
        res = self.deploy("push", update_id, f"version {version}")
        assert res.exit_code == 0, res.output
        res = self.deploy("verify", update_id, "--only", "health")
        assert res.exit_code == 0, res.output

    def currents(self) -> list[str | None]:
        return [mf.current() for mf in self.mainframes]


@pytest.fixture
def hello_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A copy of examples/hello-service as the cwd, acting as alice, configured for ``agent``
    as PUBLIC (unless ``configure=False``)."""
    configure_tier = configure  # support's: make's own flag shadows the name

    def make(agent: Any, *, key_path: Path | None = None, configure: bool = True) -> Path:
        root = enter_hello_project(tmp_path / "alpha", monkeypatch, key_path or agent.key_path)
        if configure:
            configure_tier("public", agent, "Staging")
        return root

    return make


@pytest.fixture
def hello_fleet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_factory: AgentFactory,
    mainframe_factory: MainframeFactory,
) -> Any:
    """``hello_fleet(n=2, distribution=HELLO_WAVES, poll_wait=1, project=None)`` ->
    :class:`HelloFleet`; ``project(signing_key)``, when given, makes the project (the cwd)
    and returns its root instead of a copy of hello-service. ``omega_args`` are added to
    OMEGA's command line; ``front(omega)``, when given, returns the URL (and CA
    certificate) the mainframes reach OMEGA by (a proxy in front of it), and
    ``mainframe_args`` are added to theirs."""
    import datetime as dt

    from ashat.fleet.license import issue

    def make(
        n: int = 2,
        distribution: str = HELLO_WAVES,
        poll_wait: int = 1,
        project: Callable[[Path], Path] | None = None,
        omega_args: tuple[str, ...] = (),
        front: Callable[[AgentHandle], tuple[str, Path | None]] | None = None,
        mainframe_args: tuple[str, ...] = (),
    ) -> HelloFleet:
        public = agent_factory()
        omega = agent_factory(
            role="omega", poll_timeout=5, extra_trust=(public.pub_path,), args=omega_args
        )
        omega_url, omega_ca = front(omega) if front is not None else (omega.url, None)
        if project is not None:  # another project than hello-service: project(signing key)
            root = project(public.key_path)
        else:
            root = enter_hello_project(
                tmp_path / "alpha", monkeypatch, public.key_path, distribution=distribution
            )
            verify_health_only(root)
        configure("public", public)
        configure("omega", omega)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        mfs = []
        for i in range(n):
            assert omega.license_key is not None and omega.omega_pub_path is not None
            token, _ = issue(omega.license_key, f"mf-{i}", "ACME", expires)
            mfs.append(
                mainframe_factory.start(
                    omega=omega_url, license_token=token, mainframe_id=f"mf-{i}",
                    trust=public.pub_path, trust_omega=omega.omega_pub_path, poll_wait=poll_wait,
                    ca_cert=omega_ca, args=mainframe_args,
                )
            )  # fmt: skip
        mainframe_factory.ready(*mfs)
        with omega.client() as client:
            wait_for(
                lambda: len(client.request("GET", "/v1/fleet/mainframes")["mainframes"]) >= n,
                30,
                f"{n} mainframes registered with OMEGA",
            )
        return HelloFleet(root, public, omega, mfs)

    return make


# -- a project with a root of trust (issue 14) --------------------------------------------

CHAIN_WAVES = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 60
auto_rollback = false
"""


@dataclass
class Chain:
    root: Path  # the project
    keys: Path
    public: Any
    omega: Any
    mainframes: list[Any]
    mainframe_token: str = ""  # the mainframes' operator's bearer token

    def key(self, name: str) -> str:
        return str(self.keys / f"{name}.key")

    def ship(self, update_id: str, version: str) -> None:
        (self.root / "VERSION").write_text(version + "\n")
        res = deploy("push", update_id, f"version {version}")
        assert res.exit_code == 0, res.output
        res = deploy("verify", update_id)
        assert res.exit_code == 0, res.output

    def currents(self) -> list[str | None]:
        return [mf.current() for mf in self.mainframes]


def _keys(directory: Path, *names: str) -> None:
    for name in names:
        generate_keypair(name, directory)


@pytest.fixture
def make_chain(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_factory: Any,
    mainframe_factory: Any,
) -> Any:
    """A project with a root of trust (by default k = 2 of bob, with an ashat key, and
    carol, with an OpenSSH key: ``keys/carol.key``; alice releases; keys in ``keys/``),
    PUBLIC with a verifier key, OMEGA (from the root, unless ``omega_root`` is False: an
    OMEGA that counter-signs whatever its token holder sends) and two mainframes from the
    root, all real processes on loopback."""

    def make(
        omega_root: bool = True, approvers: tuple[str, ...] = ("bob", "carol"), k: int = 2
    ) -> Chain:
        from ashat.fleet.license import issue

        keys = tmp_path / "keys"
        keys.mkdir()
        if shutil.which("ssh-keygen") is None:
            pytest.skip("ssh-keygen not found (Debian: openssh-client; .ci/run installs it)")
        _keys(keys, "root", "verifier", "omega", "bob", "dave", "mallory")
        # carol signs with the OpenSSH key she signs git commits with (ssh-keygen's own)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "carol@laptop",
             "-f", str(keys / "carol.key")],
            check=True,
        )  # fmt: skip
        (keys / "carol.pub").write_text((keys / "carol.key.pub").read_text())
        public = agent_factory(args=("--verifier-key", str(keys / "verifier.key")))
        root = enter_hello_project(
            tmp_path / "alpha", monkeypatch, public.key_path, distribution=CHAIN_WAVES
        )
        verify_health_only(root)
        named = [a for name in approvers for a in ("--approver", f"{name}={keys / name}.pub")]
        res = ashat(
            "trust", "init", "--root-key", str(keys / "root.key"),
            "--releaser", f"alice={public.pub_path}", "--verifier", str(keys / "verifier.pub"),
            *named, "--approvals", str(k), "--omega", str(keys / "omega.pub"),
            "--require-checks", "health",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        omega = agent_factory(
            role="omega",
            poll_timeout=5,
            extra_trust=(public.pub_path,),
            omega_keypair=(keys / "omega.key", keys / "omega.pub"),
            args=("--root", str(root / "trust" / "root.json")) if omega_root else (),
        )
        configure("public", public)
        configure("omega", omega)
        assert omega.license_key is not None
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        mfs = []
        bearer = keys / "mainframe.token"  # its operator's token: the bearer routes open
        bearer.write_text(secrets.token_urlsafe(24) + "\n")
        for i in range(2):
            token, _ = issue(omega.license_key, f"mf-{i}", "ACME", expires)
            mfs.append(
                mainframe_factory.start(
                    omega=omega.url, license_token=token, mainframe_id=f"mf-{i}",
                    trust=public.pub_path, trust_omega=None, poll_wait=1,
                    root=root / "trust" / "1.root.json", token_file=bearer,
                )
            )  # fmt: skip
        mainframe_factory.ready(*mfs)
        return Chain(root, keys, public, omega, mfs, bearer.read_text().strip())

    return make


@pytest.fixture
def ssh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """A real ``ssh-agent`` for this test (``SSH_AUTH_SOCK`` set); call it with a private key
    file to ``ssh-add`` it. Stopped afterwards."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent not found (Debian: openssh-client; .ci/run installs it)")
    out = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", out))
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def add(key: Path) -> None:
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True)

    try:
        yield add
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)


# -- Prometheus (Debian's package; .ci/run installs it) -------------------------------------

PROMETHEUS_DIR = REPO / "contrib" / "prometheus"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus; .ci/run does it)")
    return found


def config_for(tmp: Path, jobs: dict[str, list[str]]) -> Path:
    """contrib's prometheus.yml with these targets (host:port), scraping every second."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    data = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    data["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in data["scrape_configs"]:
        targets = jobs[job["job_name"]]
        if "file_sd_configs" in job:
            (tmp / "mainframes.json").write_text(json.dumps([{"targets": targets}]))
            job["file_sd_configs"][0]["refresh_interval"] = "1s"
        else:
            job["static_configs"] = [{"targets": targets}]
    shutil.copy(PROMETHEUS_DIR / "ashat-rules.yml", tmp / "ashat-rules.yml")
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """``start(config)`` runs Debian's Prometheus with ``config`` (see :func:`config_for`)
    and returns its URL once ready; skips, saying why, where it is not installed."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> str:
        binary = tool("prometheus")
        from ashat.demo import free_port

        port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "Prometheus to be ready")
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)
