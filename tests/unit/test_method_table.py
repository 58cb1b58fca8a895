"""The server's method table: every method wrapped once in the concerns' hooks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.method_table import Around, Metadata, MethodTable
from hpcgate.v1 import status_pb2, status_pb2_grpc


class Recorder:
    """A concern that notes what it saw, per method."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def around(self, method: str) -> Around:
        events = self.events

        class _Note(Around):
            async def enter(self, context: Context, metadata: Metadata) -> Any:
                events.append(("enter", method))

            def exit(self, state: Any, error: BaseException | None, context: Context) -> None:
                events.append(("exit", method))

        return _Note()


@contextlib.asynccontextmanager
async def served(
    table: MethodTable, prepare: Callable[[grpc.aio.Server], None] = lambda server: None
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a loopback server serving ``table`` (``prepare`` sees it first)."""
    server = grpc.aio.server()
    prepare(server)
    table.install(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


class Liveness(status_pb2_grpc.StatusServicer):
    async def GetLiveness(
        self, request: status_pb2.GetLivenessRequest, context: Context
    ) -> status_pb2.GetLivenessResponse:
        return status_pb2.GetLivenessResponse()


async def test_registered_methods_run_in_hooks_and_unknown_ones_are_unimplemented() -> None:
    recorder = Recorder()
    table = MethodTable([recorder])
    status_pb2_grpc.add_StatusServicer_to_server(Liveness(), table.as_server())
    async with served(table) as channel:
        stub = status_pb2_grpc.StatusStub(channel)
        await stub.GetLiveness(status_pb2.GetLivenessRequest())
        # A method of the service that the servicer does not implement:
        # the generated base raises NotImplementedError, the table maps it.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ListSystems(status_pb2.ListSystemsRequest())
        unknown = channel.unary_unary("/nope.Nothing/Here", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as nowhere:
            await unknown(b"")
    liveness, systems = "/hpcgate.v1.Status/GetLiveness", "/hpcgate.v1.Status/ListSystems"
    assert recorder.events == [
        ("enter", liveness),
        ("exit", liveness),
        ("enter", systems),
        ("exit", systems),
    ]
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert nowhere.value.code() == grpc.StatusCode.UNIMPLEMENTED
