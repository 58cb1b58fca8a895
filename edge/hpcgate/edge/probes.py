"""``/healthz`` and ``/readyz``: is the edge alive, and can it serve (reach a server)?

``/healthz`` answers 200 whenever the process runs its event loop: a
liveness probe restarts an edge only when it is stuck, never because a
server is away. ``/readyz`` answers 200 only when a server says
``SERVING`` to a ``grpc.health.v1`` check over the edge's own channel
(balanced like every call), else 503 with the reason: a load balancer or
Kubernetes then sends no traffic to an edge that could only answer 503. The
verdict is cached for :data:`READY_TTL` seconds, and concurrent probes share
one check, so probes cost the servers next to nothing. A draining edge is
not ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
READY_TTL = 1.0
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class Verdict:
    """Whether the edge is ready, and why not: a reason word and a sentence."""

    ready: bool
    reason: str = ""
    message: str = ""


def _verdict_of(error: grpc.aio.AioRpcError) -> Verdict:
    code = error.code()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Verdict(False, "SERVER_TIMEOUT", "no hpcgate server answered the health check")
    if code is grpc.StatusCode.UNAVAILABLE:
        return Verdict(False, "SERVER_UNAVAILABLE", "the hpcgate server is not reachable")
    return Verdict(False, "SERVER_UNHEALTHY", f"the server's health check failed: {code.name}")


class Readiness:
    """The cached answer to "can this edge reach a server?"."""

    def __init__(self, check: Callable[[], Any], draining: Callable[[], bool]) -> None:
        """``check()`` starts a health check call; ``draining()`` says the edge is stopping."""
        self._check = check
        self._draining = draining
        self._verdict = Verdict(False)
        self._until = 0.0
        self._pending: asyncio.Future[Verdict] | None = None

    async def verdict(self) -> Verdict:
        if self._draining():
            return Verdict(False, "SHUTTING_DOWN", "the edge is shutting down")
        if time.monotonic() < self._until:
            return self._verdict
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._pending)

    async def _ask(self) -> Verdict:
        try:
            reply = await self._check()
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                verdict = Verdict(True)
            else:
                verdict = Verdict(False, "SERVER_NOT_SERVING", "the hpcgate server is not serving")
        except grpc.aio.AioRpcError as error:
            verdict = _verdict_of(error)
        self._verdict, self._until = verdict, time.monotonic() + READY_TTL
        self._pending = None
        return verdict
