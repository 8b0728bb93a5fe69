"""``/metrics`` of ``ashat serve``, in a registry of its own.

Counters of the server's own requests and refusals, and, read from the control store at
each scrape (so deployments driven by the CLI count too): deployments by state, check
results and durations per check, approvals, users by role, audit events, bytes and blobs
pushed and skipped; for rollouts in flight, their progress as OMEGA reports it (asked with
a short timeout, by one scrape at a time, at most once in a few seconds: :class:`OmegaProbe`;
``ashat_omega_up`` says whether it answered).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from ashat.ops.project import Project
from ashat.ops.users import UserRole
from ashat.store.stats import CheckStats, PushTotals
from ashat.workflow.states import State

OMEGA_SCRAPE_TIMEOUT_S = 3.0  # each request to OMEGA of a scrape, not retried
OMEGA_ANSWERS_S = 5.0  # OMEGA's answers serve the scrapes of this many seconds
log = logging.getLogger("ashat.api")


class StoreCollector:
    def __init__(self, open_project: Callable[[], Project]) -> None:
        self.open_project = open_project
        self._omega = OmegaProbe()

    def describe(self) -> list[Metric]:
        return []  # nothing to collect at registration: the store is read at each scrape

    def collect(self) -> Iterator[Metric]:
        from ashat.store import stats

        project = self.open_project()
        try:
            db = project.store.db
            yield from self._deployments(stats.deployments_by_state(db))
            yield from self._checks(stats.check_stats(db))
            approvals = CounterMetricFamily("ashat_approvals", "Approvals recorded")
            approvals.add_metric([], stats.approvals_count(db))
            yield approvals
            users = GaugeMetricFamily("ashat_users", "API users by role", labels=["role"])
            by_role = stats.users_by_role(db)
            for role in UserRole:
                users.add_metric([role.value], by_role.get(role.value, 0))
            yield users
            events = GaugeMetricFamily("ashat_audit_events", "Events in the audit chain")
            events.add_metric([], stats.audit_events(db))
            yield events
            yield from self._push(stats.push_totals(db))
            yield from self._rollouts(project, stats.rollouts_in_flight(db))
        finally:
            project.close()

    @staticmethod
    def _deployments(counts: dict[str, int]) -> Iterator[Metric]:
        g = GaugeMetricFamily("ashat_deployments", "Deployments by state", labels=["state"])
        for s in State:
            g.add_metric([s.value], counts.get(s.value, 0))
        yield g

    @staticmethod
    def _checks(cs: CheckStats) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "ashat_check_results",
            "Verification results by check and status",
            labels=["check", "status"],
        )
        for (check, status), n in sorted(cs.results.items()):
            results.add_metric([check, status], n)
        yield results
        duration = SummaryMetricFamily(
            "ashat_check_duration_seconds", "Verification check durations", labels=["check"]
        )
        for check in sorted(cs.duration_count):
            duration.add_metric([check], cs.duration_count[check], cs.duration_sum[check])
        yield duration
        last = GaugeMetricFamily(
            "ashat_check_last_duration_seconds",
            "Duration of each check's newest run",
            labels=["check"],
        )
        passed = GaugeMetricFamily(
            "ashat_check_last_passed", "1 when each check's newest result passed", labels=["check"]
        )
        for check in sorted(cs.last_duration):
            last.add_metric([check], cs.last_duration[check])
            passed.add_metric([check], 1 if cs.last_status[check] in ("passed", "skipped") else 0)
        yield last
        yield passed

    @staticmethod
    def _push(t: PushTotals) -> Iterator[Metric]:
        for name, text, value in (
            ("ashat_push_bytes_sent", "Bytes sent to PUBLIC by pushes", t.bytes_sent),
            ("ashat_push_bytes_skipped", "Bytes PUBLIC already had (not sent)", t.bytes_skipped),
            ("ashat_push_blobs_sent", "Blobs sent to PUBLIC by pushes", t.blobs_sent),
            ("ashat_push_blobs_skipped", "Blobs PUBLIC already had (not sent)", t.blobs_skipped),
        ):
            c = CounterMetricFamily(name, text)
            c.add_metric([], value)
            yield c

    def _rollouts(self, project: Project, flights: list[tuple[str, str]]) -> Iterator[Metric]:
        mainframes = GaugeMetricFamily(
            "ashat_rollout_mainframes",
            "Mainframes of each rollout in flight, by status",
            labels=["update_id", "rollout_id", "status"],
        )
        ratio = GaugeMetricFamily(
            "ashat_rollout_progress_ratio",
            "Share of the targeted mainframes that reported (installed or failed)",
            labels=["update_id", "rollout_id"],
        )
        server = project.store.server("omega")
        if server is not None:  # asked on each scrape, a rollout in flight or not
            answered, totals = self._omega.answers(server, tuple(flights))
            for (update_id, rollout_id), of_rollout in totals.items():
                for key in ("targeted", "installed", "failed", "pending"):
                    value = of_rollout.get(key)
                    if isinstance(value, int):
                        mainframes.add_metric([update_id, rollout_id, key], value)
                targeted = of_rollout.get("targeted") or 0
                done = (of_rollout.get("installed") or 0) + (of_rollout.get("failed") or 0)
                ratio.add_metric([update_id, rollout_id], done / targeted if targeted else 0)
            up = GaugeMetricFamily(
                "ashat_omega_up", "1 when OMEGA answered this scrape's questions"
            )
            up.add_metric([], answered)
            yield up
        yield mainframes
        yield ratio


Flights = tuple[tuple[str, str], ...]  # (update id, rollout id) of each rollout in flight


class OmegaProbe:
    """OMEGA's answers for ``/metrics``: asked at most once per :data:`OMEGA_ANSWERS_S`
    and by one scrape at a time, each request given up after OMEGA_SCRAPE_TIMEOUT_S (no
    retries). ``/metrics`` needs no credentials, so scrapes sent by the hundred must not each
    make a call to OMEGA (with its token) nor hold a worker thread while OMEGA is slow: a
    scrape that comes while another asks takes the last answers (none yet: OMEGA not up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, Flights, int, dict[tuple[str, str], dict[str, Any]]] | None = None

    def answers(
        self, server: Any, flights: Flights
    ) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
        """``(1 if OMEGA answered else 0, {(update id, rollout id): totals})``."""
        last = self._last
        if last is not None and last[1] == flights and time.monotonic() - last[0] < OMEGA_ANSWERS_S:
            return last[2], last[3]
        if not self._lock.acquire(blocking=False):  # another scrape is asking OMEGA now
            return (last[2], last[3]) if last is not None and last[1] == flights else (0, {})
        try:
            answered, totals = self._ask(server, flights)
            self._last = (time.monotonic(), flights, answered, totals)
            return answered, totals
        finally:
            self._lock.release()

    @staticmethod
    def _ask(server: Any, flights: Flights) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
        from ashat.errors import AshatError
        from ashat.ops.project import client_for

        totals: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            with client_for(server, timeout_s=OMEGA_SCRAPE_TIMEOUT_S, retries=0) as omega:
                if not flights:
                    omega.health()
                for update_id, rollout_id in flights:
                    of_rollout = omega.rollout_status(rollout_id).get("totals")
                    totals[(update_id, rollout_id)] = (
                        of_rollout if isinstance(of_rollout, dict) else {}
                    )
        except AshatError as e:
            log.warning("metrics: OMEGA did not answer: %s", e.message)
            return 0, totals
        return 1, totals


class ApiMetrics:
    def __init__(self, open_project: Callable[[], Project]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ashat_api_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.refusals = Counter(
            "ashat_api_refusals",
            "Requests refused for their credentials (401) or role (403)",
            ["status"],
            registry=r,
        )
        r.register(StoreCollector(open_project))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
