"""Server interceptors, and the one helper they share: wrapping a handler.

grpc.aio gives an interceptor the method's handler; to act around the call
(with the servicer context at hand) it must rebuild the handler of the same
kind with a wrapped behaviour. :func:`wrap_handler` does that once for the
four kinds, so each interceptor only writes its ``around`` function.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc

from hpcgate.server.errors import ServiceError, abort

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]  # generic only in grpc-stubs
else:
    Handler = grpc.RpcMethodHandler
# around(call, request_or_iterator, context) -> result; ``call`` runs the RPC.
Unary = Callable[[Any, Context], Awaitable[Any]]
Streaming = Callable[[Any, Context], AsyncIterator[Any]]


class Around:
    """What an interceptor does around one RPC. Override both methods."""

    async def unary(self, call: Unary, request: Any, context: Context) -> Any:
        return await call(request, context)

    async def streaming(
        self, call: Streaming, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        async for reply in call(request, context):
            yield reply


def _as_async_unary(behavior: Callable[..., Any]) -> Unary:
    if inspect.iscoroutinefunction(behavior):
        return cast(Unary, behavior)  # the common case: nothing to adapt

    async def run(request: Any, context: Context) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return run


def _as_async_stream(behavior: Callable[..., Any]) -> Streaming:
    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for reply in result:
                yield reply
        else:
            for reply in result:
                yield reply

    return run


def wrap_handler(handler: Handler, around: Around) -> Handler:
    """``handler`` with its behaviour run through ``around``."""
    if handler.unary_unary or handler.stream_unary:
        inner = _as_async_unary(cast(Any, handler.unary_unary or handler.stream_unary))

        async def unary(request: Any, context: Context) -> Any:
            return await around.unary(inner, request, context)

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return make(unary, handler.request_deserializer, handler.response_serializer)

    inner_stream = _as_async_stream(cast(Any, handler.unary_stream or handler.stream_stream))

    async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
        async for reply in around.streaming(inner_stream, request, context):
            yield reply

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return make(streaming, handler.request_deserializer, handler.response_serializer)


def _as_service_error(error: Exception) -> ServiceError:
    """Every failure as a ServiceError, so every error carries an ErrorInfo reason."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, NotImplementedError):  # the generated base servicer's answer
        return ServiceError(
            grpc.StatusCode.UNIMPLEMENTED, "this RPC is not implemented yet", "NOT_IMPLEMENTED"
        )
    log.exception("unexpected error")
    return ServiceError(
        grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__})", "INTERNAL"
    )


class _ServiceErrors(Around):
    async def unary(self, call: Unary, request: Any, context: Context) -> Any:
        try:
            return await call(request, context)
        except grpc.aio.AbortError:
            raise  # already carries its status
        except Exception as error:
            await abort(context, _as_service_error(error))

    async def streaming(
        self, call: Streaming, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        try:
            async for reply in call(request, context):
                yield reply
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, _as_service_error(error))


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that runs each RPC through the :class:`Around` it picks.

    ``around`` is asked once per method; the wrapped handler is cached, so a
    call costs a dictionary lookup here. Per-call state belongs in the
    Around's methods (the servicer context is at hand there).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def around(self, method: str) -> Around | None:
        """What to run around calls of ``method``; None leaves them alone."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            around = self.around(method)
            cached = (handler, handler if around is None else wrap_handler(handler, around))
            self._wrapped[method] = cached
        return cached[1]


class ServiceErrorInterceptor(WrappingInterceptor):
    """Turns any exception of a servicer into a rich status (ServiceError: its own)."""

    def around(self, method: str) -> Around:
        return _ServiceErrors()
