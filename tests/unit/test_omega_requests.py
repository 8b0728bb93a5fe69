"""The bodies of OMEGA's fleet routes (ashat.fleet.omega_requests): defaults, and a 400
naming the field for anything else."""

from __future__ import annotations

from typing import Any

import pytest

from ashat.agent.errors import RequestInvalid
from ashat.clock import iso_from_timestamp
from ashat.fleet.omega_requests import (
    Report,
    RollbackRequest,
    RolloutRequest,
    approval_record,
    license_id,
)


def test_a_rollout_request_takes_the_distribution_defaults() -> None:
    req = RolloutRequest.parse({"update_id": "r1"})
    assert req == RolloutRequest("r1", "stable", (10, 50, 100), 0.2, 600.0, True)
    full = RolloutRequest.parse(
        {
            "update_id": "r2",
            "channel": "beta",
            "waves": [25, 100],
            "max_failure_ratio": 0,
            "wave_timeout_s": 5,
            "auto_rollback": False,
        }
    )
    assert full == RolloutRequest("r2", "beta", (25, 100), 0.0, 5.0, False)
    gated = RolloutRequest.parse({"update_id": "r3", "waves": [10, 50, 100], "pause_after": [0, 1]})
    assert gated.pause_after == (0, 1)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "'update_id' must be an update id"),
        ({"update_id": "../x"}, "'update_id' must be an update id"),
        ({"update_id": "r1", "channel": "Stable!"}, "'channel'"),
        ({"update_id": "r1", "waves": [10, 50]}, "'waves'"),
        ({"update_id": "r1", "waves": "10,100"}, "'waves'"),
        ({"update_id": "r1", "max_failure_ratio": 1.5}, "'max_failure_ratio'"),
        ({"update_id": "r1", "max_failure_ratio": True}, "'max_failure_ratio'"),
        ({"update_id": "r1", "wave_timeout_s": 0}, "'wave_timeout_s'"),
        ({"update_id": "r1", "auto_rollback": "yes"}, "'auto_rollback'"),
        ({"update_id": "r1", "waves": [10, 100], "pause_after": [1]}, "'pause_after'"),
        ({"update_id": "r1", "pause_after": [1, 0]}, "'pause_after'"),
        ({"update_id": "r1", "pause_after": "0"}, "'pause_after'"),
    ],
)
def test_a_bad_rollout_request_names_its_field(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(RequestInvalid, match=needle):
        RolloutRequest.parse(body)


def test_rollback_and_report_bodies() -> None:
    assert RollbackRequest.parse({"from": "r2"}) == RollbackRequest(
        "r2",
        None,
        "operator rollback",
        None,  # the release's own rollout's timeout
    )
    assert RollbackRequest.parse({"from": "r2", "wave_timeout_s": 30}).wave_timeout_s == 30.0
    with pytest.raises(RequestInvalid, match="wave_timeout_s"):
        RollbackRequest.parse({"from": "r2", "wave_timeout_s": -1})
    assert RollbackRequest.parse({"from": "r2", "to": "r1", "reason": "x" * 5000}).reason == (
        "x" * 2000
    )
    with pytest.raises(RequestInvalid, match="'from'"):
        RollbackRequest.parse({"to": "r1"})
    report = Report.parse({"rollout_id": "ro-1", "update_id": "r1", "status": "failed"})
    assert (report.installed, report.status, report.reason) == (False, "failed", None)
    with pytest.raises(RequestInvalid, match="'status'"):
        Report.parse({"rollout_id": "ro-1", "update_id": "r1", "status": "done"})
    with pytest.raises(RequestInvalid, match="'rollout_id'"):
        Report.parse({"rollout_id": "", "update_id": "r1", "status": "installed"})


def test_approval_records_and_license_ids() -> None:
    record = {"update_id": "r1", "sequence": 3, "approvers": [], "approved_at": "now"}
    assert approval_record("r1", {"approval": record}) == record
    assert approval_record("r1", {"approval": {}}) == {}
    for bad in ({}, {"approval": []}, {"approval": {"update_id": "r2"}}):
        with pytest.raises(RequestInvalid, match="approval record"):
            approval_record("r1", bad)
    with pytest.raises(RequestInvalid, match="'sequence'"):
        approval_record("r1", {"approval": {"sequence": "3"}})
    with pytest.raises(RequestInvalid, match="over"):
        approval_record("r1", {"approval": {"comment": "x" * 600_000}})
    assert license_id({"license_id": "lic-0123"}) == "lic-0123"
    with pytest.raises(RequestInvalid, match="'license_id'"):
        license_id({"license_id": "a b"})
    assert iso_from_timestamp(0) == "1970-01-01T00:00:00Z"
