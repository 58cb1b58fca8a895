"""The server's method table: every method wrapped once in the hooks of the cross-cutting concerns.

To act around a call (with the servicer context at hand) a wrapper must
rebuild the method's handler, of the same kind, with a wrapped behaviour.
:func:`wrap_handler` does that once per method for all concerns at once
(observability, authentication: each an :class:`Around` with ``enter`` and
``exit`` hooks) and maps errors to rich statuses innermost. One wrapper
instead of one per concern: with a generator layer per concern, py-spy
showed the layers costing as much as the DownloadStream handler itself.
:class:`MethodTable` holds the wrapped methods and serves them to the server.
What this leans on in grpcio is in :mod:`.grpc_adapter`, and only there.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn, Protocol, cast

import grpc

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.rpc import grpc_adapter
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.errors import abort
from hpcgate.server.rpc.grpc_adapter import Behaviour, GenericHandler, Handler

log = logging.getLogger(__name__)

Metadata = Iterable[tuple[str, Any]]  # a call's invocation metadata: (key, value) pairs
# A handler's behaviour, made async: (request or request iterator, context) -> reply(s).
Unary = Callable[[Any, Context], Awaitable[Any]]
Streaming = Callable[[Any, Context], AsyncIterator[Any]]


class Around:
    """What one concern does around an RPC: :meth:`enter` before the handler, :meth:`exit` after.

    Hooks rather than wrappers: every concern's hooks run inside one wrapper
    per method (:func:`wrap_handler`), so a streamed message passes through
    one generator, not one per concern.
    """

    async def enter(self, context: Context, metadata: Metadata) -> Any:
        """Before the handler; may abort the call. Returns the state :meth:`exit` gets.

        ``metadata`` is the call's invocation metadata, read once for all
        concerns (each read builds it anew from gRPC's C structures).
        """
        return None

    def exit(self, state: Any, error: BaseException | None, context: Context) -> None:
        """After the handler (also when :meth:`enter` of a later concern aborted).

        ``error`` is what the handler raised (None on success), before it
        became a status.
        """


class Concern(Protocol):
    """A cross-cutting concern of the server: what to run around calls of a method."""

    def around(self, method: str) -> Around | None:
        """The hooks for calls of ``method`` (a full method name); None for nothing."""
        ...


def _as_async_unary(behavior: Behaviour) -> Unary:
    if inspect.iscoroutinefunction(behavior):
        return cast(Unary, behavior)  # the common case: nothing to adapt

    async def run(request: Any, context: Context) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return run


def _as_async_stream(behavior: Behaviour) -> Streaming:
    if inspect.isasyncgenfunction(behavior):
        return cast(Streaming, behavior)  # the common case: nothing to adapt

    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for reply in result:
                yield reply
        else:
            for reply in result:
                yield reply

    return run


async def _fail(error: Exception, context: Context) -> NoReturn:
    """Turn what the handler raised into its status (an abort passes as it is)."""
    if grpc_adapter.is_abort(error):
        raise error
    await abort(context, _as_service_error(error))


def _exit(
    arounds: Sequence[Around], states: list[Any], error: BaseException | None, context: Context
) -> None:
    """The exit hooks of the concerns that entered, innermost first."""
    for index in range(len(states) - 1, -1, -1):
        arounds[index].exit(states[index], error, context)


def wrap_handler(handler: Handler, arounds: Sequence[Around]) -> Handler:
    """``handler`` run inside ``arounds``' hooks, any exception turned into a rich status.

    The hooks are awaited right here, not through a helper coroutine: this
    wrapper runs on every call, and py-spy on the server at concurrency 64
    showed each layer of Python per call costing several times what it
    costs in a tight loop (cold caches between calls).
    """
    arounds = tuple(arounds)
    behaviour, streams = grpc_adapter.behaviour(handler)
    if not streams:
        inner = _as_async_unary(behaviour)

        async def unary(request: Any, context: Context) -> Any:
            states: list[Any] = []
            error: BaseException | None = None
            try:
                metadata = context.invocation_metadata() or ()
                for around in arounds:
                    states.append(await around.enter(context, metadata))
                return await inner(request, context)
            except Exception as raised:
                error = raised
                await _fail(raised, context)
            except BaseException as raised:  # cancellation
                error = raised
                raise
            finally:
                _exit(arounds, states, error, context)

        return grpc_adapter.rebuild(handler, unary)

    inner_stream = _as_async_stream(behaviour)

    async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
        states: list[Any] = []
        error: BaseException | None = None
        try:
            metadata = context.invocation_metadata() or ()
            for around in arounds:
                states.append(await around.enter(context, metadata))
            async for reply in inner_stream(request, context):
                yield reply
        except Exception as raised:
            error = raised
            await _fail(raised, context)
        except BaseException as raised:  # cancellation, or the generator closed early
            error = raised
            raise
        finally:
            _exit(arounds, states, error, context)

    return grpc_adapter.rebuild(handler, streaming)


def _as_service_error(error: Exception) -> ServiceError:
    """Every failure as a ServiceError, so every error carries an ErrorInfo reason."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, NotImplementedError):  # the generated base servicer's answer
        return ServiceError(
            ErrorKind.UNIMPLEMENTED, "this RPC is not implemented yet", "NOT_IMPLEMENTED"
        )
    log.exception("unexpected error")
    return ServiceError(ErrorKind.INTERNAL, f"internal error ({type(error).__name__})", "INTERNAL")


class MethodTable(GenericHandler):
    """Every method the server serves, each wrapped once in the concerns' hooks.

    Services register into the table as into a server
    (``add_XServicer_to_server(servicer, table.as_server())``), and the table
    goes to the server as its one generic handler (:meth:`install`). Why not
    a ``grpc.aio`` interceptor and the server's own method registration:

    - A server with registered methods spends time per call on each of them
      (see point 4 of :mod:`.grpc_adapter`); behind one generic handler it
      waits on a single request.
    - Each method is wrapped once, here, rather than per call by an
      interceptor pipeline (two coroutines and a lookup per call).
    """

    def __init__(self, concerns: Sequence[Concern]) -> None:
        """``concerns`` outermost first: the first one enters first and exits last."""
        self._concerns = tuple(concerns)
        self._methods: dict[str, Handler] = {}
        self._generic: list[GenericHandler] = []

    def add_service(self, service: str, handlers: dict[str, Handler]) -> None:
        """Add ``service``'s methods, by method name."""
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods[method] = self._wrap(method, handler)

    def add_generic(self, handlers: Iterable[GenericHandler]) -> None:
        """Add handlers that resolve methods themselves; asked for methods not in the table.

        Generated code adds every service both ways; a service added only
        this way is wrapped on its first call and then found in the table.
        """
        self._generic.extend(handler for handler in handlers if handler is not self)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        """The wrapped handler of the called method; None (UNIMPLEMENTED) if unknown."""
        method = handler_call_details.method
        handler = self._methods.get(method)
        if handler is not None:
            return handler
        for generic in self._generic:
            found = generic.service(handler_call_details)
            if found is not None:
                handler = self._methods[method] = self._wrap(method, found)
                return handler
        return None  # unknown method: gRPC answers UNIMPLEMENTED itself

    def as_server(self) -> grpc.aio.Server:
        """The table where generated ``add_*_to_server(servicer, server)`` wants a server."""
        return grpc_adapter.as_server(grpc_adapter.Registrar(self.add_service, self.add_generic))

    def install(self, server: grpc.aio.Server) -> None:
        """Serve the table's methods on ``server`` (before it starts)."""
        grpc_adapter.install(server, self)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        arounds = [a for c in self._concerns if (a := c.around(method)) is not None]
        return wrap_handler(handler, arounds)
