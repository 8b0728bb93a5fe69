"""Untrusted input against a real agent: every refusal is a 4xx with a one-line JSON error,
and leaves nothing behind — no blob, release, manifest or symlink changes, and ``tmp/``
stays empty (DESIGN §4: "refused with a clear error and leaves nothing behind")."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle import SigningKey, sign_manifest
from ashat.canonical import canonical_json
from ashat.transport.errors import AgentRejected, Unauthorized

AgentHandle = Any  # the fixtures' types (tests/ is not a package)
MAX_BLOB = 100_000  # bytes: --max-blob-bytes of the agent under attack
MANIFEST_LIMIT = 16 * 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def agent(module_agent_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> AgentHandle:
    """An agent with one active release (so links exist) and a second one staged."""
    agent = module_agent_factory(max_blob_bytes=MAX_BLOB)
    base = tmp_path_factory.mktemp("trees")
    for n in (1, 2):
        tree = base / f"base-{n}"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "a.txt").write_text(f"base {n}\n")
        (tree / "b.txt").write_text("shared\n")
        agent.stage(tree, f"base-{n}", sequence=n)
    with agent.client() as client:
        client.activate("base-1")
    return agent


@pytest.fixture
def http(agent: AgentHandle) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=agent.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def unchanged(agent: AgentHandle) -> Iterator[None]:
    before = agent.snapshot()
    yield
    assert agent.snapshot() == before


@pytest.fixture(scope="module")
def valid_manifest(agent: AgentHandle, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A valid signed manifest whose blobs are uploaded, but which is not staged."""
    tree = tmp_path_factory.mktemp("hostile") / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "file.txt").write_text("content of a hostile test\n")
    (tree / "other.txt").write_text("shared\n")
    signed, built = agent.build(tree, "hostile-1", sequence=9)
    with agent.client() as client:
        agent.upload(client, signed, built)
    return signed.to_bytes()


@pytest.fixture
def manifest(valid_manifest: bytes) -> dict[str, Any]:
    """:func:`valid_manifest` as a dict to tamper with."""
    return json.loads(valid_manifest)  # type: ignore[no-any-return]


def refused(resp: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    for needle in needles:
        assert needle in body["error"]
    return body


def post_manifest(http: httpx.Client, obj: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/releases", content=canonical_json(obj))


# -- manifests -----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/etc/passwd", "is absolute"),
        ("../escape.txt", "'..' component"),
        ("dir/../../escape.txt", "'..' component"),
        ("dir/./file.txt", "'.' or '..'"),
        ("dir\\file.txt", "backslash"),
        ("dir/\x1b[31mred", "control character"),
    ],
)
def test_unsafe_paths(http: httpx.Client, manifest: dict[str, Any], path: str, needle: str) -> None:
    manifest["files"][0]["path"] = path
    body = refused(post_manifest(http, manifest), 400, needle)
    assert body["kind"] == "unsafe_path"


def _symlink(path: str, target: str) -> dict[str, Any]:
    raw = target.encode()
    return {
        "path": path,
        "kind": "symlink",
        "target": target,
        "sha256": sha(raw),
        "size": len(raw),
        "mode": 0o777,
    }


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("links", "needle"),
    [
        ([("evil", "../../../etc/passwd")], "points outside the tree"),
        ([("evil", "/etc/passwd")], "points outside the tree"),
        ([("sub/up", ".."), ("x", "sub/up/..")], "leaves the tree"),
        ([("loop", "loop2"), ("loop2", "loop")], "leaves the tree (or loops)"),
    ],
)
def test_symlinks_leaving_the_tree(
    http: httpx.Client, manifest: dict[str, Any], links: list[tuple[str, str]], needle: str
) -> None:
    manifest["files"] += [_symlink(p, t) for p, t in links]
    body = refused(post_manifest(http, manifest), 400, needle)
    assert body["kind"] == "unsafe_path"


@pytest.mark.usefixtures("unchanged")
def test_a_path_under_a_symlink(http: httpx.Client, manifest: dict[str, Any]) -> None:
    manifest["files"].append(_symlink("link", "dir"))
    entry = dict(manifest["files"][1], path="link/smuggled.txt")
    manifest["files"].append(entry)
    refused(post_manifest(http, manifest), 400, "lies under symlink")


@pytest.mark.usefixtures("unchanged")
def test_duplicate_paths(http: httpx.Client, manifest: dict[str, Any]) -> None:
    manifest["files"].append(copy.deepcopy(manifest["files"][0]))
    body = refused(post_manifest(http, manifest), 400, "appears more than once")
    assert body["kind"] == "duplicate_path"
    case = copy.deepcopy(manifest["files"][0])
    case["path"] = case["path"].upper()
    manifest["files"][-1] = case
    refused(post_manifest(http, manifest), 400, "differ only in case")


@pytest.mark.usefixtures("unchanged")
def test_signatures(agent: AgentHandle, http: httpx.Client, manifest: dict[str, Any]) -> None:
    tampered = dict(manifest, description="not what was signed")
    body = refused(post_manifest(http, tampered), 400, "does not verify")
    assert body["kind"] == "bad_signature"

    unsigned = dict(manifest, signatures=[])
    refused(post_manifest(http, unsigned), 400, "no 'release' signature")

    from ashat.bundle import parse_manifest

    stranger = SigningKey.generate()
    foreign = sign_manifest(parse_manifest(canonical_json(unsigned)), stranger)
    body = refused(http.post("/v1/releases", content=foreign.to_bytes()), 400, "none trusted")
    assert body["kind"] == "unknown_key" and body["keyids"] == [stranger.keyid]

    corrupt = copy.deepcopy(manifest)
    corrupt["signatures"][0]["sig"] = "A" * 88
    refused(post_manifest(http, corrupt), 400, "does not verify")

    # The real client reports the agent's reason, not a generic failure.
    with agent.client() as client, pytest.raises(AgentRejected) as e:
        client.stage(canonical_json(tampered))
    assert e.value.status == 400 and "does not verify" in e.value.message


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"schema": 1}', b"\xff\xfe", b'{"a": 1, "a": 2}'],
    ids=["empty", "text", "array", "incomplete", "not-utf8", "duplicate-key"],
)
def test_malformed_manifests(http: httpx.Client, body: bytes) -> None:
    refused(http.post("/v1/releases", content=body), 400)


@pytest.mark.usefixtures("unchanged")
def test_bad_app_table(agent: AgentHandle, http: httpx.Client, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_text("x")
    for app, needle in [
        ({"run": ["python3"]}, "app.run must be a command string"),
        ({"run": "python3 'unbalanced"}, "cannot be split"),
        ({"run": "x", "health_path": "healthz"}, "health_path"),
        ({"run": "x", "health_timeout_s": -1}, "health_timeout_s"),
    ]:
        signed, _ = agent.build(tree, "bad-app", app=app)
        refused(http.post("/v1/releases", content=signed.to_bytes()), 400, needle)


@pytest.mark.usefixtures("unchanged")
def test_manifest_over_16_mib(agent: AgentHandle, http: httpx.Client) -> None:
    huge = b" " * (MANIFEST_LIMIT + 1)
    refused(http.post("/v1/releases", content=huge), 413, "over the limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(17):
            yield b" " * (1024 * 1024)

    refused(http.post("/v1/releases", content=chunks()), 413, "over the limit")
    with agent.client() as client, pytest.raises(AgentRejected) as e:
        client.stage(huge)
    assert e.value.status == 413


@pytest.mark.usefixtures("unchanged")
def test_missing_blobs_and_conflicting_manifest(
    agent: AgentHandle, http: httpx.Client, tmp_path: Path
) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "new-1.txt").write_text("never uploaded 1")
    (tree / "new-2.txt").write_text("never uploaded 2")
    (tree / "b.txt").write_text("shared\n")
    signed, _ = agent.build(tree, "needs-blobs")
    body = refused(http.post("/v1/releases", content=signed.to_bytes()), 409, "2 blobs missing")
    assert sorted(body["missing"]) == sorted(sha(f"never uploaded {n}".encode()) for n in (1, 2))

    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("shared\n")
    signed, _ = agent.build(other, "base-1")  # the id of the current release, other content
    refused(
        http.post("/v1/releases", content=signed.to_bytes()),
        409,
        "already staged with a different manifest",
    )


# -- blobs ----------------------------------------------------------------------------------


def pack(*entries: tuple[str, int, bytes]) -> bytes:
    return b"".join(f"{d} {n}\n".encode() + data for d, n, data in entries)


@pytest.mark.usefixtures("unchanged")
def test_put_blob_digest_mismatch(http: httpx.Client) -> None:
    claimed, sent = b"what the digest says", b"what was sent instead"
    body = refused(
        http.put(f"/v1/blobs/{sha(claimed)}", content=sent),
        400,
        f"blob {sha(claimed)}: digest mismatch (got {sha(sent)})",
    )
    assert body["kind"] == "digest_mismatch"


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("stream", "status", "needle"),
    [
        (
            pack((sha(b"good"), 4, b"good"), (sha(b"claimed"), 4, b"evil")),
            400,
            f"blob {sha(b'claimed')}: digest mismatch (got {sha(b'evil')})",
        ),
        (pack((sha(b"good"), 4, b"good")) + f"{sha(b'cut')} 10\nshort".encode(), 400, "truncated"),
        (pack((sha(b"good"), 4, b"good")) + b"not a header\n", 400, "bad header line"),
        (pack((sha(b"good"), 4, b"good")) + f"{sha(b'x')} 1".encode(), 400, "inside a header"),
        (f"{sha(b'x')} -1\n".encode(), 400, "bad header line"),
        (f"{sha(b'x').upper()} 1\nx".encode(), 400, "bad header line"),
        (b"x" * 200, 400, "longer than"),
        (f"{sha(b'big')} {MAX_BLOB + 1}\n".encode(), 413, "over the limit"),
        (
            pack((sha(b"good"), 4, b"good"), (sha(b"z" * (MAX_BLOB + 1)), MAX_BLOB + 1, b"z" * 9)),
            413,
            "over the limit",
        ),
    ],
    ids=[
        "mismatch",
        "truncated",
        "bad-header",
        "partial-header",
        "negative-size",
        "uppercase",
        "no-newline",
        "over-limit",
        "over-limit-second",
    ],
)
def test_bad_packs_store_nothing(
    http: httpx.Client, stream: bytes, status: int, needle: str
) -> None:
    refused(http.post("/v1/blobs/pack", content=stream), status, needle)


@pytest.mark.usefixtures("unchanged")
def test_blob_over_the_limit(http: httpx.Client) -> None:
    data = b"b" * (MAX_BLOB + 1)
    refused(http.put(f"/v1/blobs/{sha(data)}", content=data), 413, "over the limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(11):
            yield b"b" * 10_000

    refused(http.put(f"/v1/blobs/{sha(b'b' * 110_000)}", content=chunks()), 413, "larger than")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "digests",
    [["abc"], ["A" * 64], [sha(b"x") + "0"], [1], "not a list", [sha(b"x")] * 50_001],
    ids=["short", "upper", "long", "number", "string", "too-many"],
)
def test_missing_refuses_bad_digests(http: httpx.Client, digests: Any) -> None:
    refused(http.post("/v1/blobs/missing", json={"digests": digests}), 400)


@pytest.mark.usefixtures("unchanged")
def test_bad_json_bodies(http: httpx.Client) -> None:
    refused(http.post("/v1/blobs/missing", content=b"{"), 400, "not JSON")
    refused(http.post("/v1/blobs/missing", content=b"[]"), 400, "JSON object")
    refused(http.post("/v1/rollback", json={"to": 5}), 400, "'to'")


def test_blob_routes(http: httpx.Client) -> None:
    data = b"a blob sent on its own\n"
    d = sha(data)
    assert http.get(f"/v1/blobs/{d}").status_code == 404
    first = http.put(f"/v1/blobs/{d}", content=data)
    assert (first.status_code, first.json()) == (
        201,
        {"sha256": d, "size": len(data), "stored": True},
    )
    again = http.put(f"/v1/blobs/{d}", content=data)
    assert (again.status_code, again.json()["stored"]) == (200, False)
    got = http.get(f"/v1/blobs/{d}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    refused(http.get("/v1/blobs/not-a-digest"), 400, "invalid sha256")

    stream = pack((sha(b"p1"), 2, b"p1"), (sha(b"p2"), 2, b"p2"), (d, len(data), data))
    answer = http.post("/v1/blobs/pack", content=stream)
    assert answer.json() == {"stored": 2, "blobs": 3, "bytes": 4 + len(data)}
    assert http.post("/v1/blobs/missing", json={"digests": [sha(b"p2"), d, sha(b"?")]}).json() == {
        "missing": [sha(b"?")]
    }
    assert http.post("/v1/blobs/pack", content=b"").json() == {"stored": 0, "blobs": 0, "bytes": 0}


# -- auth, routes, operations refused --------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "Token {token}", "{token}"],
    ids=["missing", "wrong", "basic", "empty", "other-scheme", "no-scheme"],
)
def test_token_required(agent: AgentHandle, authorization: str | None) -> None:
    headers = {"Authorization": authorization.format(token=agent.token)} if authorization else {}
    routes = [
        ("POST", "/v1/blobs/missing", b'{"digests": []}'),
        ("PUT", f"/v1/blobs/{sha(b'x')}", b"x"),
        ("GET", f"/v1/blobs/{sha(b'x')}", None),
        ("POST", "/v1/blobs/pack", pack((sha(b"x"), 1, b"x"))),
        ("POST", "/v1/releases", b"{}"),
        ("GET", "/v1/releases", None),
        ("POST", "/v1/releases/base-2/activate", None),
        ("POST", "/v1/rollback", b"{}"),
        ("GET", "/v1/nowhere", None),
    ]
    with httpx.Client(base_url=agent.url, headers=headers, timeout=10) as http:
        for method, path, content in routes:
            resp = http.request(method, path, content=content)
            body = refused(resp, 401, "missing or wrong bearer token")
            assert agent.token not in json.dumps(body)
            assert resp.headers["www-authenticate"] == "Bearer"
        assert http.get("/v1/health").json()["current"] == "base-1"
        assert "ashat_agent_requests_total" in http.get("/metrics").text
    with agent.client(token="wrong-token", retries=0) as client, pytest.raises(Unauthorized):
        client.releases()


@pytest.mark.usefixtures("unchanged")
def test_operations_refused(http: httpx.Client) -> None:
    refused(http.post("/v1/releases/nope/activate"), 404, "'nope' is not staged")
    refused(http.post("/v1/releases/Bad..ID/activate"), 400, "invalid update id")
    refused(http.post("/v1/rollback", json={"to": "nope"}), 409, "not staged")
    refused(http.post("/v1/rollback", json={"from": "base-2"}), 409, "current release is base-1")
    refused(http.post("/v1/rollback", json={"to": "base-1"}), 409, "already the current")
    refused(http.post("/v1/rollback", json={}), 409, "no previous release")
    refused(http.get("/v1/nowhere"), 404, "no route GET /v1/nowhere")
    refused(http.delete("/v1/releases"), 405, "DELETE is not allowed")


def test_metrics_count_what_happened(http: httpx.Client) -> None:
    text = http.get("/metrics").text
    assert 'ashat_agent_info{role="public"} 1.0' in text
    assert "ashat_agent_releases_staged_total 2.0" in text
    assert 'ashat_agent_activations_total{result="ok"} 1.0' in text
    assert 'route="/v1/releases",status="409"' in text


def test_a_body_dripped_too_slowly_is_refused_408_and_leaves_nothing(agent_factory: Any) -> None:
    """Slow retrieval the other way round: a client that passed authentication sends a
    blob's bytes slower than --min-upload-rate after --upload-grace; the agent answers 408
    at once and keeps nothing of it."""
    import socket
    import time

    slow = agent_factory(args=("--min-upload-rate", "100000", "--upload-grace", "0.5"))
    content = b"s" * 1_000_000
    host, port = slow.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"PUT /v1/blobs/{sha(content)} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {slow.token}\r\nContent-Length: {len(content)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + content[:1000])
        answer = sock.makefile("rb").read()  # the agent answers, then closes
    took = time.monotonic() - started
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["kind"] == "too_slow" and "1000 bytes in" in body["error"]
    assert "--min-upload-rate" in body["error"]
    assert 0.5 <= took < 5
    assert list((slow.data / "tmp").iterdir()) == []
    assert not (slow.data / "blobs" / "sha256" / sha(content)[:2] / sha(content)).exists()
    with slow.client() as client:  # and it serves the next client as ever
        assert client.health()["status"] == "ok"
