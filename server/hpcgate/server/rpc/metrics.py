"""RPC counts and latencies for Prometheus, tallied in plain numbers.

``hpcgate_rpc_total{method,code}`` counts RPCs, ``hpcgate_rpc_seconds{method}``
is their latency histogram. Why not prometheus_client's ``Counter`` and
``Histogram``: every ``inc``/``observe`` takes a lock (a histogram two: the
bucket and the sum), and on a server answering ListSystems at concurrency 64
those calls were a visible part of the event-loop thread's time per RPC,
which is what bounds the server's throughput. RPCs are only ever tallied on
the event-loop thread, so plain ints suffice; the scrape (in the metrics
server's thread) reads copies, built under the GIL, and turns them into
metric families through prometheus_client's documented custom-collector
interface, so the exposition format stays the library's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_BOUNDS = (*map(floatToGoString, BUCKETS), "+Inf")  # as prometheus_client's Histogram labels them


class MethodStats:
    """The tallies of one method: calls by status code, and a latency histogram."""

    __slots__ = ("buckets", "codes", "method", "seconds")

    def __init__(self, method: str) -> None:
        self.method = method
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def record(self, code: str, seconds: float) -> None:
        """One RPC that ended with ``code`` (a status code's name) after ``seconds``."""
        self.codes[code] = self.codes.get(code, 0) + 1
        # A bucket counts observations <= its bound: the first bound >= seconds.
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds


class RpcMetrics(Collector):
    """Every method's :class:`MethodStats`, exported as two metric families."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodStats] = {}

    def method(self, method: str) -> MethodStats:
        """The tallies of ``method`` (a full method name), created on first use."""
        stats = self._methods.get(method)
        if stats is None:
            stats = self._methods[method] = MethodStats(method)
        return stats

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "hpcgate_rpc", "RPCs handled, by method and status code", labels=["method", "code"]
        )
        latency = HistogramMetricFamily(
            "hpcgate_rpc_seconds", "RPC latency in seconds, by method", labels=["method"]
        )
        for stats in list(self._methods.values()):
            for code, count in list(stats.codes.items()):
                calls.add_metric([stats.method, code], count)
            buckets, total, seconds = [], 0, stats.seconds
            for bound, count in zip(_BOUNDS, list(stats.buckets), strict=True):
                total += count
                buckets.append((bound, total))
            latency.add_metric([stats.method], buckets, seconds)
        yield calls
        yield latency

    def register(self, registry: CollectorRegistry = REGISTRY) -> RpcMetrics:
        registry.register(self)
        return self


RPC_METRICS = RpcMetrics().register()
