"""The floors of the two stacks: a grpc.aio echo server and a trivial HTTP server.

Run as its own process (``python -m bench.echo --port N --http-port M``) so
that, like the real server, it gets its own core. The gRPC handler is a
generic one without (de)serializers, so a call costs only what grpc.aio
itself costs: the throughput scenario divides ListSystems' rate by this one.
The HTTP server is the edge's stack (uvicorn with httptools, Starlette)
answering ``GET /bytes?size=N`` with N bytes and nothing else: what the
small-files REST figures would cost if the service took no time at all.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import uvicorn
import uvloop
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _bytes(request: Request) -> Response:
    return Response(b"x" * int(request.query_params["size"]), media_type="application/octet-stream")


async def serve(port: int, http_port: int) -> None:
    """Serve the echo method, grpc.health.v1 (for readiness) and the HTTP floor until killed."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    app = Starlette(routes=[Route("/bytes", _bytes)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=http_port,
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    await asyncio.gather(server.wait_for_termination(), uvicorn.Server(config).serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.http_port))  # the server's loop, for a fair floor


if __name__ == "__main__":
    main()
