"""Plain helpers the tests import (``from support import deploy``); fixtures stay in
conftest.py and process_fixtures.py. The ``deploy`` CLI run in this process, a copy of
examples/hello-service as the cwd with PUBLIC and OMEGA configured, and polling until a
condition holds.

The tests directories are not packages: this module is importable because pytest (in its
default ``prepend`` import mode) puts tests/ on ``sys.path`` for tests/conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ashat.cli.deploy import cli

REPO = Path(__file__).resolve().parents[1]
HELLO_SERVICE = REPO / "examples" / "hello-service"


def deploy(*args: str) -> Result:
    """``deploy ARGS`` in this process (click's runner); exceptions propagate."""
    return CliRunner().invoke(cli, list(args), prog_name="deploy", catch_exceptions=False)


def ashat(*args: str) -> Result:
    """``ashat ARGS`` in this process (click's runner); exceptions propagate."""
    from ashat.cli.ashat import cli as ashat_cli

    return CliRunner().invoke(ashat_cli, list(args), prog_name="ashat", catch_exceptions=False)


def project_manifest(root: Path, update_id: str) -> bytes:
    """The signed manifest ``deploy push`` kept for ``update_id`` in the project at ``root``."""
    return (root / ".ashat" / "manifests" / f"{update_id}.json").read_bytes()


def deploy_json(*args: str) -> tuple[int, dict[str, Any]]:
    """``deploy ARGS --json``: the exit code and the JSON object printed."""
    res = deploy(*args, "--json")
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    return res.exit_code, data


def configure(tier: str, agent: Any, name: str | None = None) -> None:
    """``deploy configure TIER`` for ``agent`` (an AgentHandle), named ``tier.title()``."""
    args = [
        "configure",
        tier,
        agent.url,
        name or tier.title(),
        "--token-file",
        str(agent.token_file),
    ]
    if agent.ca_cert:
        args += ["--ca-cert", str(agent.ca_cert)]
    res = deploy(*args)
    assert res.exit_code == 0, res.output


def enter_hello_project(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    signing_key: Path,
    *,
    distribution: str | None = None,
) -> Path:
    """Copy examples/hello-service to ``root`` and make it the cwd, acting as alice without
    colour or ``ASHAT_DB``, signing with ``signing_key``; ``distribution`` (when given)
    replaces ashat.toml from its ``[distribution]`` table to the end. Returns ``root``."""
    shutil.copytree(HELLO_SERVICE, root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    if distribution is not None:
        toml = (root / "ashat.toml").read_text()
        (root / "ashat.toml").write_text(toml[: toml.index("[distribution]")] + distribution)
    return enter_project(root, monkeypatch, signing_key)


SIX_CHECKS = ("health", "modules", "api", "database", "performance", "security")


def verify_health_only(root: Path, keep: tuple[str, ...] = ("health",)) -> Path:
    """Switch every check but ``keep`` off in ``root``'s ashat.toml (``[verify] disabled``),
    to keep tests of what comes after verification short; a release is verified only when
    every check not switched off there passed. Returns ``root``."""
    toml = root / "ashat.toml"
    text = toml.read_text()
    off = json.dumps([c for c in SIX_CHECKS if c not in keep])
    if "[verify]\n" in text:
        text = text.replace("[verify]\n", f"[verify]\ndisabled = {off}\n", 1)
    else:
        text = text.replace("[approval]", f"[verify]\ndisabled = {off}\n\n[approval]", 1)
    assert "disabled = " in text, f"no [verify] or [approval] table in {toml}"
    toml.write_text(text)
    return root


def project_maker(
    root: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> Callable[[Path], Path]:
    """For ``hello_fleet(project=...)``: ``make(signing_key)`` writes ``files`` into a new
    ``root`` and enters it (:func:`enter_project`)."""

    def make(signing_key: Path) -> Path:
        root.mkdir()
        for name, text in files.items():
            (root / name).write_text(text)
        return enter_project(root, monkeypatch, signing_key)

    return make


def enter_project(root: Path, monkeypatch: pytest.MonkeyPatch, signing_key: Path) -> Path:
    """Make the project at ``root`` the cwd, acting as alice without colour or ``ASHAT_DB``,
    signing with ``signing_key``. Returns ``root``."""
    monkeypatch.chdir(root)
    monkeypatch.setenv("ASHAT_USER", "alice")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("ASHAT_DB", raising=False)
    monkeypatch.setenv("ASHAT_SIGNING_KEY", str(signing_key))
    return root


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 50 ms until it returns something true; return that, or fail
    the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
    return value


def make_wheel(house: Path, name: str, version: str, code: str, requires: tuple[str, ...]) -> Path:
    """A pure-Python wheel of the module ``name`` (PEP 427), made by hand: building one
    with setuptools would need a package index."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": code,
        f"{dist}/METADATA": meta,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    out = house / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples ``name`` of an agent's ``/metrics`` (read by prometheus_client's parser):
    each its labels and value."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def downloads_by(omega_url: str, what: str = "blob") -> dict[str, int]:
    """OMEGA's ``ashat_fleet_{what}_downloads_total`` (``blob`` or ``pack``), by who sent
    the bytes: ``omega`` or ``mirror``."""
    found = samples(omega_url, f"ashat_fleet_{what}_downloads_total")
    return {labels["by"]: int(value) for labels, value in found}


def answers_by_status(url: str, method: str, route: str) -> dict[int, int]:
    """How many ``method route`` requests an agent answered, by status (its own metrics)."""
    found = samples(url, "ashat_agent_requests_total")
    return {
        int(labels["status"]): int(value)
        for labels, value in found
        if labels["method"] == method and labels["route"] == route
    }


def put_blob(agent: Any, data: bytes) -> str:
    """Store ``data`` in an in-process agent's blob store, as an upload would; its digest."""
    from ashat.agent.blobs import BlobWriter

    sha = hashlib.sha256(data).hexdigest()
    w = BlobWriter(agent.blobs, sha)
    w.write(data)
    w.finish()
    w.commit()
    return sha


class BlackHole:
    """A TCP listener that reads what it is sent and never answers (a stuck OMEGA): the
    connections it took (``conns``) and the first bytes of each (``received``)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.received.append(conn.recv(65536))

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
