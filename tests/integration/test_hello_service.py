"""examples/hello-service as the ashat agent runs it: ``serve.py`` as a real process on a
loopback port, in a copy of the service directory, spoken to over HTTP with the stdlib."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVICE_SRC = Path(__file__).resolve().parents[2] / "examples" / "hello-service"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
MAX_BODY = 64 * 1024

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'",
    "Referrer-Policy": "no-referrer",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_service(dest: Path) -> Path:
    """The service directory as a release would hold it (no local state, no bytecode)."""
    shutil.copytree(SERVICE_SRC, dest, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return dest


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Service:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def post_json(self, path: str, payload: object) -> Reply:
        return self.request(
            "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )

    def stop(self) -> int:
        """SIGTERM, then the exit status (killing it, and failing, if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"serve.py did not exit within {STOP_TIMEOUT_S}s of SIGTERM")


def start_service(
    service_dir: Path, *, use_env_port: bool = False, extra_env: Mapping[str, str] | None = None
) -> Service:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST", "HELLO_DB")}
    env.update(extra_env or {})
    cmd = [sys.executable, "serve.py"]
    if use_env_port:
        env["PORT"] = str(port)
    else:
        cmd += ["--port", str(port)]
    log = service_dir.parent / f"{service_dir.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=service_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    svc = Service(service_dir, port, proc, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"serve.py exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if svc.request("GET", "/healthz").status == 200:
                return svc
        except OSError:
            pass
        if time.monotonic() > deadline:
            svc.stop()
            pytest.fail(f"/healthz did not answer within {START_TIMEOUT_S}s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(copy_service(tmp_path_factory.mktemp("hello") / "release"))
    yield svc
    assert svc.stop() == 0


def assert_json_with_security_headers(reply: Reply) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, name
    assert reply.headers.get_content_type() == "application/json"
    json.loads(reply.raw)  # every body, errors included, is JSON


# -- routes ------------------------------------------------------------------------------


def test_healthz_reports_the_version_file(service: Service) -> None:
    reply = service.request("GET", "/healthz")
    assert reply.status == 200
    version = (service.dir / "VERSION").read_text().strip()
    assert version == "1.0.0"
    assert reply.json() == {"status": "ok", "version": version}


def test_items_list_starts_with_the_seed_items(service: Service) -> None:
    reply = service.request("GET", "/api/items")
    assert reply.status == 200
    items = reply.json()["items"]
    assert len(items) >= 2
    assert all(set(item) == {"id", "name"} for item in items)
    assert [item["id"] for item in items[:2]] == [1, 2]
    assert all(isinstance(item["name"], str) and item["name"] for item in items)


def test_post_then_get_the_item(service: Service) -> None:
    created = service.post_json("/api/items", {"name": "  green tea  "})
    assert created.status == 201
    item = created.json()
    assert item["name"] == "green tea"
    assert isinstance(item["id"], int)
    assert created.headers["Location"] == f"/api/items/{item['id']}"

    fetched = service.request("GET", f"/api/items/{item['id']}")
    assert fetched.status == 200
    assert fetched.json() == item
    assert item in service.request("GET", "/api/items").json()["items"]


def test_post_accepts_a_json_content_type_with_charset(service: Service) -> None:
    reply = service.request(
        "POST",
        "/api/items",
        json.dumps({"name": "café"}).encode(),
        {"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201
    assert reply.json()["name"] == "café"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"name"',
        b"{}",
        b'{"name": 42}',
        b'{"name": null}',
        b'{"name": "   "}',
        json.dumps({"name": "x" * 201}).encode(),
        b'{"name": "\xff\xfe"}',
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "string",
        "no-name",
        "number",
        "null",
        "blank",
        "too-long",
        "bad-utf8",
    ],
)
def test_bad_body_is_a_400_json_error(service: Service, body: bytes) -> None:
    before = service.request("GET", "/api/items").json()["items"]
    reply = service.request("POST", "/api/items", body, {"Content-Type": "application/json"})
    assert reply.status == 400
    assert_json_with_security_headers(reply)
    assert reply.json()["error"] == "bad request"
    assert service.request("GET", "/api/items").json()["items"] == before


def test_body_over_64_kib_is_a_413(service: Service) -> None:
    # A body of exactly 64 KiB is read (and refused for its content); one byte more is not.
    at_limit = json.dumps({"name": "x" * (MAX_BODY - 12)}).encode()
    assert len(at_limit) == MAX_BODY
    reply = service.request("POST", "/api/items", at_limit, {"Content-Type": "application/json"})
    assert reply.status == 400

    over = json.dumps({"name": "x" * (MAX_BODY - 11)}).encode()
    assert len(over) == MAX_BODY + 1
    reply = service.request("POST", "/api/items", over, {"Content-Type": "application/json"})
    assert reply.status == 413
    assert_json_with_security_headers(reply)


def test_huge_declared_body_is_refused_without_reading_it(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as s:
        s.sendall(
            b"POST /api/items HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):  # the server answers, then closes
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 ")


def test_non_json_content_type_is_refused(service: Service) -> None:
    reply = service.request(
        "POST", "/api/items", b"name=tea", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert reply.status == 415
    assert_json_with_security_headers(reply)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/api",
        "/api/items/999999",
        "/api/items/0",
        "/api/items/abc",
        "/api/items/-1",
        "/api/items/99999999999999999999",
        "/api/items/1/extra",
        "/healthz/",
    ],
)
def test_unknown_paths_and_items_are_404_json(service: Service, path: str) -> None:
    reply = service.request("GET", path)
    assert reply.status == 404
    assert_json_with_security_headers(reply)
    assert reply.json()["error"] == "not found"


def test_wrong_method_is_405_with_allow(service: Service) -> None:
    reply = service.request("DELETE", "/api/items")
    assert reply.status == 405
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert_json_with_security_headers(reply)
    assert service.request("POST", "/healthz", b"{}").status == 405


def test_query_string_is_ignored_for_routing(service: Service) -> None:
    assert service.request("GET", "/healthz?probe=1").status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/healthz", None),
        ("GET", "/api/items", None),
        ("GET", "/api/items/1", None),
        ("POST", "/api/items", b'{"name": "headers"}'),
        ("POST", "/api/items", b"{"),
        ("GET", "/api/items/424242", None),
        ("GET", "/missing", None),
        ("PUT", "/healthz", b""),
    ],
)
def test_every_response_has_security_headers(
    service: Service, method: str, path: str, body: bytes | None
) -> None:
    reply = service.request(method, path, body, {"Content-Type": "application/json"})
    assert_json_with_security_headers(reply)
    assert reply.headers["Content-Length"] == str(len(reply.raw))


def test_concurrent_reads_and_writes(service: Service) -> None:
    def read(_: int) -> int:
        return service.request("GET", "/api/items").status

    def write(i: int) -> int:
        reply = service.post_json("/api/items", {"name": f"concurrent {i}"})
        assert reply.status == 201
        return int(reply.json()["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(read, range(64)))
        ids = list(pool.map(write, range(24)))
    assert statuses == [200] * 64
    assert len(set(ids)) == 24


def test_database_is_created_in_the_working_directory(service: Service) -> None:
    db_file = service.dir / "data" / "hello.db"
    assert db_file.is_file()
    with sqlite3.connect(db_file) as conn:
        # the query ashat's Database Connection check runs (ashat.toml [verify.database])
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        names = [r[0] for r in conn.execute("SELECT name FROM items WHERE id <= 2 ORDER BY id")]
    conn.close()
    assert len(names) == 2


def test_request_log_has_one_line_per_request(service: Service) -> None:
    marker = f"/log-marker-{time.monotonic_ns()}"
    assert service.request("GET", marker).status == 404
    assert service.request("GET", marker).status == 404
    deadline = time.monotonic() + 2
    while service.log.read_text().count(marker) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = [line for line in service.log.read_text().splitlines() if marker in line]
    assert len(lines) == 2
    assert all(f'"GET {marker} HTTP/1.1" 404' in line for line in lines)


# -- process lifecycle -------------------------------------------------------------------


def test_port_from_env_hello_db_and_sigterm(tmp_path: Path) -> None:
    service_dir = copy_service(tmp_path / "release")
    db_file = tmp_path / "elsewhere" / "hello.db"
    svc = start_service(service_dir, use_env_port=True, extra_env={"HELLO_DB": str(db_file)})
    try:
        assert svc.post_json("/api/items", {"name": "kept"}).status == 201
        assert [i["name"] for i in svc.request("GET", "/api/items").json()["items"]][-1] == "kept"
        # An idle keep-alive connection must not hold up the shutdown.
        idle = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=5)
        idle.request("GET", "/healthz")
        idle.getresponse().read()
        started = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=STOP_TIMEOUT_S) == 0
        assert time.monotonic() - started < STOP_TIMEOUT_S
        idle.close()
    finally:
        svc.stop()
    assert db_file.is_file()
    assert not (service_dir / "data").exists()
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM items WHERE name = 'kept'").fetchone() == (1,)
    conn.close()
    log = svc.log.read_text()
    assert "SIGTERM" in log
    assert "Traceback" not in log


def test_restart_keeps_data_and_does_not_reseed(tmp_path: Path) -> None:
    service_dir = copy_service(tmp_path / "release")
    first = start_service(service_dir)
    try:
        assert first.post_json("/api/items", {"name": "survivor"}).status == 201
    finally:
        assert first.stop() == 0
    second = start_service(service_dir)
    try:
        names = [i["name"] for i in second.request("GET", "/api/items").json()["items"]]
    finally:
        assert second.stop() == 0
    assert len(names) == 3
    assert names[-1] == "survivor"


def test_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    service_dir = copy_service(tmp_path / "release")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "serve.py", "--port", str(port)],
            cwd=service_dir,
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert res.returncode == 1
    assert "cannot start" in res.stderr


# -- what the agent's Module Load Test does ---------------------------------------------


def app_config() -> dict[str, Any]:
    with (SERVICE_SRC / "ashat.toml").open("rb") as f:
        return tomllib.load(f)


def test_ashat_toml_describes_the_service() -> None:
    config = app_config()
    assert config["app"]["run"] == "python3 serve.py --port {port}"
    assert config["app"]["health_path"] == "/healthz"
    assert config["verify"]["database"]["url"] == "sqlite:///hello.db"
    requirements = (SERVICE_SRC / "requirements.txt").read_text().splitlines()
    assert all(not line.strip() or line.lstrip().startswith("#") for line in requirements)


@pytest.mark.parametrize("module", app_config()["app"]["modules"])
def test_each_listed_module_imports_in_a_fresh_interpreter(tmp_path: Path, module: str) -> None:
    service_dir = copy_service(tmp_path / "release")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HELLO_DB")}
    res = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=service_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    # Importing has no side effects: no database is created until the service runs.
    assert not (service_dir / "data").exists()
