"""The agent's Prometheus metrics, in a registry of its own (``GET /metrics``).

A private :class:`~prometheus_client.CollectorRegistry` keeps two agents in one process
(tests, the demo) from sharing counters, and keeps the client library's process-wide
default collectors out of the answer. OMEGA (:mod:`ashat.fleet.omega_metrics`) and a
mainframe's pull loop (:mod:`ashat.fleet.mainframe`) add their own metrics to the same
registry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# An activation runs a prepare hook, starts an app and waits for its health: from a fraction
# of a second to the few minutes a health_timeout_s allows.
ACTIVATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.blobs_received = Counter(
            "ashat_agent_blobs_received", "Blobs newly stored", registry=r
        )
        self.blob_bytes_received = Counter(
            "ashat_agent_blob_bytes_received", "Bytes of blobs received", registry=r
        )
        self.blob_bytes_freed = Counter(
            "ashat_agent_blob_bytes_freed",
            "Bytes of blobs deleted because no kept release uses them",
            registry=self.registry,
        )
        self.app_restarts = Counter(
            "ashat_agent_app_restarts",
            "Times the current release's app was restarted after it exited",
            registry=r,
        )
        self.releases_damaged = Counter(
            "ashat_agent_releases_damaged",
            "Activations and rollbacks refused: the release's files were not the signed bytes",
            registry=r,
        )
        self.releases_staged = Counter(
            "ashat_agent_releases_staged", "Releases newly staged", registry=r
        )
        self.activations = Counter(
            "ashat_agent_activations", "Activations by result", ["result"], registry=r
        )
        self.rollbacks = Counter(
            "ashat_agent_rollbacks", "Rollbacks by result", ["result"], registry=r
        )
        self.activation_seconds = Histogram(
            "ashat_agent_activation_seconds",
            "Time to activate or roll back: prepare hook, app start, health wait, switch",
            ["how", "result"],
            buckets=ACTIVATION_BUCKETS,
            registry=r,
        )
        for how in ("activate", "rollback"):
            for result in ("ok", "failed"):
                self.activation_seconds.labels(how=how, result=result)
        self.requests = Counter(
            "ashat_agent_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.app_up = Gauge(
            "ashat_agent_app_up", "1 while the current release's app process runs", registry=r
        )
        # whether an app should run here at all (an OMEGA replica that never activated a
        # release has app_up 0 for good): what the AshatAppDown alert joins on
        self.release_current = Gauge(
            "ashat_agent_release_current",
            "1 while a release is current here (its app should run)",
            registry=r,
        )
        info = Gauge("ashat_agent_info", "The agent's role", ["role"], registry=r)
        info.labels(role=role).set(1)

    @contextlib.contextmanager
    def switching(self, how: str) -> Iterator[None]:
        """Time an activation (``how`` is ``activate`` or ``rollback``) and count it: any
        exception out of the block is a failed one."""
        counter = self.activations if how == "activate" else self.rollbacks
        started = time.monotonic()
        result = "failed"
        try:
            yield
            result = "ok"
        finally:
            elapsed = time.monotonic() - started
            self.activation_seconds.labels(how=how, result=result).observe(elapsed)
            counter.labels(result=result).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
