"""What the method table assumes of grpcio, checked against the installed grpcio.

Each test names the point of :mod:`hpcgate.server.rpc.grpc_adapter` it
guards. A failure here after a grpcio upgrade means the adapter must change
before pyproject.toml's cap on grpcio may be raised.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # the internals of point 4
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from unit.test_method_table import served

from hpcgate.server.rpc import grpc_adapter
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.grpc_adapter import GenericHandler, Handler, Registrar
from hpcgate.server.rpc.method_table import Around, Metadata, MethodTable
from hpcgate.v1 import (
    filesystem_pb2,
    filesystem_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)

# Every generated module whose add_*_to_server the server calls, with its messages.
GENERATED = [
    (status_pb2, status_pb2_grpc),
    (scheduler_pb2, scheduler_pb2_grpc),
    (filesystem_pb2, filesystem_pb2_grpc),
    (transfer_pb2, transfer_pb2_grpc),
    (health_pb2, health_pb2_grpc),
    (reflection_pb2, reflection_pb2_grpc),
]
SERVICES = [
    (service, grpc_module)
    for messages, grpc_module in GENERATED
    for service in messages.DESCRIPTOR.services_by_name.values()
]


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


@pytest.mark.parametrize(("service", "grpc_module"), SERVICES, ids=lambda s: getattr(s, "name", ""))
def test_generated_registration_calls_only_the_registrars_two_methods(
    service: ServiceDescriptor, grpc_module: ModuleType
) -> None:
    """Point 1: the Registrar has only those two methods (and slots): any other call fails."""
    by_name: list[tuple[str, dict[str, Handler]]] = []
    generic: list[GenericHandler] = []
    registrar = Registrar(lambda name, handlers: by_name.append((name, handlers)), generic.extend)
    servicer = getattr(grpc_module, f"{service.name}Servicer")()
    add = getattr(grpc_module, f"add_{service.name}Servicer_to_server")
    add(servicer, grpc_adapter.as_server(registrar))

    assert [name for name, _ in by_name] == [service.full_name]
    handlers = by_name[0][1]
    assert set(handlers) == {method.name for method in service.methods}
    for method in service.methods:
        handler = handlers[method.name]
        assert isinstance(handler, grpc.RpcMethodHandler)
        assert handler.request_streaming == method.client_streaming
        assert handler.response_streaming == method.server_streaming
        behaviour, streams = grpc_adapter.behaviour(handler)
        assert behaviour == getattr(servicer, method.name)
        assert streams == method.server_streaming
        # The generic handler, added too, resolves the same method.
        assert len(generic) == 1
        found = generic[0].service(_Details(f"/{service.full_name}/{method.name}"))
        assert found is not None and grpc_adapter.behaviour(found)[0] == behaviour


@pytest.mark.parametrize("name", ["add_registered_method_handlers", "add_generic_rpc_handlers"])
def test_the_registrar_mimics_the_servers_own_signatures(name: str) -> None:
    """Point 1: generated code calls these as grpc.aio.Server defines them."""
    ours = list(inspect.signature(getattr(Registrar, name)).parameters)
    theirs = list(inspect.signature(getattr(grpc.aio.Server, name)).parameters)
    assert ours == theirs


def _behaviour(request: Any, context: Any) -> Any:
    return request


def _other(request: Any, context: Any) -> Any:
    return None


@pytest.mark.parametrize(
    ("make", "field", "streams"),
    [
        (grpc.unary_unary_rpc_method_handler, "unary_unary", False),
        (grpc.stream_unary_rpc_method_handler, "stream_unary", False),
        (grpc.unary_stream_rpc_method_handler, "unary_stream", True),
        (grpc.stream_stream_rpc_method_handler, "stream_stream", True),
    ],
)
def test_handlers_are_read_and_rebuilt_by_kind(make: Any, field: str, streams: bool) -> None:
    """Point 2: a handler's kind is the one behaviour field that is set."""
    handler = make(_behaviour, request_deserializer=bytes, response_serializer=bytes.upper)
    kinds = ("unary_unary", "stream_unary", "unary_stream", "stream_stream")
    assert [getattr(handler, kind) is not None for kind in kinds] == [k == field for k in kinds]
    assert grpc_adapter.behaviour(handler) == (_behaviour, streams)

    rebuilt = grpc_adapter.rebuild(handler, _other)
    assert getattr(rebuilt, field) is _other
    assert (rebuilt.request_streaming, rebuilt.response_streaming) == (
        handler.request_streaming,
        handler.response_streaming,
    )
    assert rebuilt.request_deserializer is bytes
    assert rebuilt.response_serializer == bytes.upper


def test_the_server_loop_the_speed_up_rests_on_is_still_there() -> None:
    """Point 4: the per-registered-method request loop, measured on grpcio 1.85.

    If grpc.aio no longer has it, the table's reason to exist must be
    measured again (``make bench``, throughput) before raising the cap.
    """
    for name in ("_server_main_loop", "_request_registered_call", "_request_call"):
        assert hasattr(cygrpc.AioServer, name), name


class _Counting(MethodTable):
    """A table that counts the lookups the server makes through it."""

    lookups = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        self.lookups += 1
        return super().service(handler_call_details)


class _Seen:
    """A concern that notes the methods it ran around."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def around(self, method: str) -> Around:
        methods = self.methods

        class _Note(Around):
            async def enter(self, context: Context, metadata: Metadata) -> None:
                methods.append(method)

        return _Note()


class _Status(status_pb2_grpc.StatusServicer):
    async def GetLiveness(
        self, request: status_pb2.GetLivenessRequest, context: Context
    ) -> status_pb2.GetLivenessResponse:
        return status_pb2.GetLivenessResponse()

    async def ListSystems(
        self, request: status_pb2.ListSystemsRequest, context: Context
    ) -> status_pb2.ListSystemsResponse:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted on purpose")
        raise AssertionError("abort returned")


async def _list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    replies = [reply async for reply in stub.ServerReflectionInfo(requests())]
    return [service.name for service in replies[0].list_services_response.service]


async def test_a_real_server_serves_through_the_table_alone() -> None:
    """Points 3, 4 and 5 on a real grpc.aio server.

    The server registers no method by name, every call is looked up in the
    table and runs in its hooks, an abort keeps its own status, and
    reflection (a stream-stream method) is served through the table.
    """
    seen = _Seen()
    table = _Counting([seen])
    status_pb2_grpc.add_StatusServicer_to_server(_Status(), table.as_server())
    status_name = status_pb2.DESCRIPTOR.services_by_name["Status"].full_name
    grpc_adapter.add_reflection((status_name, reflection.SERVICE_NAME), table.as_server())

    def by_name(*args: Any) -> None:
        raise AssertionError("the table registered methods by name")

    def forbid_by_name(server: grpc.aio.Server) -> None:
        server.add_registered_method_handlers = by_name  # type: ignore[attr-defined]

    async with served(table, forbid_by_name) as channel:
        stub = status_pb2_grpc.StatusStub(channel)
        await stub.GetLiveness(status_pb2.GetLivenessRequest())
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await stub.ListSystems(status_pb2.ListSystemsRequest())
        services = await _list_services(channel)
    assert aborted.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert aborted.value.details() == "aborted on purpose"
    assert set(services) == {status_name, reflection.SERVICE_NAME}
    reflection_method = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"
    assert seen.methods == [
        f"/{status_name}/GetLiveness",
        f"/{status_name}/ListSystems",
        reflection_method,
    ]
    assert table.lookups == 3
