"""Scenario 3: unary RPCs per second of ListSystems, gRPC and REST, at concurrency 1 and 64.

The floor is a grpc.aio echo server in its own process (bench/echo.py, on
the same event loop as the server: uvloop), called by the same client in the
same run with a payload the size of a ListSystems reply: what the RPC stack
alone costs on this machine. Floor and figures take turns within each run. Each
ratio is a figure's rate over the echo rate at the same concurrency.
ListSystems touches no SSH, so the ratio measures hpcgate's own per-call
overhead (the method table's per-call wrapper, auth, servicer) and, over REST, the edge's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.context import Context
from bench.echo import METHOD
from bench.measure import Stopwatch, check_http, measure_many, unimplemented_is_not_available
from bench.model import Figure, WrongBytesError
from hpcgate.v1 import status_pb2, status_pb2_grpc

SCENARIO = "throughput"
BASELINE = "gRPC echo floor"
CONCURRENCY = (1, 64)
# Calls per worker in one run, by concurrency: over gRPC a run takes about a
# second (500 sequential calls; 64 x 100), over REST, ten times slower, a
# quarter of that.
GRPC_CALLS = {1: 500, 64: 100}
REST_CALLS = {1: 500, 64: 25}


async def _rate(call: Callable[[], Awaitable[None]], concurrency: int, per_worker: int) -> float:
    """Calls per second of ``concurrency`` workers each making ``per_worker`` calls."""

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    with unimplemented_is_not_available():
        watch = Stopwatch()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = watch.elapsed()
    return concurrency * per_worker / elapsed


async def run(ctx: Context) -> list[Figure]:
    """For each concurrency: the echo floor, then ListSystems over gRPC and over REST."""
    system, metadata = ctx.stack.system, ctx.stack.metadata()
    stub = status_pb2_grpc.StatusStub(ctx.channel)
    sample = await stub.ListSystems(status_pb2.ListSystemsRequest(), metadata=metadata)
    payload = sample.SerializeToString()
    async with grpc.aio.insecure_channel(ctx.stack.echo_target) as echo_channel:
        echo = echo_channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)

        async def echo_call() -> None:
            reply = await echo(payload, metadata=metadata)
            if reply != payload:
                raise WrongBytesError("echo: reply differs from the request")

        async def grpc_call() -> None:
            reply = await stub.ListSystems(status_pb2.ListSystemsRequest(), metadata=metadata)
            if not reply.systems or reply.systems[0].name != system:
                raise WrongBytesError(f"ListSystems: {system!r} missing from the reply")

        quoted = f'"{system}"'.encode()

        async def rest_call() -> None:
            response = await ctx.http.get("/status/systems")
            check_http(response)
            if quoted not in response.content:
                raise WrongBytesError(f"GET /status/systems: {system!r} missing from the body")

        figures: list[Figure] = []
        for concurrency in CONCURRENCY:
            params = {"concurrency": concurrency, "payload_bytes": len(payload)}
            named = {
                BASELINE: (echo_call, GRPC_CALLS[concurrency]),
                "gRPC ListSystems": (grpc_call, GRPC_CALLS[concurrency]),
                "REST GET /status/systems": (rest_call, REST_CALLS[concurrency]),
            }
            batch = {name: Figure(SCENARIO, name, "req/s", dict(params)) for name in named}
            for name, figure in batch.items():
                figure.baseline = None if name == BASELINE else BASELINE

            # One run measures all three in turn, so that the machine's ups
            # and downs fall on the floor and on hpcgate alike.
            async def once(
                concurrency: int = concurrency, named: dict[str, Any] = named
            ) -> dict[str, float]:
                return {
                    name: await _rate(call, concurrency, calls)
                    for name, (call, calls) in named.items()
                }

            await measure_many(batch, ctx.plan, once)
            figures += batch.values()
    return figures
