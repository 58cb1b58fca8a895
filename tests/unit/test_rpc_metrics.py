"""RPC tallies as Prometheus metrics: counts by code, a cumulative latency histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hpcgate.server.rpc.metrics import BUCKETS, RpcMetrics


def scrape(metrics: RpcMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``metrics`` as exposed to Prometheus, keyed by name and labels."""
    registry = CollectorRegistry()
    metrics.register(registry)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_by_method_and_code() -> None:
    metrics = RpcMetrics()
    for code in ("OK", "OK", "NOT_FOUND"):
        metrics.method("/a.S/M").record(code, 0.002)
    metrics.method("/a.S/N").record("OK", 0.002)
    samples = scrape(metrics)
    total = "hpcgate_rpc_total"
    assert samples[(total, (("code", "OK"), ("method", "/a.S/M")))] == 2
    assert samples[(total, (("code", "NOT_FOUND"), ("method", "/a.S/M")))] == 1
    assert samples[(total, (("code", "OK"), ("method", "/a.S/N")))] == 1


def test_latency_buckets_are_cumulative_and_inclusive() -> None:
    metrics = RpcMetrics()
    stats = metrics.method("/a.S/M")
    for seconds in (0.0005, 0.001, 0.003, 0.003, 120.0):  # 0.001 falls in le="0.001"
        stats.record("OK", seconds)
    samples = scrape(metrics)

    def bucket(le: str) -> float:
        return samples[("hpcgate_rpc_seconds_bucket", (("le", le), ("method", "/a.S/M")))]

    assert bucket("0.001") == 2
    assert bucket("0.0025") == 2
    assert bucket("0.005") == 4
    assert bucket("60.0") == 4
    assert bucket("+Inf") == 5
    assert samples[("hpcgate_rpc_seconds_count", (("method", "/a.S/M"),))] == 5
    assert abs(samples[("hpcgate_rpc_seconds_sum", (("method", "/a.S/M"),))] - 120.0075) < 1e-9
    assert len(BUCKETS) + 1 == sum(1 for name, _ in samples if name.endswith("_bucket"))
