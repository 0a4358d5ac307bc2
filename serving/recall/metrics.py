"""Prometheus metrics of one recall service (its own registry: several apps per process in
tests, no clash in the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = ("/recall", "/health", "/metrics")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Requests by route and status, latency, failures by kind, the served version."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "finetower_recall_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "finetower_recall_request_seconds",
            "Request latency, first byte in to last byte out.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.errors = Counter(
            "finetower_recall_errors",
            "Failures: tower_unavailable, version_mismatch, store_unavailable, load_failed, "
            "deadline, short_list, version_gone, store_error.",
            ["kind"],
            registry=self.registry,
        )
        self.unknown_history = Counter(
            "finetower_recall_unknown_history_ids",
            "History ids without a pretrained vector in the served version.",
            registry=self.registry,
        )
        self.switches = Counter(
            "finetower_recall_version_switches",
            "Times the served version changed.",
            registry=self.registry,
        )
        self.version = Gauge(
            "finetower_recall_version",
            "The pushed version served (0: none).",
            registry=self.registry,
        )
        self.items = Gauge(
            "finetower_recall_items", "Items in the served index.", registry=self.registry
        )
        self.ready = Gauge(
            "finetower_recall_ready", "1 when a version is served.", registry=self.registry
        )

    def watch_serving_log(self, serving_log) -> None:
        """Export a `skew_log.ServingLog`'s row counts (read when scraped)."""

        class _Rows:
            def collect(self):
                family = CounterMetricFamily(
                    "finetower_recall_serving_log_rows",
                    "User vectors of the serving log: sampled, dropped (queue full or a "
                    "failed write), written.",
                    labels=["state"],
                )
                for state in ("sampled", "dropped", "written"):
                    family.add_metric([state], getattr(serving_log, state))
                yield family

        self.registry.register(_Rows())

    def observe(self, route: str, status: int, seconds: float) -> None:
        route = route if route in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
