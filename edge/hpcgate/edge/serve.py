"""Run the edge under uvicorn: guarded HTTP protocol, and a shutdown that ends streams.

On SIGTERM uvicorn stops accepting, lets in-flight responses finish and
then, after ``timeout_graceful_shutdown``, cancels what is left. A watch
stream (SSE or NDJSON) never finishes by itself, so without more it would
hold the process until the grace ran out, and its client would see a cut
connection. :class:`EdgeServer` first tells the application to drain
(:meth:`hpcgate.edge.app.Edge.drain`): each open stream then ends with an
``end`` event and a reason, and unary calls run on to their end.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from hpcgate.edge.protocol import guarded_protocol

# The cyclic collector's thresholds in the edge (CPython's: 700, 10, 10). The
# edge makes almost no reference cycles, but under load each of its hundreds
# of requests in flight holds objects that outlive a young collection, so the
# collector kept walking them: 17 % of the edge's CPU under 500 connections
# (gc.callbacks, 20 s of wrk on GET /status/systems), for ~2,300 objects found
# in 20 s. Collections start after 50,000 more live objects instead: 0.3-0.7 %
# of the CPU. Cyclic garbage waits that long, so at worst 50,000 objects of it
# (some 10 MiB) are held; the edge made ~100 such objects a second under load.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_collector() -> None:
    """Collect once, freeze what start-up built (never walked again) and collect seldom."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class ServeOptions:
    """How the edge's HTTP server guards connections and how long it drains on shutdown."""

    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    keep_alive: int = 5
    shutdown_grace: float = 10.0


class EdgeServer(uvicorn.Server):
    """uvicorn's server that calls ``on_shutdown`` before it starts its own shutdown."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def edge_config(app: Any, options: ServeOptions, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration of the edge (``overrides`` go to uvicorn.Config as they are)."""
    settings: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        # httptools (C) parses HTTP/1.1 at a fraction of h11's CPU per request.
        "http": guarded_protocol(options.header_timeout, options.max_header_bytes),
        # asyncio's own loop, not uvloop (the server's): under 500 connections
        # (wrk, GET /status/systems) uvloop left some of them unanswered for
        # 2 s and more, 28-150 wrk timeouts per 10 s, p99 0.7-1.2 s, even for a
        # bare uvicorn app; asyncio's loop answered every one, p99 36-49 ms
        # bare, 105-266 ms for the edge, at ~10 % more CPU per request. uvloop
        # defers a write it could make at once to the next loop cycle
        # (MagicStack/uvloop#631), which a saturated loop reaches late.
        "loop": "asyncio",
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": options.keep_alive,
        # uvicorn takes whole seconds; round up so the grace is never shorter.
        "timeout_graceful_shutdown": max(1, -int(-options.shutdown_grace // 1)),
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
