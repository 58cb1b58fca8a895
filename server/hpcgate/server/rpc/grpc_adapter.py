"""The one module that leans on how grpcio works inside (grpcio and grpcio-tools 1.85).

The method table (:mod:`.method_table`) serves every method behind a single
generic handler, each method wrapped once. That relies on exactly these
five things, and nothing else in hpcgate relies on them:

1. **Generated registration.** grpcio-tools' ``add_<X>Servicer_to_server(servicer,
   server)`` calls exactly two methods on ``server``:
   ``add_generic_rpc_handlers((handler,))`` and
   ``add_registered_method_handlers(service, {method name: handler})``, the
   latter with the signature of :meth:`grpc.aio.Server.add_registered_method_handlers`.
   A :class:`Registrar` takes those two calls in place of a server, and
   :func:`as_server` hands it over typed as one: the only ``cast`` to a server.
2. **Handler fields.** A ``grpc.RpcMethodHandler`` tells its kind by which of
   ``unary_unary``, ``unary_stream``, ``stream_unary`` and ``stream_stream``
   is set, beside ``request_deserializer`` and ``response_serializer``; the
   four ``grpc.*_rpc_method_handler`` functions build one.
   :func:`behaviour` and :func:`rebuild` read and rebuild handlers.
3. **Aborts.** ``context.abort`` raises ``grpc.aio.AbortError``, which the
   table's wrapper must let through untouched (:func:`is_abort`).
4. **The server loop, the reason for it all.** grpc.aio keeps one pending
   "request call" per registered method and, each time calls arrive, runs
   ``asyncio.wait`` over all of them (``cygrpc.AioServer._server_main_loop``
   and ``_request_registered_call``). With hpcgate's ~45 methods that cost the
   event-loop thread ~30 us per call, ListSystems' whole budget (py-spy;
   ``make bench``, throughput). :func:`install` gives the server one generic
   handler and no registered method, so it waits on a single request.
5. **Reflection.** ``reflection.enable_server_reflection`` picks its aio
   servicer by ``isinstance(server, grpc.aio.Server)``, which a
   :class:`Registrar` is not; :func:`add_reflection` adds
   ``reflection.aio.ReflectionServicer`` itself.

``tests/unit/test_grpc_adapter.py`` checks each point against the installed
grpcio, and pyproject.toml caps grpcio below the first version it has not
passed on: raise the cap only after that test passes on the new version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

if TYPE_CHECKING:  # generic only in grpc-stubs
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    GenericHandler: TypeAlias = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler

# A handler's behaviour: (request or request iterator, context) -> reply or replies.
Behaviour = Callable[..., Any]
AddService = Callable[[str, dict[str, Handler]], None]
AddGeneric = Callable[[Iterable[GenericHandler]], None]


class Registrar:
    """What generated ``add_*_to_server`` functions get instead of a server (point 1).

    It has the two methods they call and nothing else, so a generated
    function that calls anything more fails with AttributeError instead of
    silently registering nothing.
    """

    __slots__ = ("_add_generic", "_add_service")

    def __init__(self, add_service: AddService, add_generic: AddGeneric) -> None:
        """``add_service(service, {method: handler})``; ``add_generic(handlers)``."""
        self._add_service = add_service
        self._add_generic = add_generic

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        """Receive a service's methods by name."""
        self._add_service(service_name, method_handlers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        """Receive handlers that resolve methods themselves."""
        self._add_generic(generic_rpc_handlers)


def as_server(registrar: Registrar) -> grpc.aio.Server:
    """``registrar`` where generated ``add_*_to_server(servicer, server)`` wants a server."""
    return cast(grpc.aio.Server, registrar)


def behaviour(handler: Handler) -> tuple[Behaviour, bool]:
    """The handler's behaviour, and whether it streams its replies (point 2)."""
    if handler.unary_unary or handler.stream_unary:
        return cast(Behaviour, handler.unary_unary or handler.stream_unary), False
    return cast(Behaviour, handler.unary_stream or handler.stream_stream), True


def rebuild(handler: Handler, new_behaviour: Behaviour) -> Handler:
    """A handler of ``handler``'s kind and (de)serializers that runs ``new_behaviour``."""
    if handler.unary_unary:
        make: Callable[..., Handler] = grpc.unary_unary_rpc_method_handler
    elif handler.stream_unary:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.unary_stream:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.stream_stream_rpc_method_handler
    return make(new_behaviour, handler.request_deserializer, handler.response_serializer)


def is_abort(error: BaseException) -> bool:
    """Whether ``error`` is what ``context.abort`` raised: the status is set already (point 3)."""
    return isinstance(error, grpc.aio.AbortError)


def install(server: grpc.aio.Server, handler: GenericHandler) -> None:
    """Serve every method through ``handler``, registering none by name (point 4)."""
    server.add_generic_rpc_handlers((handler,))


def add_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Add aio server reflection of ``service_names`` to ``server``, whatever it is (point 5).

    As ``reflection.enable_server_reflection`` does: the names should include
    ``reflection.SERVICE_NAME``.
    """
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(tuple(service_names)),  # type: ignore[attr-defined]
        server,
    )
