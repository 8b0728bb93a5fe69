"""Bake time and metric analysis between waves (issue 19, ``ashat/bake.py``): the policy's
checks (each bad input named), and the decision over a bake and its last evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from ashat.bake import BakePolicy, Evaluation, PolicyError, Query, decide, values_of

PROM = "http://127.0.0.1:9090"
UP = {"name": "up", "query": "min(up)", "min": 1}


def policy(**table: Any) -> BakePolicy:
    return BakePolicy.parse(table, "[distribution]")


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"bake_s": -1}, "bake_s must be 0-86400"),
        ({"bake_s": True}, "bake_s must be"),
        ({"bake_s": 5, "prometheus": "prom:9090"}, "prometheus must be an http(s) URL"),
        ({"bake_s": 5, "analysis": [UP]}, "needs [distribution].prometheus"),
        ({"prometheus": PROM, "analysis": [UP]}, "needs [distribution].bake_s > 0"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": "up"}, "must be a list"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{"name": "x", "query": "up"}]},
         "needs max or min"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{**UP, "maximum": 1}]},
         "unknown key 'maximum'"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{**UP, "name": "a b"}]}, "short name"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{**UP, "query": " "}]},
         "PromQL expression"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{**UP, "min": "1"}]},
         "min must be a number"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [{**UP, "max": 0}]},
         "min 1 is above max 0"),
        ({"bake_s": 5, "prometheus": PROM, "analysis": [UP, UP]}, "each name may appear once"),
    ],
)  # fmt: skip
def test_a_bad_policy_is_refused_naming_the_key(table: dict[str, Any], needle: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(**table)
    assert needle in str(info.value)


def test_a_good_policy_round_trips() -> None:
    p = policy(bake_s=30, prometheus=PROM + "/", analysis=[UP, {"name": "err", "query": "x",
                                                               "max": 0.01}])  # fmt: skip
    assert p.prometheus == PROM and p.active
    assert BakePolicy.parse(p.to_json(), "x") == p
    assert not policy().active


def test_a_query_judges_every_series() -> None:
    q = Query("err", "x", max=0.05, min=0)
    assert q.judge([0.0, 0.05]) is None
    assert q.judge([0.01, 0.2]) == "err = 0.2, above its max 0.05"
    assert q.judge([-1]) == "err = -1, below its min 0"
    assert q.judge([float("nan")]) == "err is NaN"


def test_prometheus_answers_are_read_and_no_data_never_passes() -> None:
    vector = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1, "2"]}, {"metric": {}, "value": [1, "3.5"]}]}}  # fmt: skip
    assert values_of(vector) == [2.0, 3.5]
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "7"]}}
    assert values_of(scalar) == [7.0]
    for bad, needle in [
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, "no data"),
        ({"status": "error", "error": "parse error"}, "parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "a matrix"),
        (None, "not a success"),
    ]:
        with pytest.raises(ValueError, match=needle):
            values_of(bad)


def test_the_decision_over_a_bake() -> None:
    p = policy(bake_s=10, prometheus=PROM, analysis=[UP])
    t0, timeout = 1000.0, 100.0

    def at(now: float, last: Evaluation | None) -> tuple[str, str | None]:
        return decide(p, t0, last, now, t0 - 5, timeout)

    assert at(t0 + 1, None) == ("wait", None)
    assert at(t0 + 11, Evaluation(t0 + 9)) == ("wait", None)  # judged before the bake ended
    assert at(t0 + 11, Evaluation(t0 + 10.5)) == ("pass", None)
    assert at(t0 + 3, Evaluation(t0 + 2, failed="err = 1"))[0] == "fail"
    assert at(t0 + 50, Evaluation(t0 + 49, error="Prometheus down")) == ("wait", None)
    verdict, why = at(t0 + 96, Evaluation(t0 + 95, error="Prometheus down"))
    assert verdict == "fail" and why is not None and "Prometheus down" in why
    assert "wave_timeout_s (100 s)" in why
    # A bake with no analysis passes once its time is up.
    plain = policy(bake_s=10)
    assert decide(plain, t0, None, t0 + 9, t0, timeout) == ("wait", None)
    assert decide(plain, t0, None, t0 + 10, t0, timeout) == ("pass", None)
