"""/readyz's verdict: cached for READY_TTL, one check for many probes, reasons by failure."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2

from hpcgate.edge.probes import READY_TTL, Readiness

SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


class Checks:
    """Health checks that answer what ``answers`` holds next, slowly, and are counted."""

    def __init__(self, *answers: health_pb2.HealthCheckResponse | grpc.StatusCode) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        await asyncio.sleep(0.05)
        answer = self.answers.pop(0)
        if isinstance(answer, grpc.StatusCode):
            raise grpc.aio.AioRpcError(answer, grpc.aio.Metadata(), grpc.aio.Metadata(), "x", "")
        return answer


async def test_concurrent_probes_share_one_check_and_the_verdict_is_cached() -> None:
    checks = Checks(SERVING, grpc.StatusCode.UNAVAILABLE)
    readiness = Readiness(checks, lambda: False)
    verdicts = await asyncio.gather(*(readiness.verdict() for _ in range(20)))
    assert checks.calls == 1
    assert all(v.ready for v in verdicts)
    assert (await readiness.verdict()).ready and checks.calls == 1  # cached
    await asyncio.sleep(READY_TTL + 0.05)
    down = await readiness.verdict()
    assert checks.calls == 2
    assert (down.ready, down.reason) == (False, "SERVER_UNAVAILABLE")


async def test_reasons_say_why_the_edge_is_not_ready() -> None:
    checks = Checks(NOT_SERVING, grpc.StatusCode.DEADLINE_EXCEEDED)
    readiness = Readiness(checks, lambda: False)
    assert (await readiness.verdict()).reason == "SERVER_NOT_SERVING"
    await asyncio.sleep(READY_TTL + 0.05)
    assert (await readiness.verdict()).reason == "SERVER_TIMEOUT"
    draining = Readiness(Checks(SERVING), lambda: True)
    assert (await draining.verdict()).reason == "SHUTTING_DOWN"
