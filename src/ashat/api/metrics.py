"""``/metrics`` of ``ashat serve``, in a registry of its own.

Counters of the server's own requests and refusals, and, read from the control store at
each scrape (so deployments driven by the CLI count too): deployments by state, check
results and durations per check, approvals, users by role, audit events, bytes and blobs
pushed and skipped; for rollouts in flight, their progress as OMEGA reports it (asked with
a short timeout; ``ashat_omega_up`` says whether it answered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

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

OMEGA_SCRAPE_TIMEOUT_S = 3.0
log = logging.getLogger("ashat.api")


class StoreCollector:
    def __init__(self, open_project: Callable[[], Project]) -> None:
        self.open_project = open_project

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

    @staticmethod
    def _rollouts(project: Project, flights: list[tuple[str, str]]) -> Iterator[Metric]:
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
        up = GaugeMetricFamily("ashat_omega_up", "1 when OMEGA answered this scrape's questions")
        server = project.store.server("omega")
        if server is not None:  # asked on each scrape, a rollout in flight or not
            answered = 1
            from ashat.errors import AshatError
            from ashat.ops.project import client_for

            try:
                with client_for(server, timeout_s=OMEGA_SCRAPE_TIMEOUT_S) as omega:
                    if not flights:
                        omega.health()
                    for update_id, rollout_id in flights:
                        status = omega.rollout_status(rollout_id)
                        totals = status.get("totals") or {}
                        for key in ("targeted", "installed", "failed", "pending"):
                            value = totals.get(key)
                            if isinstance(value, int):
                                mainframes.add_metric([update_id, rollout_id, key], value)
                        targeted = totals.get("targeted") or 0
                        done = (totals.get("installed") or 0) + (totals.get("failed") or 0)
                        ratio.add_metric(
                            [update_id, rollout_id], done / targeted if targeted else 0
                        )
            except AshatError as e:
                log.warning("metrics: OMEGA did not answer: %s", e.message)
                answered = 0
            up.add_metric([], answered)
            yield up
        yield mainframes
        yield ratio


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
