"""``ashat agent`` itself: bad options are one line and exit 2, a busy port or a data
directory another agent uses exit 1 before anything changes, and SIGINT stops the agent and
its app cleanly (exit 0)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from test_hostile_app import bwrap_or_skip

from ashat.bundle.keys import generate_keypair
from ashat.cli.agent_cmd import agent as agent_command
from ashat.cli.output import AshatGroup

AgentFactory = Any  # the fixture's type (tests/ is not a package)
CLIENT_KEEPALIVE_S = 5  # httpx's keepalive_expiry, which every ashat client keeps


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    key, pub = generate_keypair("alpha", tmp_path)
    return {"token": token, "key": key, "pub": pub, "data": tmp_path / "data"}


def run(*args: str) -> tuple[int, str]:
    group = AshatGroup(name="ashat", commands=[agent_command])
    result = CliRunner().invoke(group, ["agent", *args])
    return result.exit_code, result.output


def base_args(files: dict[str, Path], **overrides: str) -> list[str]:
    opts = {
        "--role": "public",
        "--data": str(files["data"]),
        "--token-file": str(files["token"]),
        "--trust": str(files["pub"]),
        **overrides,
    }
    return [x for kv in opts.items() for x in kv]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"--role": "nope"}, "'nope' is not one of"),
        ({"--role": "mainframe"}, "--role mainframe needs --omega, --license, --trust-omega"),
        ({"--omega": "http://omega:8700"}, "--omega: only for --role mainframe"),
        ({"--keep": "1"}, "--keep"),
        ({"--max-blob-bytes": "0"}, "--max-blob-bytes"),
        ({"--listen": "nope"}, "--listen 'nope': expected HOST:PORT"),
        ({"--listen": "127.0.0.1:70000"}, "port must be 0-65535"),
        ({"--listen": "::1:8700"}, "IPv6 address in brackets"),
        ({"--tls-cert": "{pub}"}, "--tls-cert and --tls-key go together"),
        ({"--trust": "{token}"}, "expected one line 'ashat-ed25519"),
        ({"--trust": "{key}"}, "is a private key; pass the .pub file"),
        ({"--trust": "/nonexistent.pub"}, "does not exist"),
        ({"--tls-cert": "{pub}", "--tls-key": "{key}"}, "cannot load --tls-cert/--tls-key"),
        ({"--blob-offload": "nginx"}, "--blob-offload, --blob-mirror: only for --role omega"),
        ({"--blob-offload": "apache"}, "'apache' is not"),
        ({"--blob-mirror": "https://m"}, "--blob-offload, --blob-mirror: only for --role omega"),
        ({"--blob-cache": "http://cache"}, "--blob-cache: only for --role mainframe"),
        ({"--blob-host": "mirror.example.com"}, "--blob-host: only for --role mainframe"),
    ],
)
def test_bad_options_exit_2(files: dict[str, Path], overrides: dict[str, str], needle: str) -> None:
    names = {k: str(v) for k, v in files.items()}
    code, out = run(*base_args(files, **{k: v.format(**names) for k, v in overrides.items()}))
    assert code == 2, out
    assert needle in out
    assert not files["data"].exists()


@pytest.mark.parametrize("host", ["https://mirror.example.com", "mirror.example.com/x"])
def test_a_blob_host_that_is_not_a_host_exits_2_naming_it(
    files: dict[str, Path], tmp_path: Path, host: str
) -> None:
    import datetime as dt

    from ashat.bundle.keys import load_private_key
    from ashat.fleet.license import issue

    license_key, _ = generate_keypair("license", tmp_path)
    _, omega_pub = generate_keypair("omega", tmp_path)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    token, _ = issue(load_private_key(license_key), "mf-1", "ACME", expires)
    lic = tmp_path / "license"
    lic.write_text(token + "\n")
    lic.chmod(0o600)
    args = base_args(files, **{"--role": "mainframe", "--omega": "https://omega.example"})
    args += ["--license", str(lic), "--trust-omega", str(omega_pub), "--blob-host", host]
    code, out = run(*args)
    assert code == 2, out
    assert f"--blob-host {host!r} is not a host: expected HOST or HOST:PORT" in out, out
    assert not files["data"].exists()


CRED = (
    "[default]\naws_access_key_id = AKIDEXAMPLE1\naws_secret_access_key = wJalr-secret-EXAMPLEKEY"
)


@pytest.mark.parametrize(
    ("extra", "secret", "needle"),
    [
        (["--blob-mirror", "https://m/a"], None, "--blob-mirror and --blob-mirror-secret-file go"),
        (["--blob-mirror", "ftp://m"], "s" * 20, "--blob-mirror 'ftp://m': expected an http(s)"),
        (["--blob-mirror", "https://m"], "short", "16 or more printable characters"),
        (["--blob-mirror", "https://m", "--blob-offload", "nginx"], "s" * 20, "choose one way"),
        (["--blob-url-ttl", "5"], None, "5 is not in the range 10<=x<=86400"),
        (["--blob-mirror-endpoint", "https://r2"], None, "--blob-mirror-endpoint and"),
        (["--blob-mirror", "https://m", "--blob-mirror-region", "auto"], "s" * 20,
         "--blob-mirror-endpoint and --blob-mirror-region are for --blob-mirror s3://"),
        (["--blob-mirror", "s3://blobs", "--blob-mirror-endpoint", "https://k:pw-x@r2"], CRED,
         "no user or password in the URL"),
        (["--blob-mirror", "s3://Not_A_Bucket/x"], CRED, "'Not_A_Bucket' is not an S3 bucket"),
        (["--blob-mirror", "s3://blobs/a//b"], CRED, "the prefix must be"),
        (["--blob-mirror", "s3://blobs", "--blob-mirror-endpoint", "ftp://r2"], CRED,
         "--blob-mirror-endpoint 'ftp://r2': expected the service's http(s) URL"),
        (["--blob-mirror", "s3://blobs", "--blob-mirror-region", "EU West"], CRED,
         "--blob-mirror-region 'EU West': not a region name"),
        (["--blob-mirror", "s3://blobs"], "wJalr-secret-EXAMPLEKEY",
         "not an AWS credentials file"),
        (["--blob-mirror", "s3://blobs"], "[default]\naws_secret_access_key = wJalr-secret-E",
         "profile [default] needs aws_access_key_id and aws_secret_access_key"),
        (["--blob-mirror", "s3://blobs"], "[a]\nx = 1\n[b]\ny = 2", "several profiles"),
        (["--blob-mirror", "s3://blobs"], CRED + "\naws_session_token = wJalr-token-EXAMPLE",
         "temporary credentials"),
    ],
)  # fmt: skip
def test_bad_blob_serving_options_exit_2(
    files: dict[str, Path], tmp_path: Path, extra: list[str], secret: str | None, needle: str
) -> None:
    omega_key, omega_pub = generate_keypair("omega", tmp_path)
    args = [*base_args(files, **{"--role": "omega"}), "--omega-key", str(omega_key)]
    args += ["--license-trust", str(omega_pub), *extra]
    if secret is not None:
        path = tmp_path / "mirror.secret"
        path.write_text(secret + "\n")
        args += ["--blob-mirror-secret-file", str(path)]
    code, out = run(*args)
    assert code == 2, out
    assert needle in out
    assert "pw-x" not in out  # nor a password in a URL
    for line in (secret or "").splitlines():
        if "secret" in line or "token" in line:  # a secret is never echoed
            assert line.split("=")[-1].strip() not in out
    assert not files["data"].exists()


def test_the_upstream_file_may_not_be_where_the_app_writes(files: dict[str, Path]) -> None:
    shared = files["data"] / "shared"
    shared.mkdir(parents=True)
    upstream = ["--upstream-file", str(shared / "up.conf"), "--upstream-reload", "true"]
    code, out = run(*base_args(files), *upstream)
    assert code == 2 and "--upstream-file must be outside --data" in out
    assert not (shared / "up.conf").exists()


def test_token_and_app_env_errors_name_the_file_not_the_secret(
    files: dict[str, Path], tmp_path: Path
) -> None:
    files["token"].write_text("two words\n")
    code, out = run(*base_args(files))
    assert code == 2 and "must hold one token on one line" in out
    assert "two words" not in out

    files["token"].write_text("a-token\n")
    env = tmp_path / "app.env"
    env.write_text("# comment\nGOOD=1\nnot a pair super-secret-value\n")
    code, out = run(*base_args(files), "--app-env", str(env))
    assert code == 2 and "line 3" in out
    assert "super-secret-value" not in out


def test_missing_required_options() -> None:
    code, out = run()
    assert code == 2 and "Missing option '--role'" in out


def test_busy_port_and_busy_data_directory(
    agent_factory: AgentFactory, files: dict[str, Path]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = subprocess.run(
            [*agent_factory.command(), *base_args(files, **{"--listen": f"127.0.0.1:{port}"})],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 1, res.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert not files["data"].exists()

    running = agent_factory()
    res = subprocess.run(
        [*agent_factory.command(), *base_args(files, **{"--data": str(running.data)})],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1, res.stderr
    assert f"is in use by another agent (pid {running.proc.pid})" in res.stderr
    with running.client() as client:
        assert client.health()["status"] == "ok"


# The tiny app, whose SIGTERM handler takes a while to finish, as a server draining its
# connections does, and notes when it did.
SLOW_STOP = """
def stop(*_):
    note("stop")
    time.sleep(0.5)
    note("drained")
    server.shutdown()
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
"""


def test_an_app_stopped_gets_its_stop_timeout_to_finish_in_the_sandbox_too(
    agent_factory: AgentFactory, trees: Any
) -> None:
    """In the bwrap sandbox the app's process group holds bwrap's own process, which a
    SIGTERM ends at once: the agent took that for the app's exit and SIGKILLed the group,
    so the old release's app, switched away from, never finished what it was doing (a
    test saw its "stop" note missing under load). The agent now waits for every process
    of the group, up to its stop timeout (10 s)."""
    bwrap_or_skip()
    agent = agent_factory()  # --sandbox auto: bwrap, which works here
    for n in (1, 2):
        tree = trees.tiny(f"t{n}")
        app = (tree / "app.py").read_text().replace("import http", "import time, http", 1)
        marker = "signal.signal(signal.SIGTERM, stop)\n"
        (tree / "app.py").write_text(app.replace(marker, SLOW_STOP.lstrip()))
        agent.deploy(tree, f"slow-{n}", sequence=n, app=trees.tiny_app())
    assert agent.events()[:5] == [
        "start slow-1", "healthy slow-1", "start slow-2", "healthy slow-2", "stop slow-1"
    ]  # fmt: skip
    assert "drained slow-1" in agent.events()  # it finished before the switch answered
    assert agent.stop() == 0
    assert agent.events()[-2:] == ["stop slow-2", "drained slow-2"]


def test_sigint_stops_the_agent_and_its_app(agent_factory: AgentFactory, trees: Any) -> None:
    agent = agent_factory()
    answer = agent.deploy(trees.tiny("t"), "int-1", app=trees.tiny_app())
    assert agent.processes() == [answer["app"]["pid"]]
    assert agent.stop(signal.SIGINT) == 0  # stop() also checks that no app is left
    assert agent.events() == ["start int-1", "healthy int-1", "stop int-1"]


def get_twice_on_one_connection(url: str, pause_s: float) -> list[bytes]:
    """``GET /v1/health`` twice on one kept-alive connection, ``pause_s`` apart; the status
    line of each answer (b"" where the server had closed the connection)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    lines = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reader = sock.makefile("rb")
        for i in range(2):
            if i:
                time.sleep(pause_s)
            try:
                sock.sendall(request)
                status = reader.readline()
            except OSError:
                status = b""
            lines.append(status.strip())
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
    return lines


def test_servers_keep_an_idle_connection_longer_than_clients_do(
    agent_factory: AgentFactory, serve_process: Any, tmp_path: Path
) -> None:
    """httpx forgets an idle connection after 5 s: the servers must not close it first, or
    a client reusing it just then gets "Server disconnected without sending a response"."""
    assert httpx.Limits().keepalive_expiry == CLIENT_KEEPALIVE_S
    agent = agent_factory()
    root = tmp_path / "project"
    root.mkdir()
    (root / "ashat.toml").write_text("")
    serve = serve_process(root)
    pause = CLIENT_KEEPALIVE_S + 1
    urls = (agent.url, serve.url)
    with ThreadPoolExecutor() as pool:
        answers = pool.map(get_twice_on_one_connection, urls, (pause, pause))
        for url, lines in zip(urls, answers, strict=True):
            assert lines == [b"HTTP/1.1 200 OK"] * 2, url


def test_ashat_serve_refuses_a_dripped_upload_408(serve_process: Any, tmp_path: Path) -> None:
    """The same pace as the agents', on the API's blob upload: answered 408 with the option
    to change, the connection closed, nothing spooled."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "ashat.toml").write_text("")
    serve = serve_process(root, args=("--min-upload-rate", "100000", "--upload-grace", "0.5"))
    token = serve.add_user("dora", "deployer")
    host, port = serve.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /v1/blobs/pack HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"0" * 64 + b" 999900\n")
        answer = sock.makefile("rb").read()  # answered, then closed
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer[:300]
    assert b"ashat serve's --min-upload-rate" in rest
    spool = root / ".ashat" / "spool"
    assert not spool.exists() or [p for p in spool.rglob("*") if p.is_file()] == []
