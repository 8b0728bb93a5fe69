"""contrib/prometheus and contrib/grafana against Debian's real Prometheus (issue 21): the
configuration and the alert rules pass promtool, and with Prometheus scraping live agents,
a mainframe and ``ashat serve``, every panel's query and every metric a rule reads returns
series. Skips, saying why, where Prometheus is not installed (.ci/run installs it)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from process_fixtures import PROMETHEUS_DIR, config_for, tool
from support import REPO, wait_for

DASHBOARD = REPO / "contrib" / "grafana" / "ashat.json"


def panel_queries() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in data["panels"] for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    data = yaml.safe_load((PROMETHEUS_DIR / "ashat-rules.yml").read_text())
    return [r for group in data["groups"] for r in group["rules"]]


def test_the_configuration_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool")
    names = ("ashat-serve", "ashat-public", "ashat-omega", "ashat-mainframes")
    config = config_for(tmp_path, {name: ["127.0.0.1:9"] for name in names})
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # every panel's query parses too: checked as recording rules
    yaml = pytest.importorskip("yaml")
    as_rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"ashat:panel_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(panel_queries())
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(as_rules))
    checked = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "panels.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def query(url: str, expr: str) -> list[Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_every_panel_and_rule_reads_series_of_live_servers(
    hello_fleet: Any, serve_process: Any, prometheus: Any, tmp_path: Path
) -> None:
    fleet = hello_fleet(1)
    fleet.ship("hello-001", "1.0.0")
    res = fleet.deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    serve = serve_process(fleet.root)
    hostport = lambda u: urlsplit(u).netloc  # noqa: E731
    config = config_for(
        tmp_path,
        {
            "ashat-serve": [hostport(serve.url)],
            "ashat-public": [hostport(fleet.public.url)],
            "ashat-omega": [hostport(fleet.omega.url)],
            "ashat-mainframes": [hostport(m.url) for m in fleet.mainframes],
        },
    )
    url = prometheus(config)

    def all_up() -> bool:
        found = query(url, "up")
        return len(found) == 4 and all(r["value"][1] == "1" for r in found)

    wait_for(all_up, 30, "Prometheus scraping the four jobs")
    time.sleep(3)  # rate() and increase() need a few samples
    for title, expr in panel_queries():
        wait_for(lambda e=expr: bool(query(url, e)), 20, f"series for panel {title!r}: {expr}")
    for rule in rules():
        for name in sorted(set(re.findall(r"\bashat_[a-z_]+\b", rule["expr"]))):
            assert query(url, f'count({{__name__="{name}"}})'), f"{rule['alert']}: no {name}"
    loaded = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == {r["alert"] for r in rules()}


ANALYSIS = """[distribution]
waves = [50, 100]
max_failure_ratio = 0.5
wave_timeout_s = 60
auto_rollback = true
bake_s = 2
prometheus = "{url}"

[[distribution.analysis]]
name = "{name}"
query = '{query}'
{bound}
"""


def _distribution(root: Path, url: str, name: str, query: str, bound: str) -> None:
    """The project's [distribution] table, with a bake and one analysis."""
    toml = root / "ashat.toml"
    head = toml.read_text().split("[distribution]")[0]
    text = ANALYSIS.format(url=url, name=name, query=query, bound=bound)
    toml.write_text(head + text)


def test_a_wave_bakes_and_its_prometheus_analysis_passes_or_halts_and_rolls_back(
    hello_fleet: Any, prometheus: Any, tmp_path: Path
) -> None:
    """Issue 19: each wave bakes ``bake_s`` while OMEGA asks a real Prometheus scraping the
    real mainframes; a bound kept lets the rollout go on, a bound broken halts it in its
    first wave and rolls back who installed; a query Prometheus cannot parse is refused
    before anything starts."""
    fleet = hello_fleet(2)
    hostport = lambda u: urlsplit(u).netloc  # noqa: E731
    config = config_for(
        tmp_path,
        {
            "ashat-serve": ["127.0.0.1:9"],
            "ashat-public": [hostport(fleet.public.url)],
            "ashat-omega": [hostport(fleet.omega.url)],
            "ashat-mainframes": [hostport(m.url) for m in fleet.mainframes],
        },
    )
    url = prometheus(config)
    up = 'up{job="ashat-mainframes"}'
    wait_for(lambda: len(query(url, f"{up} == 1")) == 2, 30, "both mainframes scraped")

    # Kept: both mainframes up, through both bakes.
    _distribution(fleet.root, url, "mainframes_up", f"min({up})", "min = 1")
    fleet.ship("hello-001", "1.0.0")
    t0 = time.monotonic()
    res = fleet.deploy("approve", "hello-001", "--as", "bob")
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 >= 4  # two waves, each baked 2 s
    assert fleet.currents() == ["hello-001", "hello-001"]
    status = json.loads(fleet.deploy("status", "hello-001", "--json").stdout)
    bake = status["rollouts"][-1]["bake"]
    assert bake["bake_s"] == 2 and bake["analysis"][0]["name"] == "mainframes_up"
    assert bake["wave"] == 1 and bake["passed_at"] and bake["last"]["failed"] is None

    # Broken: two mainframes run, at most one may: the first wave halts after its bake.
    _distribution(fleet.root, url, "too_many", f"count({up})", "max = 1")
    fleet.ship("hello-002", "1.0.1")
    res = fleet.deploy("approve", "hello-002", "--as", "bob", "--json")
    data = json.loads(res.stdout)
    assert res.exit_code == 1, res.output
    wait_for(lambda: fleet.currents() == ["hello-001", "hello-001"], 60, "the fleet back")
    status = json.loads(fleet.deploy("status", "hello-002", "--json").stdout)
    install = next(r for r in status["rollouts"] if r["kind"] == "install")
    assert install["state"] == "failed", install
    assert "analysis failed during the bake: too_many = 2, above its max 1" in install["reason"]
    assert install["bake"]["wave"] == 0  # halted in the first wave: the second never started
    shown = fleet.deploy("status", "hello-002").output
    assert "bake after wave 1 (2 s; too_many): FAILED: too_many = 2, above its max 1" in shown
    assert data["state"] in ("distribution_failed", "rolled_back")

    # Unparseable: refused before anything is recorded or sent, naming the analysis.
    _distribution(fleet.root, url, "broken", "sum(", "max = 1")
    fleet.ship("hello-003", "1.0.2")
    res = fleet.deploy("approve", "hello-003", "--as", "bob")
    assert res.exit_code == 2, res.output
    assert "analysis broken: Prometheus cannot parse 'sum('" in res.output
    status = json.loads(fleet.deploy("status", "hello-003", "--json").stdout)
    assert status["deployment"]["state"] == "verified"  # no approval recorded
    with fleet.omega.client() as omega:
        assert omega.health()["current"] == "hello-001"  # OMEGA was not touched
