"""Every agent's ``/metrics``, scraped from real agents and parsed as Prometheus would.

A PUBLIC agent times its activations and rollbacks, failed ones too; OMEGA, with simple
pollers reporting for themselves, shows each mainframe's last-seen age, the mainframes by
license status and the progress of its running and last finished rollouts, all read at
scrape time; real mainframe agents count their polls, the bytes they download and what
became of each directive.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ashat.fleet.license import issue
from ashat.transport.errors import AgentRejected
from support import wait_for

# The fixtures' types, for annotations only (tests/ is not a package).
AgentFactory = Any
AgentHandle = Any
MainframeFactory = Any
Trees = Any

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# An app that starts but never answers its health path.
SLEEPER = {
    "run": 'python3 -c "import time; time.sleep(60)"',
    "health_path": "/health",
    "health_timeout_s": 1,
}


# Runs the tiny app, unless the app environment says MF_BROKEN: then it never serves.
GATE = """\
import os, runpy, time
if os.environ.get("MF_BROKEN"):
    time.sleep(60)
runpy.run_path("app.py", run_name="__main__")
"""


def scrape(url: str) -> Samples:
    """Every sample of ``url``'s ``/metrics`` by name and labels, parsed from the text."""
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def activations(samples: Samples, how: str, result: str) -> tuple[int, float]:
    """Count and total seconds of the activation histogram for ``how`` and ``result``."""
    base = "ashat_agent_activation_seconds"
    count = value(samples, f"{base}_count", how=how, result=result)
    assert value(samples, f"{base}_bucket", how=how, result=result, le="+Inf") == count
    return int(count), value(samples, f"{base}_sum", how=how, result=result)


def license_token(key: Any, mainframe_id: str, days: float = 30) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    token, lic = issue(
        key,
        mainframe_id,
        "ACME Corp",
        now + dt.timedelta(days=days),
        now=now - dt.timedelta(days=60),
    )
    return token, lic.license_id


# -- every agent: activation duration ------------------------------------------------------


def test_activations_and_rollbacks_are_timed_failed_ones_too(
    agent_factory: AgentFactory, trees: Trees
) -> None:
    agent = agent_factory()
    before = scrape(agent.url)
    for how in ("activate", "rollback"):
        for result in ("ok", "failed"):
            assert activations(before, how, result) == (0, 0.0)

    # AshatAppDown joins on it: an agent with no release current runs no app (a review saw
    # an OMEGA replica that never activated one alerting for good)
    assert value(before, "ashat_agent_release_current") == 0
    assert value(before, "ashat_agent_app_up") == 0
    agent.deploy(trees.tiny("a"), "tiny-1", app=trees.tiny_app())
    assert value(scrape(agent.url), "ashat_agent_release_current") == 1
    agent.deploy(trees.tiny("b"), "tiny-2", sequence=2, app=trees.tiny_app())
    agent.stage(trees.tiny("bad"), "bad-3", sequence=3, app=SLEEPER)
    refuse = 'python3 -c "import sys; sys.exit(4)"'
    agent.stage(trees.tiny("c"), "prep-4", sequence=4, app=trees.tiny_app(prepare=refuse))
    with agent.client() as client:
        for update_id in ("bad-3", "prep-4"):
            with pytest.raises(AgentRejected) as e:
                client.activate(update_id)
            assert e.value.status == 422
        assert client.rollback(from_id="tiny-2")["current"] == "tiny-1"
        assert client.activate("tiny-1")["already"] is True  # no switch: not an activation

    after = scrape(agent.url)
    count, seconds = activations(after, "activate", "ok")
    assert count == 2 and 0 < seconds < 30
    count, seconds = activations(after, "activate", "failed")
    assert count == 2 and seconds >= 1.0  # the sleeper was waited for, 1 s
    base = "ashat_agent_activation_seconds_bucket"
    # The sleeper's wait is over 0.5 s; the refused prepare hook is not.
    assert value(after, base, how="activate", result="failed", le="0.5") <= 1
    assert value(after, base, how="activate", result="failed", le="600.0") == 2
    count, seconds = activations(after, "rollback", "ok")
    assert count == 1 and 0 < seconds < 30
    assert activations(after, "rollback", "failed") == (0, 0.0)
    # The counters agree with the histogram.
    assert value(after, "ashat_agent_activations_total", result="ok") == 2
    assert value(after, "ashat_agent_activations_total", result="failed") == 2
    assert value(after, "ashat_agent_rollbacks_total", result="ok") == 1
    assert value(after, "ashat_agent_app_up") == 1
    assert value(after, "ashat_agent_info", role="public") == 1


# -- OMEGA: the fleet at scrape time -------------------------------------------------------


class Omega:
    """OMEGA's bearer routes, and pollers that hold licenses and report for themselves."""

    def __init__(self, handle: AgentHandle) -> None:
        self.handle = handle
        self.http = httpx.Client(
            base_url=handle.url, headers={"Authorization": f"Bearer {handle.token}"}, timeout=30
        )
        self.pollers: dict[str, httpx.Client] = {}

    def close(self) -> None:
        self.http.close()
        for p in self.pollers.values():
            p.close()

    def release(self, tree: Path, update_id: str, sequence: int, **app: Any) -> Any:
        """Stage and activate ``tree`` on OMEGA as ``update_id``, approve it; the signed
        manifest."""
        return self.handle.release(tree, update_id, sequence=sequence, app=app or None)

    def rollout(self, update_id: str, **policy: Any) -> str:
        body = {
            "update_id": update_id,
            "channel": "stable",
            "waves": [100],
            "max_failure_ratio": 0.6,
            "wave_timeout_s": 600,
            "auto_rollback": False,
            **policy,
        }
        r = self.http.post("/v1/fleet/rollouts", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["rollout_id"])

    def state(self, rollout_id: str) -> str:
        r = self.http.get(f"/v1/fleet/rollouts/{rollout_id}")
        assert r.status_code == 200, r.text
        return str(r.json()["state"])

    def poller(self, mainframe_id: str, days: float = 30) -> str:
        """A licensed poller that polls once (registering it); its license id."""
        token, license_id = license_token(self.handle.license_key, mainframe_id, days)
        self.pollers[mainframe_id] = httpx.Client(
            base_url=self.handle.url, headers={"Authorization": f"License {token}"}, timeout=30
        )
        self.poll(mainframe_id, expect=200 if days > 0 else 403)
        return license_id

    def poll(self, mainframe_id: str, expect: int = 200) -> dict[str, Any] | None:
        r = self.pollers[mainframe_id].get("/v1/fleet/poll", params={"wait": "0"})
        assert r.status_code == expect, r.text
        return r.json().get("directive") if expect == 200 else None

    def report(self, mainframe_id: str, rollout_id: str, update_id: str, status: str) -> None:
        body = {"rollout_id": rollout_id, "update_id": update_id, "status": status}
        if status == "failed":
            body["reason"] = "app never healthy"
        r = self.pollers[mainframe_id].post("/v1/fleet/report", json=body)
        assert r.status_code == 200, r.text


@pytest.fixture
def omega(agent_factory: AgentFactory) -> Iterator[Omega]:
    o = Omega(agent_factory(role="omega"))
    yield o
    o.close()


def targets(samples: Samples, rollout_id: str) -> dict[str, float]:
    """The ``ashat_fleet_rollout_targets`` of one rollout, by status."""
    out = {}
    for labels, v in series(samples, "ashat_fleet_rollout_targets").items():
        d = dict(labels)
        if d["rollout_id"] == rollout_id:
            out[d["status"]] = v
    return out


def test_omega_shows_last_seen_ages_license_statuses_and_rollout_progress(
    omega: Omega, trees: Trees
) -> None:
    omega.release(trees.tiny("r1"), "r1", 1)
    url = omega.handle.url
    empty = scrape(url)
    assert series(empty, "ashat_fleet_mainframe_last_seen_age_seconds") == {}
    assert series(empty, "ashat_fleet_rollout_targets") == {}
    for status in ("ok", "expired", "revoked"):
        assert value(empty, "ashat_fleet_mainframes", license_status=status) == 0
    assert activations(empty, "activate", "ok")[0] == 1  # OMEGA's own activation of r1

    omega.poller("mf-early")
    time.sleep(2.1)  # last_seen is kept to the second
    omega.poller("mf-late")
    revoked = omega.poller("mf-revoked")
    omega.poller("mf-expired", days=-1)  # refused, but registered with its reason
    r = omega.http.post("/v1/fleet/revocations", json={"license_id": revoked})
    assert r.status_code == 200, r.text

    samples = scrape(url)
    ages = {
        dict(labels)["mainframe_id"]: v
        for labels, v in series(samples, "ashat_fleet_mainframe_last_seen_age_seconds").items()
    }
    assert set(ages) == {"mf-early", "mf-late", "mf-revoked", "mf-expired"}
    assert all(0 <= age < 30 for age in ages.values())
    assert ages["mf-early"] - ages["mf-late"] > 1.0
    assert value(samples, "ashat_fleet_mainframes", license_status="ok") == 2
    assert value(samples, "ashat_fleet_mainframes", license_status="revoked") == 1
    assert value(samples, "ashat_fleet_mainframes", license_status="expired") == 1
    # Computed at the scrape, not when the mainframe last polled: the age grows by itself.
    time.sleep(1.1)
    later = series(scrape(url), "ashat_fleet_mainframe_last_seen_age_seconds")
    assert later[frozenset({("mainframe_id", "mf-early")})] >= ages["mf-early"] + 1.0

    # A rollout to the two licensed mainframes, counted as the rollout status counts it.
    first = omega.rollout("r1")
    assert targets(scrape(url), first) == {
        "targeted": 2,
        "installed": 0,
        "failed": 0,
        "pending": 2,
    }
    for mid in ("mf-early", "mf-late"):
        assert omega.poll(mid) is not None
    omega.report("mf-early", first, "r1", "installed")
    assert targets(scrape(url), first) == {
        "targeted": 2,
        "installed": 1,
        "failed": 0,
        "pending": 1,
    }
    omega.report("mf-late", first, "r1", "failed")
    assert omega.state(first) == "completed"  # 1 of 2 failed: within 0.6
    done = scrape(url)
    assert targets(done, first) == {"targeted": 2, "installed": 1, "failed": 1, "pending": 0}
    status = omega.http.get(f"/v1/fleet/rollouts/{first}").json()
    assert targets(done, first) == status["totals"]  # what `ashat serve` would ask for
    assert all(
        dict(labels)["update_id"] == "r1" for labels in series(done, "ashat_fleet_rollout_targets")
    )
    assert value(done, "ashat_fleet_rollouts_running") == 0

    # Each new rollout supersedes the last: the running one and the five that ended last.
    later_ids = [omega.rollout("r1", wave_timeout_s=100 + i) for i in range(6)]
    shown = scrape(url)
    ids = {dict(labels)["rollout_id"] for labels in series(shown, "ashat_fleet_rollout_targets")}
    assert ids == set(later_ids)
    assert first not in ids
    assert [omega.state(i) for i in later_ids] == ["cancelled"] * 5 + ["running"]
    # mf-early runs r1 already: it counts as installed at once.
    assert targets(shown, later_ids[-1]) == {
        "targeted": 2,
        "installed": 1,
        "failed": 0,
        "pending": 1,
    }
    assert value(shown, "ashat_fleet_rollouts_running") == 1


# -- mainframes: polls, bytes downloaded, installs -----------------------------------------


def blob_sizes(*manifests: Any) -> dict[str, int]:
    return {e.sha256: e.size for m in manifests for e in m.files if e.kind == "file"}


def test_mainframes_count_polls_bytes_and_installs(
    agent_factory: AgentFactory, mainframe_factory: MainframeFactory, trees: Trees
) -> None:
    omega = Omega(agent_factory(role="omega", poll_timeout=5))
    try:
        handle = omega.handle
        m1 = omega.release(trees.tiny("m1"), "m1", 1, **trees.tiny_app())
        mfs = []
        for mid in ("mf-a", "mf-b"):
            token, _ = license_token(handle.license_key, mid)
            mfs.append(
                mainframe_factory.start(
                    omega=handle.url,
                    license_token=token,
                    mainframe_id=mid,
                    trust=handle.pub_path,
                    trust_omega=handle.omega_pub_path,
                    poll_wait=2,
                    app_env={"MF_BROKEN": "1"},
                )
            )
        mainframe_factory.ready(*mfs)
        for mf in mfs:
            wait_for(
                lambda mf=mf: value(scrape(mf.url), "ashat_mainframe_polls_total", result="empty"),
                15,
                f"{mf.mainframe_id}'s first poll",
            )
            quiet = scrape(mf.url)
            assert value(quiet, "ashat_mainframe_bytes_downloaded_total") == 0
            for result in ("installed", "already", "failed", "refused"):
                assert value(quiet, "ashat_mainframe_installs_total", result=result) == 0

        first = omega.rollout("m1")
        wait_for(lambda: omega.state(first) == "completed", 30, "m1 on both mainframes")
        wanted = sum(blob_sizes(m1).values())
        for mf in mfs:
            samples = scrape(mf.url)
            assert value(samples, "ashat_mainframe_polls_total", result="directive") == 1
            assert value(samples, "ashat_mainframe_polls_total", result="refused") == 0
            assert value(samples, "ashat_mainframe_installs_total", result="installed") == 1
            assert value(samples, "ashat_mainframe_bytes_downloaded_total") == wanted
            count, seconds = activations(samples, "activate", "ok")
            assert count == 1 and 0 < seconds < 30
            assert value(samples, "ashat_agent_info", role="mainframe") == 1
            assert value(samples, "ashat_agent_app_up") == 1

        # A release whose app never becomes healthy on the mainframes (it does on OMEGA,
        # which must activate what it approves): both fail it, keep m1, and say so.
        tree = trees.tiny("m2")
        (tree / "gate.py").write_text(GATE)
        m2 = omega.release(
            tree, "m2", 2, **trees.tiny_app(run="python3 gate.py", health_timeout_s=2)
        )
        second = omega.rollout("m2")
        wait_for(lambda: omega.state(second) == "failed", 30, "m2 to fail")
        both = sum(blob_sizes(m1, m2).values())  # app.py is one blob: fetched once
        assert both < wanted + sum(blob_sizes(m2).values())
        for mf in mfs:
            samples = scrape(mf.url)
            assert mf.current() == "m1"
            assert value(samples, "ashat_mainframe_polls_total", result="directive") == 2
            assert value(samples, "ashat_mainframe_installs_total", result="installed") == 1
            assert value(samples, "ashat_mainframe_installs_total", result="failed") == 1
            assert value(samples, "ashat_mainframe_bytes_downloaded_total") == both
            count, seconds = activations(samples, "activate", "failed")
            assert count == 1 and seconds >= 2.0  # the health wait
            assert activations(samples, "activate", "ok")[0] == 1

        fleet = scrape(handle.url)
        assert targets(fleet, second) == {"targeted": 2, "installed": 0, "failed": 2, "pending": 0}
        assert targets(fleet, first) == {"targeted": 2, "installed": 2, "failed": 0, "pending": 0}
        assert value(fleet, "ashat_fleet_mainframes", license_status="ok") == 2
        ages = series(fleet, "ashat_fleet_mainframe_last_seen_age_seconds")
        assert len(ages) == 2 and all(0 <= age < 15 for age in ages.values())
    finally:
        omega.close()
