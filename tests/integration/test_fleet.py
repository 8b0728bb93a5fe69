"""The fleet end to end: a real OMEGA (``--role omega``) and real mainframe agents
(``--role mainframe``), each its own process.

A fleet of ten takes examples/hello-service in three waves; a mainframe killed in the middle
of a download resumes it with ``Range`` after its restart; and what an attacker between a
mainframe and OMEGA could send — an older signed answer replayed, a directive past its
expiry, a manifest stripped of its approval — is refused while the mainframe keeps its
release. The attacker (and the slow link) is :class:`Proxy`, a small HTTP relay in front of
the real OMEGA that can hold, record, alter or inject answers; it is not a stand-in for
OMEGA, which answers every request it relays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ashat.bundle.keys import load_private_key
from ashat.bundle.manifest import parse_manifest
from ashat.fleet.envelope import seal
from ashat.fleet.license import issue
from support import wait_for

# The fixtures' types, for annotations only (tests/ is not a package).
AgentFactory = Any
AgentHandle = Any
MainframeFactory = Any
MainframeHandle = Any
Trees = Any


# -- a relay between mainframes and OMEGA --------------------------------------------------


class Proxy:
    """Relays requests to ``upstream``; can slow blobs down and alter or inject poll answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.throttle_bps: int | None = None  # bytes/s for GET /v1/blobs/...
        self.blob_ranges: list[tuple[str, str | None]] = []  # (sha256, Range header)
        self.directives: list[dict[str, Any]] = []  # every poll answer with a directive
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # next one
        self.inject: list[dict[str, Any]] = []  # answers for the next polls, OMEGA not asked
        self.reports_down = False  # answer reports 503 (OMEGA blinking), not relaying them
        self.reports_refused = 0
        self.lock = threading.Lock()
        self.http = httpx.Client(base_url=upstream, timeout=120)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.relay(self)

            def do_POST(self) -> None:
                proxy.relay(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def relay(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path == "/v1/fleet/poll":
            with self.lock:
                injected = self.inject.pop(0) if self.inject else None
            if injected is not None:
                self._send(h, 200, json.dumps(injected).encode())
                return
        if path == "/v1/fleet/report" and self.reports_down:
            with self.lock:
                self.reports_refused += 1
            self._send(h, 503, b'{"error": "OMEGA is restarting"}')
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in h.headers.items()
            if k.lower() in ("authorization", "range", "content-type")
        }
        if path.startswith("/v1/blobs/"):
            with self.lock:
                self.blob_ranges.append((path.rsplit("/", 1)[-1], h.headers.get("Range")))
        try:
            with self.http.stream(h.command, h.path, headers=headers, content=body) as r:
                if path == "/v1/fleet/poll" and r.status_code == 200:
                    answer = json.loads(r.read())
                    if answer.get("directive"):
                        with self.lock:
                            self.directives.append(answer)
                            tamper, self.tamper = self.tamper, None
                        if tamper is not None:
                            answer = tamper(answer)
                    self._send(h, 200, json.dumps(answer).encode())
                    return
                h.send_response(r.status_code)
                for k in ("content-type", "content-length", "content-range", "accept-ranges"):
                    if k in r.headers:
                        h.send_header(k, r.headers[k])
                h.end_headers()
                slow = self.throttle_bps if path.startswith("/v1/blobs/") else None
                for chunk in r.iter_bytes(16 * 1024 if slow else 256 * 1024):
                    h.wfile.write(chunk)
                    if slow:
                        h.wfile.flush()
                        time.sleep(len(chunk) / slow)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the mainframe went away (killed on purpose)


@pytest.fixture
def proxies() -> Iterator[Callable[[str], Proxy]]:
    made: list[Proxy] = []

    def make(upstream: str) -> Proxy:
        p = Proxy(upstream)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# -- OMEGA, its control side, and mainframes -----------------------------------------------


class Fleet:
    """One OMEGA with the control side's bearer routes, and mainframes licensed for it."""

    def __init__(
        self, omega: AgentHandle, mainframes: MainframeFactory, trees: Trees, base: Path
    ) -> None:
        self.omega = omega
        self.mainframes = mainframes
        self.trees = trees
        self.base = base
        self.http = httpx.Client(
            base_url=omega.url, headers={"Authorization": f"Bearer {omega.token}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def license(self, mainframe_id: str, days: float = 30) -> tuple[str, str]:
        """A license token for ``mainframe_id`` valid ``days`` more (negative: expired), and
        its id."""
        now = dt.datetime.now(dt.UTC)
        token, lic = issue(
            self.omega.license_key,
            mainframe_id,
            "ACME Corp",
            now + dt.timedelta(days=days),
            now=now - dt.timedelta(days=60),
        )
        return str(token), lic.license_id

    def start(
        self,
        mainframe_id: str,
        via: str | None = None,
        license_token: str | None = None,
        **kw: Any,
    ) -> MainframeHandle:
        return self.mainframes.start(
            omega=via or self.omega.url,
            license_token=license_token or self.license(mainframe_id)[0],
            mainframe_id=mainframe_id,
            trust=self.omega.pub_path,  # the release key (the handle's "alpha")
            trust_omega=self.omega.omega_pub_path,
            **kw,
        )

    def release(
        self, update_id: str, sequence: int, tree: Path, app: dict[str, Any] | None = None
    ) -> Any:
        """Stage and activate ``tree`` on OMEGA, then approve it; the signed manifest."""
        return self.omega.release(tree, update_id, sequence=sequence, app=app)

    def registered(self, n: int) -> None:
        def known() -> bool:
            r = self.http.get("/v1/fleet/mainframes")
            assert r.status_code == 200, r.text
            return len(r.json()["mainframes"]) >= n

        wait_for(known, 30, f"{n} mainframes registered with OMEGA")

    def rollout(self, update_id: str, **policy: Any) -> str:
        body = {
            "update_id": update_id,
            "channel": "stable",
            "waves": [100],
            "max_failure_ratio": 0.2,
            "wave_timeout_s": 60,
            "auto_rollback": False,
            **policy,
        }
        r = self.http.post("/v1/fleet/rollouts", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["rollout_id"])

    def until(self, rollout_id: str, state: str, timeout_s: float = 30) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            r = self.http.get(f"/v1/fleet/rollouts/{rollout_id}")
            assert r.status_code == 200, r.text
            found.clear()
            found.update(r.json())
            assert found["state"] in ("running", state), found
            return found["state"] == state

        wait_for(reached, timeout_s, f"rollout {rollout_id} {state}")
        return found


@pytest.fixture
def fleet(
    agent_factory: AgentFactory, mainframe_factory: MainframeFactory, trees: Trees, tmp_path: Path
) -> Iterator[Fleet]:
    f = Fleet(agent_factory(role="omega", poll_timeout=5), mainframe_factory, trees, tmp_path)
    yield f
    f.close()


def last_install(mf: MainframeHandle) -> dict[str, Any] | None:
    result = mf.health()["fleet"]["last_install"]
    return dict(result) if result else None


def strip_approval(answer: dict[str, Any]) -> dict[str, Any]:
    """A poll answer whose manifest lost OMEGA's approval signature (same digest)."""
    m = json.loads(answer["manifest"])
    m["signatures"] = [s for s in m["signatures"] if s["role"] != "approval"]
    return {**answer, "manifest": json.dumps(m)}


# -- the tests -----------------------------------------------------------------------------


def test_a_fleet_of_ten_takes_hello_service_in_waves(fleet: Fleet, trees: Trees) -> None:
    fleet.release("hello-001", 1, trees.hello("hello-001", "1.0.1"), app=trees.hello_app())
    mfs = [fleet.start(f"mf-{i:02d}") for i in range(10)]
    fleet.mainframes.ready(*mfs)
    fleet.registered(10)

    rollout_id = fleet.rollout("hello-001", waves=[10, 50, 100])
    done = fleet.until(rollout_id, "completed", timeout_s=60)
    assert done["fleet_size"] == 10
    assert done["totals"] == {"targeted": 10, "installed": 10, "failed": 0, "pending": 0}
    assert [w["state"] for w in done["waves"]] == ["done", "done", "done"]

    for mf in mfs:
        health = mf.health()
        assert health["current"] == "hello-001", mf.output()
        # The agent probes with a 1 s timeout: on a busy machine, allow a second try.
        wait_for(lambda mf=mf: mf.health()["app"]["healthy"], 10, f"{mf.mainframe_id}'s app")
        assert health["fleet"]["license_status"] == "ok"
        assert health["fleet"]["pending_reports"] == 0
        assert last_install(mf) == {
            "rollout_id": rollout_id,
            "update_id": "hello-001",
            "status": "installed",
            "reason": None,
            "at": health["fleet"]["last_install"]["at"],
        }
        app = httpx.get(f"http://127.0.0.1:{health['app']['port']}/healthz", timeout=5)
        assert app.status_code == 200 and app.json()["version"] == "1.0.1"
        assert os.listdir(mf.data / "tmp" / "partial") == []
    listed = fleet.http.get("/v1/fleet/mainframes").json()["mainframes"]
    assert {m["current"] for m in listed} == {"hello-001"}


def test_omega_signs_each_answer_without_a_directive_for_its_poll(fleet: Fleet) -> None:
    """The freeze defence: with nothing to install, every answer is OMEGA's signature over
    this mainframe and the poll's nonce; the mainframe shows when it last had one."""
    mf = fleet.start("mf-quiet", poll_wait=1)
    fleet.mainframes.ready(mf)

    def polled_twice() -> bool:
        metrics = httpx.get(f"{mf.url}/metrics", timeout=5).text
        empty = 'ashat_mainframe_polls_total{result="empty"} '
        line = next(x for x in metrics.splitlines() if x.startswith(empty))
        return float(line.removeprefix(empty)) >= 2

    wait_for(polled_twice, 30, "two empty polls")
    fleet_status = mf.health()["fleet"]
    assert fleet_status["last_error"] is None, mf.output()
    seen = dt.datetime.fromisoformat(fleet_status["last_authenticated"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - seen).total_seconds()) < 30
    metrics = httpx.get(f"{mf.url}/metrics", timeout=5).text
    assert 'ashat_mainframe_polls_total{result="unauthenticated"} 0.0' in metrics
    gauge = "ashat_mainframe_last_authenticated_answer_timestamp_seconds "
    stamp = next(line for line in metrics.splitlines() if line.startswith(gauge))
    assert float(stamp.split()[1]) > 0


def test_a_mainframe_killed_mid_download_resumes(
    fleet: Fleet, trees: Trees, proxies: Callable[[str], Proxy]
) -> None:
    tree = trees.tiny("big-001")
    big = os.urandom(3 * 1024 * 1024)
    (tree / "big.bin").write_bytes(big)
    big_sha = hashlib.sha256(big).hexdigest()
    fleet.release("big-001", 1, tree, app=trees.tiny_app())
    proxy = proxies(fleet.omega.url)
    proxy.throttle_bps = 1024 * 1024  # about 3 s for big.bin
    mf = fleet.start("mf-slow", via=proxy.url)
    fleet.mainframes.ready(mf)
    fleet.registered(1)

    rollout_id = fleet.rollout("big-001")
    partial = mf.data / "tmp" / "partial" / big_sha
    wait_for(
        lambda: partial.exists() and partial.stat().st_size > 512 * 1024, 20, "half a download"
    )
    mf.stop(signal.SIGKILL)
    kept = partial.stat().st_size
    assert 0 < kept < len(big)

    proxy.throttle_bps = None
    again = fleet.mainframes.restart(mf)  # same data directory, same options
    fleet.mainframes.ready(again)
    fleet.until(rollout_id, "completed", timeout_s=30)
    assert again.current() == "big-001"
    assert (again.data / "current" / "big.bin").read_bytes() == big
    ranges = [rng for sha, rng in proxy.blob_ranges if sha == big_sha]
    assert ranges[0] is None
    resumed = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:] if r]
    assert resumed and resumed[-1] >= kept, ranges  # picked up after what the first run kept
    assert not partial.exists()


def test_replayed_expired_and_unapproved_answers_are_refused(
    fleet: Fleet, trees: Trees, proxies: Callable[[str], Proxy]
) -> None:
    fleet.release("app-001", 1, trees.tiny("app-001"), app=trees.tiny_app())
    proxy = proxies(fleet.omega.url)
    mf = fleet.start("mf-guarded", via=proxy.url, poll_wait=1)
    fleet.mainframes.ready(mf)
    fleet.registered(1)

    # A manifest stripped of OMEGA's approval (its digest is unchanged: signatures aside).
    proxy.tamper = strip_approval
    first = fleet.rollout("app-001")
    failed = fleet.until(first, "failed")
    assert "approval" in failed["failures"][0]["reason"], failed
    assert mf.current() is None
    assert last_install(mf)["status"] == "failed"  # type: ignore[index]

    # Untouched, the same release installs; keep OMEGA's answer to replay later.
    second = fleet.rollout("app-001")
    fleet.until(second, "completed")
    assert mf.current() == "app-001"
    old_answer = proxy.directives[-1]
    fleet.release("app-002", 2, trees.tiny("app-002"), app=trees.tiny_app())
    fleet.until(fleet.rollout("app-002"), "completed")
    assert mf.current() == "app-002"

    def refused(reason: str) -> None:
        wait_for(lambda: f"({reason})" in mf.output(), 15, f"a refusal ({reason})")
        assert mf.current() == "app-002" and mf.health()["app"]["healthy"] is True
        assert last_install(mf)["status"] == "failed"  # type: ignore[index]

    # OMEGA's genuine answer for app-001, replayed while the mainframe runs app-002.
    proxy.inject.append(old_answer)
    refused("downgrade")

    # A rollback OMEGA signed, but past its expiry: refused even though it is a rollback.
    omega_key = load_private_key(fleet.omega.omega_key_path)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    old = parse_manifest(old_answer["manifest"].encode())
    stale = seal(
        "directive",
        {
            "mainframe_id": "mf-guarded",
            "rollout_id": second,
            "action": "rollback",
            "update_id": "app-001",
            "sequence": 1,
            "manifest_digest": old.digest(),
            "issued_at": past.isoformat(),
            "expires_at": (past + dt.timedelta(seconds=300)).isoformat(),
        },
        omega_key,
    )
    proxy.inject.append({"directive": stale, "manifest": old_answer["manifest"]})
    refused("expired")
    assert "app-002" in os.readlink(mf.data / "current")


def test_a_rollback_recorded_and_replayed_moves_nobody(
    fleet: Fleet, trees: Trees, proxies: Callable[[str], Proxy]
) -> None:
    """A rollback directive was a bearer instruction for its 300 s: one recorded on the way
    (no key needed) and replayed after the fix went out sent the mainframe back, and marked
    the fix rolled back, so it stayed on the withdrawn release. It now answers one poll
    (its nonce) from the release that ran (its ``from``)."""
    from ashat.bundle.delta import apply_delta

    for i in (1, 2):
        fleet.release(f"app-00{i}", i, trees.tiny(f"app-00{i}"), app=trees.tiny_app())
    proxy = proxies(fleet.omega.url)
    mf = fleet.start("mf-replay", via=proxy.url, poll_wait=1)
    fleet.mainframes.ready(mf)
    fleet.registered(1)
    fleet.until(fleet.rollout("app-002"), "completed")
    r = fleet.http.post("/v1/fleet/rollback", json={"from": "app-002", "to": "app-001"})
    assert r.status_code == 201, r.text
    fleet.until(r.json()["rollout_id"], "completed")
    assert mf.current() == "app-001"
    recorded = proxy.directives[-1]  # the rollback, as it went by
    fleet.release("app-003", 3, trees.tiny("app-003"), app=trees.tiny_app())
    fleet.until(fleet.rollout("app-003"), "completed")
    assert mf.current() == "app-003"

    whole = (
        recorded.get("manifest")
        or apply_delta(
            proxy.directives[0]["manifest"].encode(), recorded["manifest_delta"]
        ).decode()
    )  # it came as a delta from app-002, seen whole in the first answer
    proxy.inject.append({"directive": recorded["directive"], "manifest": whole})
    wait_for(lambda: "(replayed)" in mf.output(), 15, "the replay refused")
    assert mf.current() == "app-003"
    assert "app-003" not in json.loads((mf.data / "state.json").read_text())["rolled_back"]


def test_a_report_survives_omega_blinking_and_a_restart(
    fleet: Fleet, trees: Trees, proxies: Callable[[str], Proxy]
) -> None:
    fleet.release("app-001", 1, trees.tiny("app-001"), app=trees.tiny_app())
    proxy = proxies(fleet.omega.url)
    mf = fleet.start("mf-blink", via=proxy.url, poll_wait=1)
    fleet.mainframes.ready(mf)
    fleet.registered(1)

    proxy.reports_down = True
    proxy.tamper = strip_approval
    rollout_id = fleet.rollout("app-001")
    wait_for(lambda: proxy.reports_refused >= 2, 15, "the report to be retried")
    assert mf.health()["fleet"]["pending_reports"] == 1
    queued = json.loads((mf.data / "fleet.json").read_text())["pending_reports"]
    assert [(r["rollout_id"], r["status"]) for r in queued] == [(rollout_id, "failed")]
    mf.stop(signal.SIGKILL)  # with the report still unsent

    proxy.reports_down = False
    again = fleet.mainframes.restart(mf)
    fleet.mainframes.ready(again)
    failed = fleet.until(rollout_id, "failed", timeout_s=20)
    assert failed["failures"][0]["mainframe_id"] == "mf-blink"
    assert "no 'approval' signature" in failed["failures"][0]["reason"]
    wait_for(lambda: again.health()["fleet"]["pending_reports"] == 0, 5, "the queue emptied")
    assert again.current() is None


def test_a_refused_license_keeps_what_runs(fleet: Fleet, trees: Trees) -> None:
    fleet.release("app-001", 1, trees.tiny("app-001"), app=trees.tiny_app())
    token, license_id = fleet.license("mf-kept")
    mf = fleet.start("mf-kept", license_token=token, poll_wait=1)
    stale = fleet.start("mf-stale", license_token=fleet.license("mf-stale", days=-1)[0])
    fleet.mainframes.ready(mf, stale)
    fleet.registered(2)

    done = fleet.until(fleet.rollout("app-001"), "completed")
    assert done["fleet_size"] == 1 and mf.current() == "app-001"
    old = stale.health()
    assert old["current"] is None
    assert old["fleet"]["license_status"] == "expired", old
    assert "expired" in old["fleet"]["last_error"]

    r = fleet.http.post("/v1/fleet/revocations", json={"license_id": license_id})
    assert r.status_code == 200, r.text
    wait_for(
        lambda: mf.health()["fleet"]["license_status"] == "revoked", 15, "the refusal in health"
    )
    health = mf.health()
    assert health["current"] == "app-001" and health["app"]["healthy"] is True
    assert "revoked" in health["fleet"]["last_error"]
    assert mf.output().count("license refused by OMEGA: revoked — keeping app-001") == 1


def test_a_late_joiner_and_a_reimaged_mainframe_converge(fleet: Fleet, trees: Trees) -> None:
    """Issue 19: a mainframe licensed and started after the rollout completed stayed on
    nothing, and so did one re-imaged (empty data directory, same license). Each converges
    to what the fleet runs within a poll, and the rollout's status counts it."""
    import shutil

    fleet.release("hello-001", 1, trees.hello("hello-001", "1.0.1"), app=trees.hello_app())
    first = [fleet.start(f"mf-{i}", poll_wait=1) for i in range(2)]
    fleet.mainframes.ready(*first)
    fleet.registered(2)
    rollout_id = fleet.rollout("hello-001")
    assert fleet.until(rollout_id, "completed")["fleet_size"] == 2

    late = fleet.start("mf-late", poll_wait=1)
    fleet.mainframes.ready(late)
    wait_for(lambda: late.health()["current"] == "hello-001", 20, "mf-late converging")
    done = fleet.until(rollout_id, "completed")
    wait_for(
        lambda: (
            fleet.http.get(f"/v1/fleet/rollouts/{rollout_id}").json()["totals"]["installed"] == 3
        ),
        20,
        "mf-late's report",
    )
    assert done["state"] == "completed"

    # Re-imaged: the same license, an empty data directory.
    again = first[0]
    assert again.stop() == 0
    shutil.rmtree(again.data)
    again = fleet.mainframes.restart(again)
    fleet.mainframes.ready(again)
    wait_for(lambda: again.health()["current"] == "hello-001", 20, "the re-imaged mf-0")
    status = fleet.http.get(f"/v1/fleet/rollouts/{rollout_id}").json()
    assert status["state"] == "completed" and status["fleet_size"] == 3, status


def test_a_killed_app_restarts_and_omega_sees_it(fleet: Fleet, trees: Trees) -> None:
    """Issue 17, 3: after kill of the app on a mainframe, its health named the dead pid and
    OMEGA's mainframe list showed the machine as fine."""
    fleet.release("hello-001", 1, trees.hello("hello-001", "1.0.1"), app=trees.hello_app())
    mf = fleet.start("mf-0", poll_wait=1)
    fleet.mainframes.ready(mf)
    fleet.registered(1)
    fleet.until(fleet.rollout("hello-001"), "completed")
    wait_for(lambda: mf.health()["app"]["healthy"], 15, "the app up")
    pid = mf.health()["app"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        app = mf.health()["app"]
        return bool(app["restarts"] == 1 and app["pid"] != pid and app["healthy"])

    wait_for(restarted, 20, "the agent to restart the app")

    def omega_knows() -> bool:
        (row,) = fleet.http.get("/v1/fleet/mainframes").json()["mainframes"]
        return bool(row["app_restarts"] == 1 and row["app"] == "healthy")

    wait_for(omega_knows, 15, "OMEGA's mainframe list to show the restart")
