"""The agent's Prometheus metrics, in a registry of its own (``GET /metrics``).

A private :class:`~prometheus_client.CollectorRegistry` keeps two agents in one process
(tests, the demo) from sharing counters, and keeps the client library's process-wide
default collectors out of the answer.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)


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
        self.releases_staged = Counter(
            "ashat_agent_releases_staged", "Releases newly staged", registry=r
        )
        self.activations = Counter(
            "ashat_agent_activations", "Activations by result", ["result"], registry=r
        )
        self.rollbacks = Counter(
            "ashat_agent_rollbacks", "Rollbacks by result", ["result"], registry=r
        )
        self.requests = Counter(
            "ashat_agent_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.app_up = Gauge(
            "ashat_agent_app_up", "1 while the current release's app process runs", registry=r
        )
        info = Gauge("ashat_agent_info", "The agent's role", ["role"], registry=r)
        info.labels(role=role).set(1)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
