"""The edge's Prometheus metrics, scraped on a port of their own (``--metrics-listen``).

Off the public API on purpose: the REST port is what a load balancer
exposes, the metrics port is for the site's Prometheus only (as the
server's ``server.metrics_listen``).

- ``hpcgate_edge_requests_total{method, route, status}``: requests answered,
  by route template (bounded: one per ``google.api.http`` rule, plus
  ``/healthz``, ``/readyz``, ``/openapi.json`` and ``-`` for no route);
- ``hpcgate_edge_request_duration_seconds{route}``: time to the end of the
  response (a watch counts when its stream ends);
- ``hpcgate_edge_requests_in_flight``: requests being answered, streams too;
- ``hpcgate_edge_upstream_errors_total{code}``: calls to the servers that
  failed without a server's answer (the gRPC library's own status:
  unreachable, deadline, message too large), by gRPC code.

Tallied in plain numbers on the event loop's thread, as the server's RPC
metrics are (``hpcgate.server.rpc.metrics`` says why): prometheus_client's
``Counter``, ``Gauge`` and ``Histogram`` take a lock per update, which cost
the edge a tenth of its instructions per small request. The scrape (in the
metrics server's thread) copies them under the GIL and hands them to
prometheus_client as a custom collector, so the exposition stays the
library's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LE = [*map(floatToGoString, BUCKETS), "+Inf"]


class RouteStats:
    """One route template's answers, by (method, status), and their durations."""

    __slots__ = ("answers", "durations", "route", "total_seconds")

    def __init__(self, route: str) -> None:
        self.route = route
        self.answers: dict[tuple[str, int], int] = {}
        self.durations = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; last: +Inf
        self.total_seconds = 0.0

    def record(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        self.answers[key] = self.answers.get(key, 0) + 1
        self.durations[bisect_left(BUCKETS, seconds)] += 1
        self.total_seconds += seconds


class EdgeMetrics(Collector):
    """Everything the edge counts, exported as four metric families."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.in_flight = 0
        self.upstream_errors: dict[str, int] = {}

    def route(self, route: str) -> RouteStats:
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats(route)
        return stats

    def upstream_error(self, code: str) -> None:
        """Count one call that failed in transport (``code``: the gRPC status name)."""
        self.upstream_errors[code] = self.upstream_errors.get(code, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "hpcgate_edge_requests",
            "HTTP requests the edge answered",
            labels=["method", "route", "status"],
        )
        durations = HistogramMetricFamily(
            "hpcgate_edge_request_duration_seconds",
            "Time from a request's start to the end of its response",
            labels=["route"],
        )
        for stats in list(self.routes.values()):
            for (method, status), count in stats.answers.copy().items():
                requests.add_metric([method, stats.route, str(status)], count)
            running = 0
            cumulative = []
            for le, count in zip(_LE, stats.durations.copy(), strict=True):
                running += count
                cumulative.append((le, running))
            durations.add_metric([stats.route], cumulative, stats.total_seconds)
        upstream = CounterMetricFamily(
            "hpcgate_edge_upstream_errors",
            "Calls to the servers that ended without a server's answer, by gRPC code",
            labels=["code"],
        )
        for code, count in self.upstream_errors.copy().items():
            upstream.add_metric([code], count)
        yield requests
        yield durations
        yield GaugeMetricFamily(
            "hpcgate_edge_requests_in_flight", "HTTP requests being answered", self.in_flight
        )
        yield upstream


EDGE_METRICS = EdgeMetrics()
REGISTRY.register(EDGE_METRICS)


def upstream_error(code: str) -> None:
    """Count one call that failed in transport (``code``: the gRPC status name)."""
    EDGE_METRICS.upstream_error(code)


def serve_metrics(listen: str) -> int:
    """Serve ``/metrics`` on ``host:port`` (a thread of its own); returns the port."""
    host, _, port = listen.rpartition(":")
    server, _ = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    return int(server.server_port)
