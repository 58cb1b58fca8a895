"""Scenario 3: unary RPCs per second of ListSystems, gRPC and REST, at concurrency 1 and 64.

The floor is a grpc.aio echo server in its own process (bench/echo.py),
called by the same client in the same run with a payload the size of a
ListSystems reply: what the RPC stack alone costs on this machine. Each
ratio is a figure's rate over the echo rate at the same concurrency.
ListSystems touches no SSH, so the ratio measures hpcgate's own per-call
overhead (interceptors, auth, servicer) and, over REST, the edge's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc

from bench.context import Context
from bench.echo import METHOD
from bench.measure import Stopwatch, check_http, measure, unimplemented_is_not_available
from bench.model import Figure, WrongBytesError
from hpcgate.v1 import status_pb2, status_pb2_grpc

SCENARIO = "throughput"
BASELINE = "gRPC echo floor"
CONCURRENCY = (1, 64)
CALLS_PER_WORKER = {1: 500, 64: 25}  # one run: 500 sequential calls, or 1,600 calls


async def _rate(call: Callable[[], Awaitable[None]], concurrency: int) -> float:
    """Calls per second of ``concurrency`` workers each making its share of calls."""
    per_worker = CALLS_PER_WORKER[concurrency]

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

        figures = []
        for concurrency in CONCURRENCY:
            params = {"concurrency": concurrency, "payload_bytes": len(payload)}
            for name, call in (
                (BASELINE, echo_call),
                ("gRPC ListSystems", grpc_call),
                ("REST GET /status/systems", rest_call),
            ):
                baseline = None if name == BASELINE else BASELINE
                figure = Figure(SCENARIO, name, "req/s", dict(params), baseline=baseline)

                async def once(
                    call: Callable[[], Awaitable[None]] = call, concurrency: int = concurrency
                ) -> float:
                    return await _rate(call, concurrency)

                figures.append(await measure(figure, ctx.plan, once))
    return figures
