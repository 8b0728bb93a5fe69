"""OMEGA's fleet metrics, in its agent's registry (``GET /metrics``).

:class:`FleetMetrics` holds what OMEGA counts as it goes (polls, refusals, directives,
reports, finished rollouts) and the gauges it refreshes under its lock. :class:`FleetCollector`
reads ``fleet.db`` when ``/metrics`` is rendered, so what depends on the time of the scrape is
right at that time, with no timer to keep it so:

- ``ashat_fleet_mainframe_last_seen_age_seconds{mainframe_id}``: seconds since each
  registered mainframe last polled (``last_seen`` is kept to the second);
- ``ashat_fleet_mainframes{license_status}``: registered mainframes by license status, as
  ``GET /v1/fleet/mainframes`` computes it (``revoked``, ``expired``, else the outcome of the
  last poll);
- ``ashat_fleet_rollout_targets{update_id,rollout_id,status}``: the ``totals`` of the
  rollout status answer (``targeted`` so far, ``installed``, ``failed``, ``pending``) for the
  running rollouts and the newest :data:`RECENT_FINISHED` of those that ended — the numbers
  ``ashat serve`` asks OMEGA for (``ashat_rollout_mainframes``), here without asking.
- ``ashat_fleet_db_statements_total``: statements this process sent to the fleet database
  (round-trips: how much each poll and report costs the database replicas share).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from ashat.fleet.omega import Omega

RECENT_FINISHED = 5  # finished rollouts whose progress stays on /metrics
LICENSE_STATUSES = ("ok", "expired", "revoked")  # always present; refusal reasons as they occur
TARGET_STATUSES = ("targeted", "installed", "failed", "pending")


class FleetMetrics:
    """OMEGA's counters, and the gauge of running rollouts :class:`~.omega.Omega` keeps."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.polls = Counter(
            "ashat_fleet_polls", "Polls answered, by result", ["result"], registry=r
        )
        self.license_refusals = Counter(
            "ashat_fleet_license_refusals", "Licenses refused, by reason", ["reason"], registry=r
        )
        self.directives = Counter(
            "ashat_fleet_directives", "Directives sent, by action", ["action"], registry=r
        )
        self.reports = Counter(
            "ashat_fleet_reports", "Reports from mainframes, by status", ["status"], registry=r
        )
        self.rollouts = Counter(
            "ashat_fleet_rollouts_finished",
            "Rollouts that ended, by kind and state",
            ["kind", "state"],
            registry=r,
        )
        self.blob_downloads = Counter(
            "ashat_fleet_blob_downloads",
            "Licensed blob downloads allowed, by who sends the bytes (omega: OMEGA or the "
            "nginx in front of it; mirror: a signed redirect to --blob-mirror)",
            ["by"],
            registry=r,
        )
        for by in ("omega", "mirror"):
            self.blob_downloads.labels(by=by)
        self.pack_downloads = Counter(
            "ashat_fleet_pack_downloads",
            "Licensed pack downloads allowed (a run of a release's blobs in one answer), by "
            "who sends the bytes (omega: OMEGA or the nginx in front of it; mirror: a signed "
            "redirect to --blob-mirror)",
            ["by"],
            registry=r,
        )
        for by in ("omega", "mirror"):
            self.pack_downloads.labels(by=by)
        self.running = Gauge("ashat_fleet_rollouts_running", "Rollouts running", registry=r)
        self.waiting = Gauge("ashat_fleet_polls_waiting", "Long polls being held", registry=r)


def _epoch(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (``Z`` or an offset); None if malformed."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo is not None else None


class FleetCollector:
    """The fleet's scrape-time gauges (see the module docstring), over one :class:`Omega`."""

    def __init__(self, omega: Omega) -> None:
        self.omega = omega

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "ashat_fleet_mainframe_last_seen_age_seconds",
                "Seconds since each registered mainframe last polled",
                labels=["mainframe_id"],
            ),
            GaugeMetricFamily(
                "ashat_fleet_mainframes",
                "Registered mainframes by license status",
                labels=["license_status"],
            ),
            GaugeMetricFamily(
                "ashat_fleet_rollout_targets",
                "Mainframes of running and recently finished rollouts, by status",
                labels=["update_id", "rollout_id", "status"],
            ),
            GaugeMetricFamily(
                "ashat_fleet_mainframes_by_release",
                "Registered mainframes by the release they run (none: nothing yet)",
                labels=["update_id"],
            ),
            GaugeMetricFamily(
                "ashat_fleet_mainframes_by_app",
                "Registered mainframes by what their last poll said of their app",
                labels=["app"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # The names, without reading fleet.db: the registry refuses a second metric by one.
        yield from self._families()
        yield self._statements(0)

    @staticmethod
    def _statements(n: int) -> CounterMetricFamily:
        return CounterMetricFamily(
            "ashat_fleet_db_statements",
            "Statements sent to the fleet database by this process",
            value=n,
        )

    def collect(self) -> Iterator[Metric]:
        age, mainframes, targets, releases, apps = self._families()
        now = self.omega.now()
        counts = dict.fromkeys(LICENSE_STATUSES, 0)
        by_release: dict[str, int] = {}
        by_app: dict[str, int] = {}
        for mf in self.omega.mainframes()["mainframes"]:
            seen = _epoch(mf["last_seen"])
            if seen is not None:
                age.add_metric([mf["mainframe_id"]], max(0.0, now - seen))
            counts[mf["license_status"]] = counts.get(mf["license_status"], 0) + 1
            release = mf["current"] or "none"
            by_release[release] = by_release.get(release, 0) + 1
            app = mf.get("app") or "unknown"
            by_app[app] = by_app.get(app, 0) + 1
        for status, n in sorted(counts.items()):
            mainframes.add_metric([status], n)
        for release, n in sorted(by_release.items()):
            releases.add_metric([release], n)
        for app, n in sorted(by_app.items()):
            apps.add_metric([app], n)
        controller = self.omega.controller
        for r in self.omega.store.recent_rollouts(RECENT_FINISHED):
            totals = controller.totals(r)
            for status in TARGET_STATUSES:
                targets.add_metric([r.update_id, r.rollout_id, status], totals[status])
        yield age
        yield mainframes
        yield targets
        yield releases
        yield apps
        yield self._statements(self.omega.store.statements)
