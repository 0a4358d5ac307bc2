"""Prometheus text metrics: requests by route and status, a latency histogram, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetower.serve.service import Snapshot

import threading
from collections import Counter

ROUTES = ("/recall", "/health", "/metrics")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.buckets: dict[str, list[int]] = {r: [0] * len(LATENCY_BUCKETS_S) for r in ROUTES}
        self.sums: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.unknown_history = 0
        self.switches = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[route, status] += 1
            if route in self.buckets:
                for i, bound in enumerate(LATENCY_BUCKETS_S):
                    if seconds <= bound:
                        self.buckets[route][i] += 1
                self.sums[route] += seconds
                self.counts[route] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def unknown_ids(self, n: int) -> None:
        with self._lock:
            self.unknown_history += n

    def switched(self) -> None:
        with self._lock:
            self.switches += 1

    def render(self, snapshot: Snapshot | None, ready: bool) -> str:
        with self._lock:
            lines = [
                "# HELP finetower_requests_total HTTP requests by route and status.",
                "# TYPE finetower_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'finetower_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP finetower_request_seconds Request latency, first byte in to last out.",
                "# TYPE finetower_request_seconds histogram",
            ]
            for route, counts in self.buckets.items():
                label, total = f'route="{route}"', self.counts[route]
                for bound, n in zip(LATENCY_BUCKETS_S, counts, strict=True):
                    lines.append(f'finetower_request_seconds_bucket{{{label},le="{bound}"}} {n}')
                lines += [
                    f'finetower_request_seconds_bucket{{{label},le="+Inf"}} {total}',
                    f"finetower_request_seconds_sum{{{label}}} {self.sums[route]:.6f}",
                    f"finetower_request_seconds_count{{{label}}} {total}",
                ]
            lines += [
                "# HELP finetower_errors_total Failures: store unreachable, version gone, "
                "load failed, internal.",
                "# TYPE finetower_errors_total counter",
            ]
            for kind, n in sorted(self.errors.items()):
                lines.append(f'finetower_errors_total{{kind="{kind}"}} {n}')
            lines += [
                "# TYPE finetower_unknown_history_ids_total counter",
                f"finetower_unknown_history_ids_total {self.unknown_history}",
                "# TYPE finetower_version_switches_total counter",
                f"finetower_version_switches_total {self.switches}",
            ]
        lines += ["# TYPE finetower_ready gauge", f"finetower_ready {int(ready)}"]
        if snapshot is not None:
            lines += [
                "# TYPE finetower_model_info gauge",
                f'finetower_model_info{{model="{snapshot.fingerprint}",'
                f'version="{snapshot.version or ""}"}} 1',
                "# TYPE finetower_index_items gauge",
                f"finetower_index_items {len(snapshot.index)}",
            ]
        return "\n".join(lines) + "\n"
