"""Issue 21: several OMEGA regions. ``[distribution] regions`` releases an approved
deployment to each region's OMEGA in turn, with the same waves and budget inside each; a
region that fails halts the next; status shows each region; a rollback takes every region
back. Two real OMEGA processes on loopback, each with its own database and a mainframe."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from support import configure, deploy, enter_hello_project, verify_health_only

REGIONS = """[distribution]
waves = [100]
max_failure_ratio = 0.0
wave_timeout_s = 30
auto_rollback = false
regions = ["eu", "us"]
"""


def project_with_regions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public: Any) -> Path:
    """hello-service releasing to regions eu then us, PUBLIC configured (no OMEGA yet)."""
    root = enter_hello_project(
        tmp_path / "alpha", monkeypatch, public.key_path, distribution=REGIONS
    )
    verify_health_only(root)
    configure("public", public, "Staging")
    return root


@pytest.fixture
def regions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any, mainframe_factory: Any
) -> dict[str, Any]:
    from ashat.fleet.license import issue

    public = agent_factory()
    root = project_with_regions(tmp_path, monkeypatch, public)
    out: dict[str, Any] = {"root": root, "public": public}
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    for region, ok in (("eu", "0"), ("us", "1")):
        omega = agent_factory(
            role="omega", poll_timeout=5, extra_trust=(public.pub_path,), args=("--region", region)
        )
        res = deploy("configure", "omega", omega.url, f"Omega-{region}", "--region", region,
                     "--token-file", str(omega.token_file))  # fmt: skip
        assert res.exit_code == 0, res.output
        assert f"Configured OMEGA ({region}): Omega-{region}" in res.output
        token, _ = issue(omega.license_key, f"mf-{region}", "ACME", expires)
        mf = mainframe_factory.start(
            omega=omega.url, license_token=token, mainframe_id=f"mf-{region}",
            trust=public.pub_path, trust_omega=omega.omega_pub_path, poll_wait=1,
            app_env={"REGION_OK": ok},
        )  # fmt: skip
        mainframe_factory.ready(mf)
        out[region] = (omega, mf)
    return out


def ship(root: Path, update_id: str, version: str) -> None:
    (root / "VERSION").write_text(version + "\n")
    res = deploy("push", update_id, f"version {version}")
    assert res.exit_code == 0, res.output
    res = deploy("verify", update_id, "--only", "health")
    assert res.exit_code == 0, res.output


def two_releases(root: Path, fails_where: str, auto_rollback: bool = False) -> None:
    """hello-001 everywhere; then hello-002 pushed and verified, whose prepare hook fails on
    the mainframe whose REGION_OK is ``fails_where`` (PUBLIC and OMEGA have none: it passes)."""
    ship(root, "hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    ok = "1" if fails_where == "0" else "0"
    toml = (root / "ashat.toml").read_text()
    if auto_rollback:
        toml = toml.replace("auto_rollback = false", "auto_rollback = true")
    hook = f'prepare = "test \\"${{REGION_OK:-{ok}}}\\" = {ok}"'
    toml = toml.replace('health_path = "/healthz"', f'health_path = "/healthz"\n{hook}', 1)
    (root / "ashat.toml").write_text(toml)
    ship(root, "hello-002", "2.0.0")


def eu_mainframes(omega: Any) -> list[dict[str, Any]]:
    with omega.client() as client:
        return client.mainframes()


def omega_current(omega: Any) -> Any:
    with omega.client() as client:
        return client.health().get("current")


def test_an_approval_releases_region_by_region_and_a_rollback_takes_every_region_back(
    regions: dict[str, Any],
) -> None:
    import httpx

    from ashat.fleet.license import issue

    root = regions["root"]
    (eu, mf_eu), (us, mf_us) = regions["eu"], regions["us"]
    # A review: a mainframe pointed at the wrong region's OMEGA (its license refused there,
    # wrong_region, at every poll) was still counted in that OMEGA's rollouts, never
    # answered, and failed the region at its wave timeout. It is not a target.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    stray, _ = issue(eu.license_key, "mf-stray", "ACME", expires, region="us")
    refused = httpx.get(f"{eu.url}/v1/fleet/poll", params={"wait": "0"},
                        headers={"Authorization": f"License {stray}"}, timeout=10)  # fmt: skip
    assert refused.json()["reason"] == "wrong_region", refused.text
    ship(root, "hello-001", "1.0.0")
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    listed = {m["mainframe_id"]: m for m in eu_mainframes(eu)}
    assert listed["mf-stray"]["license_status"] == "wrong_region", listed
    assert "released to Omega-eu (OMEGA (eu))" in res.output
    assert "region eu completed; the next region's rollout starts" in res.output
    assert "released to Omega-us (OMEGA (us))" in res.output
    assert "Deployment completed successfully!" in res.output
    assert res.output.index("Omega-eu") < res.output.index("Omega-us")
    assert (mf_eu.current(), mf_us.current()) == ("hello-001", "hello-001")

    ship(root, "hello-002", "2.0.0")
    res = deploy("approve", "hello-002", "--as", "bob")
    assert res.exit_code == 0, res.output
    status = deploy("status", "hello-002")
    assert "Regions:     eu completed, us completed" in status.output, status.output
    assert "Rollout: [eu]" in status.output and "Rollout: [us]" in status.output
    events = [e["kind"] for e in json.loads(deploy("log", "hello-002", "--json").stdout)["events"]]
    assert events.count("region.completed") == 1 and events.count("region.released") == 1

    res = deploy("rollback", "hello-002", "--reason", "bad in both")
    assert res.exit_code == 0, res.output
    assert (mf_eu.current(), mf_us.current()) == ("hello-001", "hello-001")
    assert (omega_current(eu), omega_current(us)) == ("hello-001", "hello-001")
    assert "rolled_back" in deploy("status", "hello-002").output


def test_a_region_that_fails_halts_the_next(regions: dict[str, Any]) -> None:
    root = regions["root"]
    (_eu, mf_eu), (us, mf_us) = regions["eu"], regions["us"]
    # 2.0.0's prepare hook refuses where REGION_OK is not 1: mf-eu.
    two_releases(root, fails_where="0")
    res = deploy("approve", "hello-002", "--as", "bob")
    assert res.exit_code == 1, res.output
    assert "Distribution distribution_failed" in res.output
    assert "Omega-us" not in res.output
    assert (mf_eu.current(), mf_us.current()) == ("hello-001", "hello-001")
    with us.client() as client:
        assert "hello-002" not in {r["update_id"] for r in client.releases()["releases"]}
    status = deploy("status", "hello-002")
    assert "Regions:     eu distribution_failed, us not started" in status.output, status.output


def test_a_region_not_configured_is_refused_before_the_approval_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Any
) -> None:
    public = agent_factory()
    root = project_with_regions(tmp_path, monkeypatch, public)
    ship(root, "hello-001", "1.0.0")
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 2, res.output
    assert (
        "OMEGA (eu) is not configured: run 'deploy configure omega <url> <name> --region eu'"
        in res.output
    )
    assert "state:       verified" in deploy("status", "hello-001").output.lower()
    res = deploy("configure", "public", public.url, "X", "--region", "eu")
    assert res.exit_code == 2 and "--region names an OMEGA's region" in res.output
    res = deploy("configure", "omega", public.url, "X", "--region", "EU!")
    assert res.exit_code == 2 and "invalid region 'EU!'" in res.output
    (root / "ashat.toml").write_text(
        (root / "ashat.toml")
        .read_text()
        .replace('regions = ["eu", "us"]', 'regions = ["eu", "eu"]')
    )
    res = deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 2 and "[distribution].regions must be distinct" in res.output


def test_a_license_naming_a_region_is_served_only_by_that_regions_omega(
    regions: dict[str, Any],
) -> None:
    import httpx

    from ashat.fleet.license import issue

    eu, _ = regions["eu"]
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

    def poll(region: str | None) -> httpx.Response:
        token, _ = issue(eu.license_key, "mf-x", "ACME", expires, region=region)
        return httpx.get(
            f"{eu.url}/v1/fleet/poll",
            params={"wait": "0"},
            headers={"Authorization": f"License {token}"},
            timeout=10,
        )

    refused = poll("us")
    assert refused.status_code == 403, refused.text
    assert refused.json()["reason"] == "wrong_region", refused.text
    assert "is for region us; this OMEGA serves eu" in refused.json()["error"]
    assert poll("eu").status_code == 200
    assert poll(None).status_code == 200  # a license naming no region: served everywhere


def wait_status(update_id: str, text: str, timeout_s: float = 60) -> str:
    from support import wait_for

    def seen() -> str | None:
        out = deploy("status", update_id).output
        return out if text in out else None

    return str(wait_for(seen, timeout_s, f"{update_id}'s status to say {text!r}"))


def test_a_rollback_between_two_regions_stops_the_next_and_takes_the_first_back(
    regions: dict[str, Any],
) -> None:
    root = regions["root"]
    (eu, mf_eu), (us, mf_us) = regions["eu"], regions["us"]
    ship(root, "hello-001", "1.0.0")
    assert deploy("approve", "hello-001", "--as", "bob").exit_code == 0
    ship(root, "hello-002", "2.0.0")
    assert deploy("approve", "hello-002", "--as", "bob", "--no-wait").exit_code == 0
    wait_status("hello-002", "us next (deploy approve releases it)")
    assert mf_eu.current() == "hello-002"
    res = deploy("pause", "hello-002")
    assert res.exit_code == 3 and "is between regions" in res.output, res.output
    res = deploy("rollback", "hello-002", "--reason", "wrong in eu")
    assert res.exit_code == 0, res.output
    assert (mf_eu.current(), mf_us.current()) == ("hello-001", "hello-001")
    assert (omega_current(eu), omega_current(us)) == ("hello-001", "hello-001")
    status = deploy("status", "hello-002").output
    assert "rolled_back" in status and "Regions:     eu completed, us not started" in status
    with us.client() as client:
        assert "hello-002" not in {r["update_id"] for r in client.releases()["releases"]}


def test_an_automatic_rollback_in_a_later_region_takes_the_earlier_ones_back(
    regions: dict[str, Any],
) -> None:
    root = regions["root"]
    (eu, mf_eu), (us, mf_us) = regions["eu"], regions["us"]
    # 2.0.0 fails where REGION_OK is 1: mf-us only; and the rollout rolls back by itself.
    two_releases(root, fails_where="1", auto_rollback=True)
    res = deploy("approve", "hello-002", "--as", "bob")
    assert res.exit_code == 1, res.output
    assert "region eu completed" in res.output and "rolled_back" in res.output
    assert (mf_eu.current(), mf_us.current()) == ("hello-001", "hello-001")
    assert (omega_current(eu), omega_current(us)) == ("hello-001", "hello-001")
