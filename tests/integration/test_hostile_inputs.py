"""Hostile input, one kind per row: each is refused with a clear reason, and nothing is written.

Every row of :data:`KINDS` names a kind of hostile input, the party that receives it, the
attack, the answer expected (an HTTP status, an exit code, a check's verdict, or — for a
mainframe, which answers nobody — the status it reports to OMEGA) and words its reason must
contain. The one test runs the attack and checks both, and that the receiver's state is
what it was:

- ``public``: a real PUBLIC agent (blobs, releases, manifests, ``current``/``previous``,
  ``tmp/``);
- ``omega``: a real OMEGA (its agent state, and in ``fleet.db`` the rollouts, revocations
  and registered mainframes; a refused authentic license still refreshes its mainframe's
  ``last_seen``, as the protocol says, which is not compared);
- ``mainframe``: a real mainframe agent pulling from :class:`HostileServer`, a small HTTP
  server on loopback playing an attacker in OMEGA's place (on the network, or on a
  compromised OMEGA host): it replays or alters answers signed with OMEGA's key, and streams
  endless bodies. It is a hostile third party, not a stand-in for OMEGA;
- ``serve``: a real ``ashat serve`` (deployments, events, approvals, users, servers);
- ``cli``: ``deploy`` in a project whose PUBLIC and OMEGA are hostile servers
  answering endless bodies, OMEGA's dripped a byte at a time (the store and ``.ashat/``).

More cases of some kinds (every token scheme, every pack corruption, the API's roles) are in
test_agent_hostile.py, test_api.py, test_omega.py, test_fleet.py and
tests/unit/test_mainframe_verify.py; docs/SECURITY.md maps each attack to its test.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_server import NESTED, HostileServer

from ashat.bundle import SigningKey, parse_manifest, sign_manifest
from ashat.bundle.keys import generate_keypair, load_private_key
from ashat.canonical import canonical_json
from ashat.fleet.envelope import seal
from ashat.fleet.license import issue
from ashat.transport.client import AgentClient, BlobRef
from support import deploy, wait_for

AgentHandle = Any  # the fixtures' types (tests/ is not a package)
Outcome = tuple[int | str, str]  # (HTTP status, exit code, verdict or report status; reason)

MAX_BLOB = 100_000  # bytes: --max-blob-bytes of the PUBLIC under attack
MAX_FILES = 1_000  # --max-files of the PUBLIC under attack
NOW = dt.datetime.now(dt.UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def answer(resp: httpx.Response) -> Outcome:
    """An agent's or the API's refusal: the status and its one-line error."""
    body = resp.json()
    assert isinstance(body["error"], str) and "\n" not in body["error"], body
    return resp.status_code, body["error"]


SEP = "\0|\0"  # between the reasons of several attempts of one kind


def every(outcomes: list[Outcome]) -> Outcome:
    """Several attempts of one kind: they must all give the same status; their reasons are
    joined with :data:`SEP`, and the test checks each one."""
    codes = {code for code, _ in outcomes}
    assert len(codes) == 1, outcomes
    return outcomes[0][0], SEP.join(text for _, text in outcomes)


# -- the parties under attack ----------------------------------------------------------------


def tree_names(d: Path, *, files_only: bool = False) -> list[str]:
    if not d.exists():
        return []
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if not files_only or not p.is_dir())


def store_snapshot(root: Path) -> dict[str, Any]:
    """What a refused request must leave as it was in the control store at ``root``."""
    from ashat.store.db import Database, default_sqlite_url
    from ashat.store.store import Store

    s = Store(Database(default_sqlite_url(root)))
    try:
        return {
            "audit": s.db.query("SELECT seq, hash FROM audit_head"),
            "deployments": [(d.id, d.state.value, d.updated_at) for d in s.list(1000)],
            "approvals": s.db.query("SELECT * FROM approvals ORDER BY deployment_id"),
            "users": s.db.query("SELECT name, role FROM users ORDER BY name"),
            "servers": [x.to_json() for x in s.servers()],
            "leases": [le.deployment_id for le in s.leases()],
        }
    finally:
        s.close()


def record_deployments(root: Path, **paths: tuple[str, ...]) -> None:
    """Record deployments in the store at ``root`` as alice, each moved along its path of
    states (``x1=("pushed",)``)."""
    from ashat.store.db import Database, default_sqlite_url
    from ashat.store.store import Store
    from ashat.workflow.service import Workflow
    from ashat.workflow.states import State

    store = Store(Database(default_sqlite_url(root)))
    try:
        wf = Workflow(store, "alice")
        for update_id, path in paths.items():
            wf.create(update_id, f"release {update_id}")
            for state in path:
                wf.move(update_id, State(state))
    finally:
        store.close()


VERIFIED = ("pushed", "verifying", "verified")


@dataclass
class Public:
    agent: AgentHandle
    http: httpx.Client
    manifest: dict[str, Any]  # a valid signed manifest whose blobs are there, not staged

    def snapshot(self) -> Any:
        return self.agent.snapshot()

    def post_manifest(self, obj: dict[str, Any]) -> Outcome:
        return answer(self.http.post("/v1/releases", content=canonical_json(obj)))

    def tampered(self, edit: Callable[[dict[str, Any]], None]) -> Outcome:
        m = copy.deepcopy(self.manifest)
        edit(m)
        return self.post_manifest(m)


@pytest.fixture(scope="module")
def public(module_agent_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Public]:
    keys = tmp_path_factory.mktemp("public-keys")
    verifier, _ = generate_keypair("verifier", keys)
    agent = module_agent_factory(
        max_blob_bytes=MAX_BLOB,
        args=("--verifier-key", str(verifier), "--max-files", str(MAX_FILES)),
    )
    base = tmp_path_factory.mktemp("public-trees")
    tree = base / "base"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "file.txt").write_text("a release already running\n")
    agent.deploy(tree, "base-1", sequence=1)
    hostile = base / "hostile"
    (hostile / "dir").mkdir(parents=True)
    (hostile / "dir" / "file.txt").write_text("content of a hostile test\n")
    (hostile / "other.txt").write_text("other\n")
    signed, built = agent.build(hostile, "hostile-1", sequence=9)
    with agent.client() as client:
        agent.upload(client, signed, built)
    headers = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=agent.url, headers=headers, timeout=30) as http:
        yield Public(agent, http, json.loads(signed.to_bytes()))


@dataclass
class Omega:
    agent: AgentHandle
    http: httpx.Client
    licenses: dict[str, str]  # by what is wrong with them ("ok" for a good one)

    def snapshot(self) -> Any:
        db = sqlite3.connect(f"file:{self.agent.data / 'fleet.db'}?mode=ro", uri=True)
        try:
            fleet = {
                table: db.execute(f"SELECT {cols} FROM {table} ORDER BY 1").fetchall()
                for table, cols in {
                    "rollouts": "rollout_id, update_id, kind",
                    "rollout_targets": "rollout_id, mainframe_id, status",
                    "revocations": "license_id",
                    "approvals": "update_id, manifest_digest",
                    "mainframes": "mainframe_id, license_id, current, sequence",
                }.items()
            }
        finally:
            db.close()
        return {"agent": self.agent.snapshot(), "fleet": fleet}

    def poll(self, license_token: str | None, **params: str) -> Outcome:
        headers = {"Authorization": f"License {license_token}"} if license_token else {}
        query = {"current": "", "sequence": "", "wait": "0", **params}
        r = httpx.get(f"{self.agent.url}/v1/fleet/poll", params=query, headers=headers)
        return answer(r)


@pytest.fixture(scope="module")
def omega(module_agent_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Omega]:
    """OMEGA with release o-1 approved, current and rolled out on ``stable`` (so a license
    must cover that channel), o-5 approved, a mainframe that runs o-5, and mainframes whose
    licenses are revoked, expired and beta-only, each registered by a first (refused) poll."""
    agent = module_agent_factory(role="omega", poll_timeout=1)
    tree = tmp_path_factory.mktemp("omega-trees") / "o-1"
    tree.mkdir()
    (tree / "index.html").write_text("o-1\n")
    agent.release(tree, "o-1", sequence=1)
    ahead = tree.parent / "o-5"
    ahead.mkdir()
    (ahead / "index.html").write_text("o-5\n")
    signed, built = agent.build(ahead, "o-5", sequence=5)
    with agent.client() as client:  # staged and approved, not activated: o-1 stays current
        agent.upload(client, signed, built)
        client.stage(signed.to_bytes())
    key = agent.license_key
    long_ago = NOW - dt.timedelta(days=60)

    def lic(mainframe_id: str, **kw: Any) -> str:
        expires = kw.pop("expires", NOW + dt.timedelta(days=30))
        token, _ = issue(key, mainframe_id, "ACME", expires, now=long_ago, **kw)
        return str(token)

    licenses = {
        "ok": lic("mf-ahead"),
        "revoked": lic("mf-revoked", license_id="lic-revoked"),
        "expired": lic("mf-expired", expires=NOW - dt.timedelta(days=1)),
        "wrong_channel": lic("mf-beta", channels=("beta",)),
        "forged": str(issue(SigningKey.generate(), "mf-forger", "ACME", NOW + dt.timedelta(1))[0]),
    }
    headers = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=agent.url, headers=headers, timeout=30) as http:
        body = {"update_id": "o-1", "channel": "stable", "waves": [100], "wave_timeout_s": 5}
        r = http.post("/v1/fleet/rollouts", json=body)
        assert r.status_code == 201, r.text
        rollout_id = r.json()["rollout_id"]
        wait_for(
            lambda: http.get(f"/v1/fleet/rollouts/{rollout_id}").json()["state"] != "running",
            20,
            "the empty rollout to end",
        )
        assert http.post("/v1/fleet/revocations", json={"license_id": "lic-revoked"}).is_success
        record = {"update_id": "o-5", "sequence": 5, "approvers": [], "approved_at": "now"}
        assert http.post("/v1/releases/o-5/approve", json={"approval": record}).is_success
        o = Omega(agent, http, licenses)
        _poll_ok(o)  # registers mf-ahead, running o-5
        for what in ("revoked", "expired", "wrong_channel"):
            assert o.poll(licenses[what])[0] == 403
        yield o


def _poll_ok(o: Omega) -> None:
    r = httpx.get(
        f"{o.agent.url}/v1/fleet/poll",
        params={"current": "o-5", "sequence": "5", "wait": "0"},
        headers={"Authorization": f"License {o.licenses['ok']}"},
    )
    assert r.json() == {"directive": None}, r.text


@dataclass
class Mainframe:
    """A real mainframe agent whose OMEGA is a :class:`HostileServer` holding OMEGA's key
    (as one who stole it, or replays what OMEGA signed), and the keys to make its material."""

    handle: Any
    hostile: HostileServer
    token: str
    release_key: SigningKey
    omega_key: SigningKey
    tree: Path
    sequence_running: int = 5
    counter: list[int] = field(default_factory=lambda: [0])

    def snapshot(self) -> Any:
        data = self.handle.data
        return {
            "blobs": tree_names(data / "blobs", files_only=True),
            "releases": sorted(os.listdir(data / "releases")),
            "current": self.handle.current(),
            "tmp": tree_names(data / "tmp", files_only=True),
        }

    def manifest(
        self,
        update_id: str,
        sequence: int,
        *,
        content: bytes | None = None,
        approve: bool = True,
        release_key: SigningKey | None = None,
    ) -> Any:
        """A release signed by the release key (or ``release_key``), and by OMEGA's
        approval unless ``approve`` is False, whose one blob is ``content`` (by default one
        of its own)."""
        from ashat.bundle.manifest import SCHEMA, FileEntry, Manifest

        body = content if content is not None else f"release {update_id}\n".encode()
        m = Manifest(
            schema=SCHEMA,
            update_id=update_id,
            sequence=sequence,
            description="hostile",
            created_at="2030-01-01T00:00:00+00:00",
            source={"kind": "dir", "path": "/src"},
            app={},
            files=(FileEntry("index.html", sha(body), len(body), 0o644),),
        )
        m = sign_manifest(m, release_key or self.release_key)
        if approve:
            record = {"update_id": update_id, "sequence": sequence, "approvers": []}
            m = sign_manifest(m, self.omega_key, "approval", record)
        return m

    def directive(self, m: Any, *, key: SigningKey | None = None, **over: Any) -> dict[str, Any]:
        self.counter[0] += 1
        payload = {
            "mainframe_id": self.handle.mainframe_id,
            "rollout_id": f"ro-hostile-{self.counter[0]}",
            "action": "install",
            "update_id": m.update_id,
            "sequence": m.sequence,
            "manifest_digest": m.digest(),
            "issued_at": (NOW - dt.timedelta(seconds=5)).isoformat(),
            "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300)).isoformat(),
            **over,
        }
        token = seal("directive", payload, key or self.omega_key)
        return {"directive": token, "manifest": m.to_bytes().decode()}

    def attack(self, poll_answer: dict[str, Any]) -> Outcome:
        """Send ``poll_answer`` to the next poll; the report the mainframe sends back."""
        seen = len(self.hostile.reports)
        self.hostile.poll.append(poll_answer)
        wait_for(lambda: len(self.hostile.reports) > seen, 30, "the mainframe's report")
        report = self.hostile.reports[seen]
        # a refused directive's report carries what it claimed (forged ones included)
        assert report["rollout_id"] == json.loads(_payload(poll_answer["directive"]))["rollout_id"]
        return report["status"], str(report["reason"])

    def bearer(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.handle.url, headers=headers, timeout=30)


def _payload(token: str) -> str:
    import base64

    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


@pytest.fixture(scope="module")
def mainframe(
    module_mainframe_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mainframe]:
    """A mainframe with a bearer token, pulling from a hostile server, that runs mf-5
    (sequence 5, approved) — staged through its own bearer routes."""
    home = tmp_path_factory.mktemp("mainframe-keys")
    release_key_path, release_pub = generate_keypair("release", home)
    omega_key_path, omega_pub = generate_keypair("omega", home)
    license_key_path, _ = generate_keypair("license", home)
    token = "mainframe-bearer-" + "x" * 24
    token_file = home / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    lic, _ = issue(load_private_key(license_key_path), "mf-target", "ACME", NOW + dt.timedelta(9))
    hostile = HostileServer()
    omega_key = load_private_key(omega_key_path)
    hostile.quiet = lambda query: {  # as OMEGA signs it: the mainframe backs off otherwise
        "directive": None,
        "no_directive": seal("no_directive", quiet_payload(query), omega_key),
    }
    handle = module_mainframe_factory(
        omega=hostile.url,
        license_token=lic,
        mainframe_id="mf-target",
        trust=release_pub,
        trust_omega=omega_pub,
        poll_wait=1,
        token_file=token_file,
    )
    mf = Mainframe(
        handle,
        hostile,
        token,
        load_private_key(release_key_path),
        omega_key,
        home,
    )
    running = mf.manifest("mf-5", 5)
    content = b"release mf-5\n"
    with AgentClient(handle.url, token) as client:
        client.upload([BlobRef(sha(content), len(content), _file(home, content))])
        client.stage(running.to_bytes())
        client.activate("mf-5")
    assert handle.current() == "mf-5"
    yield mf
    hostile.close()


def _file(directory: Path, content: bytes) -> Path:
    path = directory / sha(content)
    path.write_bytes(content)
    return path


@dataclass
class Serve:
    handle: Any
    admin: str

    def snapshot(self) -> Any:
        return store_snapshot(self.handle.root)

    def call(self, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=self.handle.url, timeout=30) as c:
            return c.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="module")
def serve(module_serve_process: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("serve") / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text("")
    record_deployments(root, v1=VERIFIED)
    handle = module_serve_process(root)
    yield Serve(handle, handle.add_user("ada", "admin"))


@dataclass
class Cli:
    root: Path
    hostile: HostileServer  # PUBLIC: endless bodies
    slow: HostileServer  # OMEGA: endless bodies, dripped

    def snapshot(self) -> Any:
        files = tree_names(self.root / ".ashat")
        return {
            **store_snapshot(self.root),
            "files": [n for n in files if not n.endswith(("-wal", "-shm", "-journal"))],
        }

    def run(self, *args: str) -> Outcome:
        res = deploy(*args)
        return res.exit_code, res.output

    def push_tree_with(self, make: Callable[[Path], None]) -> Outcome:
        """``deploy push`` of the project with something hostile in it (removed afterwards)."""
        bad = self.root / "hostile-entry"
        make(bad)
        try:
            return self.run("push", "r-hostile", "hostile tree")
        finally:
            bad.unlink()

    def with_toml(self, toml: str, *args: str) -> Outcome:
        path = self.root / "ashat.toml"
        good = path.read_text()
        path.write_text(good + toml)
        try:
            return self.run(*args)
        finally:
            path.write_text(good)


@pytest.fixture(scope="module")
def cli(public: Public, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """A project (acting as alice, signing with PUBLIC's key) whose PUBLIC is a hostile
    server answering endless bodies, and OMEGA one dripping them; x1 is pushed (recorded),
    v1 verified."""
    root = tmp_path_factory.mktemp("cli") / "proj"
    root.mkdir()
    (root / "ashat.toml").write_text('[app]\nrun = "python3 -m http.server {port}"\n')
    (root / "index.html").write_text("hello\n")
    hostile = HostileServer(endless_everything=True)
    slow = HostileServer(endless_everything=True, drip_s=0.05)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("ASHAT_USER", "alice")
        mp.setenv("NO_COLOR", "1")
        mp.delenv("ASHAT_DB", raising=False)
        mp.setenv("ASHAT_SIGNING_KEY", str(public.agent.key_path))
        token = root.parent / "token"
        token.write_text("a-token-for-the-hostile-server\n")
        res = deploy("configure", "public", hostile.url, "Hostile", "--token-file", str(token))
        assert res.exit_code == 0, res.output
        res = deploy("configure", "omega", slow.url, "Slow", "--token-file", str(token))
        assert res.exit_code == 0, res.output
        record_deployments(root, x1=("pushed",), v1=VERIFIED)
        yield Cli(root, hostile, slow)
    hostile.close()
    slow.close()


# -- the attacks -----------------------------------------------------------------------------


def _symlink_entry(path: str, target: str) -> dict[str, Any]:
    raw = target.encode()
    return {"path": path, "kind": "symlink", "target": target, "sha256": sha(raw),
            "size": len(raw), "mode": 0o777}  # fmt: skip


def _set_path(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        m["files"][0]["path"] = path

    return edit


def public_unsigned(p: Public) -> Outcome:
    return p.tampered(lambda m: m.update(signatures=[]))


def public_unknown_key(p: Public) -> Outcome:
    m = copy.deepcopy(p.manifest)
    m["signatures"] = []
    foreign = sign_manifest(parse_manifest(canonical_json(m)), SigningKey.generate())
    return answer(p.http.post("/v1/releases", content=foreign.to_bytes()))


def public_wrong_signature(p: Public) -> Outcome:
    """Signed by the trusted key, then changed: the signature no longer covers it."""
    return p.tampered(lambda m: m.update(description="not what was signed"))


def public_duplicate(p: Public) -> Outcome:
    return p.tampered(lambda m: m["files"].append(copy.deepcopy(m["files"][0])))


def public_case_collision(p: Public) -> Outcome:
    def edit(m: dict[str, Any]) -> None:
        twin = copy.deepcopy(m["files"][0])
        twin["path"] = twin["path"].upper()
        m["files"].append(twin)

    return p.tampered(edit)


def public_symlink_escape(p: Public) -> Outcome:
    # each link alone stays inside; followed through each other they climb out
    return p.tampered(
        lambda m: m["files"].extend([_symlink_entry("up", "."), _symlink_entry("x", "up/..")])
    )


def public_device_entry(p: Public) -> Outcome:
    def edit(m: dict[str, Any]) -> None:
        m["files"][0]["kind"] = "chardev"

    return p.tampered(edit)


def public_special_mode(p: Public) -> Outcome:
    """A mode carrying file-type bits (S_IFCHR): only permission bits are allowed."""

    def edit(m: dict[str, Any]) -> None:
        m["files"][0]["mode"] = stat.S_IFCHR | 0o666

    return p.tampered(edit)


def public_manifest_too_big(p: Public) -> Outcome:
    return answer(p.http.post("/v1/releases", content=b" " * (16 * 1024 * 1024 + 1)))


def public_blob_too_big(p: Public) -> Outcome:
    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(11):
            yield b"b" * 10_000

    return answer(p.http.put(f"/v1/blobs/{sha(b'b' * 110_000)}", content=chunks()))


def public_json_too_big(p: Public) -> Outcome:
    body = b'{"digests": []' + b" " * (8 * 1024 * 1024) + b"}"
    return answer(p.http.post("/v1/blobs/missing", content=body))


def public_digest_mismatch(p: Public) -> Outcome:
    return answer(p.http.put(f"/v1/blobs/{sha(b'claimed')}", content=b"something else"))


def public_truncated_blob(p: Public) -> Outcome:
    stream = f"{sha(b'whole blob')} 10\n".encode() + b"whole"
    return answer(p.http.post("/v1/blobs/pack", content=stream))


def public_malformed_json(p: Public) -> Outcome:
    return every(
        [
            answer(p.http.post("/v1/releases", content=b'{"schema": 1,')),
            answer(p.http.post("/v1/blobs/missing", content=b"{")),
            answer(p.http.post("/v1/rollback", content=b"[1, 2")),
        ]
    )


def public_nested_json(p: Public) -> Outcome:
    return every(
        [
            answer(p.http.post("/v1/blobs/missing", content=NESTED)),
            answer(p.http.post("/v1/rollback", content=NESTED)),
            answer(p.http.post("/v1/releases", content=NESTED)),
        ]
    )


def public_check_injection(p: Public) -> Outcome:
    """Server-side checks take module names, never code. A check answers its verdict, not
    an HTTP error: ``error`` with the reason, and nothing is run."""
    outcomes = []
    for name in ("os; import shutil", "$(reboot)", "__import__('os').system('x')"):
        r = p.http.post("/v1/releases/base-1/checks/modules", json={"modules": [name]})
        assert r.status_code == 200, r.text
        outcomes.append((r.json()["status"], r.json()["summary"]))
    return every(outcomes)


def public_invalid_update_id(p: Public) -> Outcome:
    return every(
        [
            answer(p.http.post(f"/v1/releases/{bad}/activate"))
            for bad in ("Bad..ID", "-x", "a" * 65, "UPPER")
        ]
    )


PUBLIC_ROUTES = [
    ("POST", "/v1/blobs/missing", b'{"digests": []}'),
    ("PUT", f"/v1/blobs/{sha(b'x')}", b"x"),
    ("POST", "/v1/blobs/pack", f"{sha(b'x')} 1\nx".encode()),
    ("POST", "/v1/releases", b"{}"),
    ("POST", "/v1/releases/base-1/activate", None),
    ("POST", "/v1/rollback", b"{}"),
    ("POST", "/v1/releases/base-1/checks/modules", b"{}"),
    ("POST", "/v1/releases/base-1/attest", b"{}"),
    ("GET", f"/v1/blobs/{sha(b'x')}", None),
    ("GET", "/v1/releases", None),
]


def _wrong_tokens(url: str, routes: list[tuple[str, str, bytes | None]], right: str) -> Outcome:
    outcomes = []
    for auth in (None, "Bearer wrong", f"Bearer {right}x", f"License {right}", right):
        headers = {"Authorization": auth} if auth else {}
        for method, path, content in routes:
            resp = httpx.request(method, url + path, content=content, headers=headers)
            assert right not in resp.text
            outcomes.append(answer(resp))
    return every(outcomes)


ALL_PASSED = [
    {"name": n, "status": "passed", "summary": "ok"}
    for n in ("health", "modules", "api", "database", "performance", "security")
]


def public_attest(update_id: str, body: Any) -> Callable[[Public], Outcome]:
    """Ask PUBLIC's verifier key to sign what it did not verify."""

    def attack(p: Public) -> Outcome:
        return answer(p.http.post(f"/v1/releases/{update_id}/attest", json=body))

    return attack


def public_deep_path(p: Public) -> Outcome:
    """One file 1,200 directories deep: it once ended in a RecursionError, answered 500."""
    return p.tampered(_set_path("/".join(["d"] * 1200) + "/file.txt"))


def public_too_many_files(p: Public) -> Outcome:
    def edit(m: dict[str, Any]) -> None:
        entry = m["files"][0]
        m["files"] = [{**entry, "path": f"f{i:05d}.txt"} for i in range(MAX_FILES + 1)]

    return p.tampered(edit)


def public_wrong_token(p: Public) -> Outcome:
    return _wrong_tokens(p.agent.url, PUBLIC_ROUTES, p.agent.token)


def public_release_without_signature_file(p: Public) -> Outcome:
    """A manifest whose ``signatures`` are not even a list."""
    return p.tampered(lambda m: m.update(signatures="trust me"))


OMEGA_ROUTES = [
    ("POST", "/v1/releases/o-1/approve", b'{"approval": {}}'),
    ("POST", "/v1/fleet/rollouts", b'{"update_id": "o-1"}'),
    ("POST", "/v1/fleet/rollback", b'{"from": "o-1"}'),
    ("POST", "/v1/fleet/revocations", b'{"license_id": "lic-x"}'),
    ("GET", "/v1/fleet/mainframes", None),
    ("GET", "/v1/fleet/revocations", None),
    *[r for r in PUBLIC_ROUTES if r[0] != "GET" or not r[1].startswith("/v1/blobs/")],
]  # GET /v1/blobs/* also takes a license: with a bad one it is 403 (omega_license rows)


def omega_wrong_token(o: Omega) -> Outcome:
    return _wrong_tokens(o.agent.url, OMEGA_ROUTES, o.agent.token)


def omega_license_on_bearer_routes(o: Omega) -> Outcome:
    """A good license opens the mainframe routes only, never the control side's."""
    headers = {"Authorization": f"License {o.licenses['ok']}"}
    return every(
        [
            answer(httpx.request(m, o.agent.url + path, content=c, headers=headers))
            for m, path, c in OMEGA_ROUTES
            if not path.startswith("/v1/blobs/") or m != "GET"
        ]
    )


def omega_license(what: str) -> Callable[[Omega], Outcome]:
    def attack(o: Omega) -> Outcome:
        return o.poll(o.licenses[what])

    return attack


def omega_malformed_license(o: Omega) -> Outcome:
    # 12,000 characters, not more: a header over the 16 KiB uvicorn takes in pieces may be
    # refused by the HTTP layer before OMEGA reads it (tokens over 64 KiB:
    # tests/unit/test_license.py::test_malformed_tokens).
    return every([o.poll(t) for t in ("license.e30.AAAA", "not-a-token", "x" * 12_000)])


def omega_nested_license(o: Omega) -> Outcome:
    """A license whose payload is JSON nested deeper than the parser recurses."""
    import base64

    # 5,000 levels (the parser recurses 1,000 deep) keep the header under the 16 KiB an HTTP
    # server takes in pieces: a bigger one was refused by uvicorn before OMEGA saw it, when
    # it arrived in several reads on a loaded machine.
    body = base64.urlsafe_b64encode(b"[" * 5_000 + b"]" * 5_000).rstrip(b"=").decode()
    return o.poll(f"license.{body}.AAAA")


def omega_report_forged(o: Omega) -> Outcome:
    report = {"rollout_id": "ro-x", "update_id": "o-1", "status": "installed", "reason": None}
    headers = {"Authorization": f"License {o.licenses['forged']}"}
    return answer(httpx.post(f"{o.agent.url}/v1/fleet/report", json=report, headers=headers))


def omega_older_sequence(o: Omega) -> Outcome:
    """A rollout of sequence 1 while the fleet runs 5: replaying an old release is refused
    (going back needs a rollback, which OMEGA signs as such)."""
    body = {"update_id": "o-1", "channel": "stable", "waves": [50, 100], "wave_timeout_s": 9}
    return answer(o.http.post("/v1/fleet/rollouts", json=body))


def omega_approval_for_another_release(o: Omega) -> Outcome:
    record = {"update_id": "other", "sequence": 1, "approvers": [], "approved_at": "x"}
    return answer(o.http.post("/v1/releases/o-1/approve", json={"approval": record}))


def omega_malformed_poll(o: Omega) -> Outcome:
    return every(
        [
            o.poll(o.licenses["ok"], current="../etc"),
            o.poll(o.licenses["ok"], sequence="-1"),
            o.poll(o.licenses["ok"], wait="1e9"),
        ]
    )


def mf_unapproved(mf: Mainframe) -> Outcome:
    return mf.attack(mf.directive(mf.manifest("mf-6", 6, approve=False)))


def mf_unapproved_by_bearer(mf: Mainframe) -> Outcome:
    """Staged by hand through the mainframe's own bearer route: refused all the same."""
    with mf.bearer(mf.token) as http:
        return answer(http.post("/v1/releases", content=mf.manifest("mf-7", 7, approve=False)
                                .to_bytes()))  # fmt: skip


def mf_replayed_older(mf: Mainframe) -> Outcome:
    return mf.attack(mf.directive(mf.manifest("mf-3", 3)))


def mf_frozen(mf: Mainframe) -> Outcome:
    """An answer OMEGA signed 10 minutes ago, replayed now (it expired 5 minutes ago)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    m = mf.manifest("mf-8", 8)
    return mf.attack(
        mf.directive(
            m,
            issued_at=past.isoformat(),
            expires_at=(past + dt.timedelta(seconds=300)).isoformat(),
        )
    )


def quiet_payload(query: dict[str, str], **over: Any) -> dict[str, Any]:
    """What OMEGA signs for "no directive" to a poll whose query was ``query``."""
    return {
        "mainframe_id": "mf-target",
        "nonce": query.get("nonce", ""),
        "current": query.get("current") or None,
        "sequence": int(query.get("sequence") or 0),
        "issued_at": NOW.isoformat(),
        **over,
    }


def _quiet_refused(mf: Mainframe, answer: Any) -> Outcome:
    """Send ``answer`` (no directive; or a function of the poll's query that makes it) to
    the next poll; the error the mainframe notes."""
    fleet = mf.handle.health
    wait_for(lambda: fleet()["fleet"]["last_error"] is None, 30, "a signed answer first")
    mf.hostile.poll.append(answer)

    def noted() -> str | None:
        error = fleet()["fleet"]["last_error"]
        return error if error and "'no directive'" in error else None

    return "error", str(wait_for(noted, 30, "the answer 'no directive' to be refused"))


def mf_freeze_unsigned(mf: Mainframe) -> Outcome:
    """An attacker on the network answers "nothing new" for ever (TUF's indefinite freeze)."""
    return _quiet_refused(mf, {"directive": None})


def mf_freeze_replayed(mf: Mainframe) -> Outcome:
    """OMEGA's genuine "nothing new", recorded from an earlier poll and replayed."""
    old = quiet_payload({"nonce": "r" * 24, "current": "mf-5", "sequence": "5"})
    return _quiet_refused(
        mf, {"directive": None, "no_directive": seal("no_directive", old, mf.omega_key)}
    )


def mf_freeze_altered_poll(mf: Mainframe) -> Outcome:
    """An attacker rewrites the poll to claim the release a rollout sends (OMEGA would count
    it installed) and passes on OMEGA's genuine answer to that poll."""
    return _quiet_refused(
        mf,
        lambda query: {
            "directive": None,
            "no_directive": seal(
                "no_directive", quiet_payload(query, current="mf-9", sequence=9), mf.omega_key
            ),
        },
    )


def mf_forged_directive(mf: Mainframe) -> Outcome:
    return mf.attack(mf.directive(mf.manifest("mf-9", 9), key=SigningKey.generate()))


def mf_other_mainframe(mf: Mainframe) -> Outcome:
    return mf.attack(mf.directive(mf.manifest("mf-10", 10), mainframe_id="mf-somebody-else"))


def mf_mix_and_match(mf: Mainframe) -> Outcome:
    """A genuine directive for one release, sent with another genuine release's manifest."""
    d = mf.directive(mf.manifest("mf-11", 11))
    d["manifest"] = mf.manifest("mf-12", 12).to_bytes().decode()
    return mf.attack(d)


def mf_unknown_release_key(mf: Mainframe) -> Outcome:
    """Approved by OMEGA's key, but built and signed by someone the mainframe does not
    trust for releases: what a thief of OMEGA's key alone could send."""
    m = mf.manifest("mf-13", 13, release_key=SigningKey.generate())
    return mf.attack(mf.directive(m))


def mf_endless_blob(mf: Mainframe) -> Outcome:
    """The blob comes as an endless body: the mainframe keeps only its size, finds the
    digest wrong, fetches once more, and gives up — its store and tmp/ as before."""
    return mf.attack(mf.directive(mf.manifest("mf-14", 14, content=b"fourteen\n")))


def mf_endless_poll(mf: Mainframe) -> Outcome:
    before = mf.hostile.endless_bytes
    mf.hostile.poll.append(HostileServer.ENDLESS)

    def noted() -> str | None:
        error = mf.handle.health()["fleet"]["last_error"]
        return error if error and "over" in error else None

    error = wait_for(noted, 30, "the endless poll answer to be refused")
    sent = mf.hostile.endless_bytes - before
    assert sent < 64 * 1024 * 1024, f"read {sent} bytes of an endless answer"
    return "error", str(error)


def mf_wrong_token(mf: Mainframe) -> Outcome:
    return _wrong_tokens(mf.handle.url, PUBLIC_ROUTES, mf.token)


def _api_mutating_routes() -> list[tuple[str, str]]:
    from ashat.api.routes import ENDPOINTS

    fill = {"{update_id}": "v1", "{tier}": "public", "{name}": "ada"}
    out = []
    for e in ENDPOINTS:
        if e.method == "GET":
            continue
        path = e.path
        for k, v in fill.items():
            path = path.replace(k, v)
        out.append((e.method, path))
    return out


def serve_wrong_token(s: Serve) -> Outcome:
    routes = _api_mutating_routes()
    assert len(routes) >= 8, routes
    outcomes = []
    for token in (None, "not-a-token", "ashat_" + "A" * 43, s.admin + "x"):
        for method, path in routes:
            resp = s.call(method, path, token, json={})
            assert resp.headers.get("www-authenticate") == "Bearer"
            outcomes.append(answer(resp))
    # the admin's own token in a malformed header: refused, as the agents refuse it (one
    # parser of Authorization, http/middleware.credentials; before, whitespace was stripped)
    admin = s.admin.encode()
    for raw in (b"Bearer \xa0" + admin, b"Bearer " + admin + b"\x85", b"Bearer\t" + admin):
        with httpx.Client(base_url=s.handle.url, timeout=30) as c:
            resp = c.post("/v1/deployments/v1/cancel", headers={"Authorization": raw}, json={})
        outcomes.append(answer(resp))
    return every(outcomes)


def serve_malformed_json(s: Serve) -> Outcome:
    return every(
        [
            answer(s.call("POST", "/v1/deployments/v1/cancel", s.admin, content=b"{")),
            answer(s.call("POST", "/v1/deployments/v1/approve", s.admin, content=b"[]")),
            answer(s.call("POST", "/v1/users", s.admin, json={"name": "eve", "role": 7})),
        ]
    )


def serve_nested_json(s: Serve) -> Outcome:
    deep = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB body limit
    return answer(s.call("POST", "/v1/deployments/v1/cancel", s.admin, content=deep))


def serve_json_too_big(s: Serve) -> Outcome:
    body = json.dumps({"reason": "x" * 70_000}).encode()
    return answer(s.call("POST", "/v1/deployments/v1/cancel", s.admin, content=body))


def serve_invalid_update_id(s: Serve) -> Outcome:
    return every(
        [
            answer(s.call("POST", f"/v1/deployments/{bad}/cancel", s.admin, json={}))
            for bad in ("Bad..ID", "-x", "a" * 65)
        ]
    )


def serve_dashboard_without_session(s: Serve) -> Outcome:
    forged = {"ashat_session": "e30.AAAA"}  # not a session the server signed
    with httpx.Client(base_url=s.handle.url, timeout=30, cookies=forged) as c:
        r = c.post("/deployments/v1/approve", data={"csrf": "x"})
    assert r.status_code == 401
    return r.status_code, r.text


def cli_bad_urls(c: Cli) -> Outcome:
    urls = ["ftp://h", "http://user:pw@h", "http://h?x=1", "http://h:99999", "http://",
            "javascript:alert(1)", "http://h/\u202e", "http://h:0"]  # fmt: skip
    return every([c.run("configure", "omega", u, "Evil") for u in urls])


def cli_invalid_update_id(c: Cli) -> Outcome:
    return every(
        [c.run("push", bad, "x") for bad in ("../etc", "Bad ID", "a" * 65)]
        + [c.run("cancel", "..")]
    )


def cli_fifo(c: Cli) -> Outcome:
    return c.push_tree_with(os.mkfifo)


def cli_device(c: Cli) -> Outcome:
    return c.push_tree_with(lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)))


def cli_symlink_escape(c: Cli) -> Outcome:
    return c.push_tree_with(lambda p: p.symlink_to("/etc/passwd"))


def cli_endless_files(c: Cli) -> Outcome:
    """A token file or CA certificate that never ends (``/dev/zero``) is read only up to its
    limit: it once ran the CLI out of memory."""
    return every(
        [
            c.run("configure", "omega", "http://h", "Zero", "--token-file", "/dev/zero"),
            c.run("configure", "omega", "http://h", "Zero", "--ca-cert", "/dev/zero"),
        ]
    )


def cli_huge_numbers(c: Cli) -> Outcome:
    return every([c.run("history", "--limit", str(10**20)), c.run("history", "--limit", "0")])


def cli_license_far_future(c: Cli) -> Outcome:
    """``ashat license issue --expires`` past what a date can hold: refused, no file."""
    from click.testing import CliRunner

    from ashat.bundle.keys import generate_keypair
    from ashat.cli.ashat import cli as ashat_cli

    keys = c.root.parent / "license-keys"
    if not (keys / "lic.key").exists():
        keys.mkdir(exist_ok=True)
        generate_keypair("lic", keys)
    out = c.root.parent / "far.license"
    outcomes = []
    for expires in ("9999-12-31", "9999-12-31T23:00:00-05:00"):
        res = CliRunner().invoke(
            ashat_cli,
            ["license", "issue", "--key", str(keys / "lic.key"), "--mainframe", "mf-1",
             "--customer", "ACME", "--out", str(out), "--expires", expires],
            prog_name="ashat", catch_exceptions=False,
        )  # fmt: skip
        assert not out.exists()
        outcomes.append((res.exit_code, res.output))
    return every(outcomes)


def cli_git_option_injection(c: Cli) -> Outcome:
    """A ref that git would read as an option (``--output=...`` writes a file)."""
    outcome = c.run("push", "r-git", "x", "--git=--output=/tmp/ashat-pwned")
    assert not Path("/tmp/ashat-pwned").exists()
    return outcome


def cli_ignore_file_symlink(c: Cli) -> Outcome:
    """``.ashatignore`` as a symlink could make the build read any file: refused."""
    link = c.root / ".ashatignore"
    link.symlink_to("/etc/passwd")
    try:
        return c.run("push", "r-ignore", "x")
    finally:
        link.unlink()


def cli_toml_wrong_types(c: Cli) -> Outcome:
    return every(
        [
            c.with_toml('[approval]\nrequired = "two"\n', "approve", "v1"),
            c.with_toml("[distribution]\nwaves = 100\n", "approve", "v1", "--as", "bob"),
        ]
    )


def cli_toml_app_wrong_type(c: Cli) -> Outcome:
    path = c.root / "ashat.toml"
    good = path.read_text()
    path.write_text("[app]\nrun = 3\n")
    try:
        return c.run("push", "r-toml", "x")
    finally:
        path.write_text(good)


def cli_slow_omega(c: Cli) -> Outcome:
    """A server that drips its answer never trips the read timeout; the whole answer has a
    deadline (here 1 s instead of 120, to keep the test short)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ashat.transport.outgoing.TOTAL_S", 1.0)
        code, output = c.run("servers", "--check")
    assert "OMEGA" in output
    return code, output


def cli_nested_answer(c: Cli) -> Outcome:
    """A server answering JSON nested deeper than the parser recurses: refused as not JSON,
    never a traceback."""
    from ashat.errors import AshatError

    with AgentClient(c.hostile.url, "token", retries=0) as client:
        try:
            client.request("GET", "/nested")
        except AshatError as e:
            return e.exit_code, e.message
    raise AssertionError("a nested answer was accepted")


def cli_toml_nested(c: Cli) -> Outcome:
    return c.with_toml("[verify]\nx = " + "[" * 5000 + "]" * 5000 + "\n", "verify", "x1")


def cli_endless_relayed_blob(c: Cli) -> Outcome:
    """``deploy approve`` relays blobs from PUBLIC to OMEGA through this machine: PUBLIC may
    send no more than the signed manifest's size, and nothing is left on disk."""
    from ashat.errors import AshatError

    dest = c.root.parent / "relayed-blob"
    with AgentClient(c.hostile.url, "token", retries=0) as client:
        try:
            client.download(sha(b"ten bytes!"), dest, 10)
        except AshatError as e:
            assert not dest.exists()
            return e.exit_code, e.message
    raise AssertionError("an endless blob was accepted")


def cli_endless_public(c: Cli) -> Outcome:
    before = c.hostile.endless_bytes
    outcome = c.run("verify", "x1")
    assert c.hostile.endless_bytes - before < 64 * 1024 * 1024
    return outcome


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    target: str  # the fixture under attack
    attack: Callable[[Any], Outcome]
    code: int | str  # HTTP status, exit code, a status a mainframe reports, a check verdict
    reason: str | tuple[str, ...]  # words the reason must contain (one of them)


KINDS = [
    # PUBLIC: manifests (DESIGN §4: refused with a clear error, leaving nothing behind)
    Kind("path-traversal", "public", lambda p: p.tampered(_set_path("a/../../etc/x")), 400,
         "'..' component"),
    Kind("absolute-path", "public", lambda p: p.tampered(_set_path("/etc/passwd")), 400,
         "is absolute"),
    Kind("symlink-escape", "public", public_symlink_escape, 400, "leaves the tree"),
    Kind("device-file-entry", "public", public_device_entry, 400,
         "kind must be 'file' or 'symlink'"),
    Kind("device-mode-bits", "public", public_special_mode, 400, "mode"),
    Kind("duplicate-path", "public", public_duplicate, 400, "appears more than once"),
    Kind("case-colliding-paths", "public", public_case_collision, 400, "differ only in case"),
    Kind("oversized-manifest", "public", public_manifest_too_big, 413, "over the limit"),
    Kind("path-too-deep", "public", public_deep_path, 400, "--max-path-depth"),
    Kind("too-many-files", "public", public_too_many_files, 400, "--max-files"),
    Kind("oversized-blob", "public", public_blob_too_big, 413, "larger than"),
    Kind("oversized-json-body", "public", public_json_too_big, 413, "over the limit"),
    Kind("digest-mismatch", "public", public_digest_mismatch, 400, "digest mismatch"),
    Kind("truncated-blob", "public", public_truncated_blob, 400, "truncated"),
    Kind("unsigned-manifest", "public", public_unsigned, 400, "no 'release' signature"),
    Kind("wrongly-signed-manifest", "public", public_wrong_signature, 400, "does not verify"),
    Kind("unknown-key-manifest", "public", public_unknown_key, 400, "none trusted"),
    Kind("malformed-signatures", "public", public_release_without_signature_file, 400,
         "signatures"),
    Kind("malformed-json", "public", public_malformed_json, 400, "JSON"),
    Kind("deeply-nested-json", "public", public_nested_json, 400, "JSON"),
    Kind("invalid-update-id-agent", "public", public_invalid_update_id, 400,
         "invalid update id"),
    Kind("check-injection", "public", public_check_injection, "error",
         "is not a dotted module name"),
    Kind("token-public", "public", public_wrong_token, 401, "missing or wrong bearer token"),
    # PUBLIC's verifier key (issue 14): it signs only what it runs, as it saw it
    Kind("attest-a-release-not-running", "public",
         public_attest("hostile-1", {"results": ALL_PASSED, "required": []}), 404,
         "signs only what it runs"),
    Kind("attest-server-side-checks-never-run", "public",
         public_attest("base-1", {"results": ALL_PASSED[3:4], "required": []}), 409,
         "database check is reported passed, but PUBLIC did not run it"),
    Kind("attest-malformed-results", "public",
         public_attest("base-1", {"results": "all passed", "required": []}), 400,
         "'results' must be a list"),
    # OMEGA
    Kind("token-omega", "omega", omega_wrong_token, 401, "missing or wrong bearer token"),
    Kind("license-on-bearer-routes", "omega", omega_license_on_bearer_routes, 401,
         "bearer token"),
    Kind("forged-license", "omega", omega_license("forged"), 403, "not trusted"),
    Kind("expired-license", "omega", omega_license("expired"), 403, "expired"),
    Kind("revoked-license", "omega", omega_license("revoked"), 403, "revoked"),
    Kind("wrong-channel-license", "omega", omega_license("wrong_channel"), 403,
         "not 'stable'"),
    Kind("malformed-license", "omega", omega_malformed_license, 403, "token"),
    Kind("deeply-nested-license", "omega", omega_nested_license, 403, "not valid base64 JSON"),
    Kind("missing-license", "omega", lambda o: o.poll(None), 401, "'Authorization: License"),
    Kind("report-with-forged-license", "omega", omega_report_forged, 403, "not trusted"),
    Kind("replayed-older-sequence-omega", "omega", omega_older_sequence, 409,
         "lower than the 5 the fleet already runs"),
    Kind("approval-record-of-another-release", "omega", omega_approval_for_another_release,
         400, "the approval record is for 'other'"),
    Kind("malformed-poll-query", "omega", omega_malformed_poll, 400, "must be"),
    # a mainframe, pulling from a hostile server holding OMEGA's key or replaying it
    Kind("release-without-approval-polled", "mainframe", mf_unapproved, "failed",
         "approval_signature: "),
    Kind("release-without-approval-bearer", "mainframe", mf_unapproved_by_bearer, 400,
         "no 'approval' signature"),
    Kind("replayed-older-sequence", "mainframe", mf_replayed_older, "failed", "downgrade: "),
    Kind("freeze-expired-answer", "mainframe", mf_frozen, "failed", "expired: "),
    Kind("freeze-unsigned-no-directive", "mainframe", mf_freeze_unsigned, "error",
         "not signed by OMEGA"),
    Kind("freeze-replayed-no-directive", "mainframe", mf_freeze_replayed, "error",
         "answers another poll"),
    Kind("freeze-altered-poll", "mainframe", mf_freeze_altered_poll, "error",
         "the poll was altered on its way"),
    Kind("forged-directive", "mainframe", mf_forged_directive, "failed", "forged: "),
    Kind("directive-for-another-mainframe", "mainframe", mf_other_mainframe, "failed",
         "wrong_mainframe: "),
    Kind("mix-and-match", "mainframe", mf_mix_and_match, "failed", "digest_mismatch: "),
    Kind("arbitrary-software-unknown-key", "mainframe", mf_unknown_release_key, "failed",
         "release_signature: "),
    Kind("endless-blob-body", "mainframe", mf_endless_blob, "failed", "wrong both times"),
    Kind("endless-poll-body", "mainframe", mf_endless_poll, "error", "over"),
    Kind("token-mainframe", "mainframe", mf_wrong_token, 401, "missing or wrong bearer token"),
    # ashat serve
    Kind("token-serve-api", "serve", serve_wrong_token, 401,
         ("needs 'Authorization: Bearer <token>'", "unknown or replaced token")),
    Kind("malformed-json-api", "serve", serve_malformed_json, 400,
         ("the request body is not JSON", "invalid request body")),
    Kind("oversized-json-api", "serve", serve_json_too_big, 413, "over the limit"),
    Kind("deeply-nested-json-api", "serve", serve_nested_json, 400, "not JSON"),
    Kind("invalid-update-id-api", "serve", serve_invalid_update_id, 400, "invalid update id"),
    Kind("dashboard-without-session", "serve", serve_dashboard_without_session, 401,
         "sign in first"),
    # deploy
    Kind("invalid-url-configure", "cli", cli_bad_urls, 2, "invalid server URL"),
    Kind("invalid-update-id-cli", "cli", cli_invalid_update_id, 2, "invalid update id"),
    Kind("fifo-in-tree", "cli", cli_fifo, 2, "is a fifo"),
    Kind("device-file-in-tree", "cli", cli_device, 2, "is a device"),
    Kind("symlink-escape-in-tree", "cli", cli_symlink_escape, 2, "outside"),
    Kind("endless-local-files", "cli", cli_endless_files, 2, "is larger than"),
    Kind("huge-number", "cli", cli_huge_numbers, 2, "--limit must be 1-10000"),
    Kind("license-expiry-overflow", "cli", cli_license_far_future, 2, "past the year 9999"),
    Kind("git-option-injection", "cli", cli_git_option_injection, 2, "invalid git ref"),
    Kind("ignore-file-symlink", "cli", cli_ignore_file_symlink, 2, "must be a regular file"),
    Kind("toml-wrong-types", "cli", cli_toml_wrong_types, 2, "must be"),
    Kind("toml-app-wrong-type", "cli", cli_toml_app_wrong_type, 2, "[app].run must be a string"),
    Kind("toml-nested-too-deep", "cli", cli_toml_nested, 2, "nested too deeply"),
    Kind("endless-body-from-public", "cli", cli_endless_public, 4, "more than"),
    Kind("endless-relayed-blob", "cli", cli_endless_relayed_blob, 4,
         "sent more than the blob's 10 bytes"),
    Kind("deeply-nested-answer", "cli", cli_nested_answer, 4, "JSON"),
    Kind("slow-retrieval-control-side", "cli", cli_slow_omega, 4, "took more than 1s"),
]  # fmt: skip


def test_the_table_holds_at_least_30_kinds() -> None:
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names)) >= 30


def test_a_claimed_sequence_cannot_fast_forward_the_fleet(omega: Omega) -> None:
    """A licensed mainframe claiming to run an unknown release of sequence 2**53 (a
    fast-forward) does not raise the fleet's sequence: only releases approved on OMEGA
    count, so later rollouts are not blocked."""
    token, _ = issue(omega.agent.license_key, "mf-liar", "ACME", NOW + dt.timedelta(days=1))
    r = httpx.get(
        f"{omega.agent.url}/v1/fleet/poll",
        params={"current": "x-forged", "sequence": str(2**53), "wait": "0"},
        headers={"Authorization": f"License {token}"},
    )
    assert r.json() == {"directive": None}, r.text
    code, reason = omega_older_sequence(omega)
    assert code == 409 and "lower than the 5 the fleet already runs" in reason


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_hostile_input_is_refused_and_writes_nothing(
    kind: Kind, request: pytest.FixtureRequest
) -> None:
    target = request.getfixturevalue(kind.target)
    before = target.snapshot()
    code, reason = kind.attack(target)
    assert code == kind.code, reason
    needles = (kind.reason,) if isinstance(kind.reason, str) else kind.reason
    for part in reason.split(SEP):  # each attempt of the kind (see every())
        assert any(n in part for n in needles), reason
    if kind.target == "omega":
        _poll_ok(target)  # the good license still works: nothing was revoked or broken
    assert target.snapshot() == before
