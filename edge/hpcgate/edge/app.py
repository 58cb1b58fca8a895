"""The edge's ASGI application.

Routes come from :mod:`hpcgate.edge.bindings`; each request becomes one gRPC
call on a channel opened in the app's lifespan. ``Authorization`` and a
request id travel as gRPC metadata.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hpcgate.edge.bindings import Binding, bindings_of, hpcgate_services
from hpcgate.edge.errors import bad_request_response, rpc_error_response, status_response
from hpcgate.edge.jsonmap import to_json
from hpcgate.edge.openapi import openapi_document
from hpcgate.edge.transcode import MAX_FORM_BODY, BadRequestError, build_request

_FORWARDED_HEADERS = ("authorization",)
# Request ids of requests without x-request-id: a per-process random prefix
# and a counter (uuid4 per request showed in the edge's profile).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)
NDJSON = "application/x-ndjson"
# Small downloads, views and uploads travel in one message. The server
# enforces the size limit (maxOpsFileSize, a text reply up to three times
# that) and the edge bounds the upload bodies it reads (max_form_body), so the
# channel to the edge's own server cuts nothing itself (-1: no limit).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
SSE = "text/event-stream"


class Edge:
    """Holds the gRPC channel and serves every binding through it."""

    def __init__(self, target: str, timeout: float, max_form_body: int) -> None:
        self.target = target
        self.timeout = timeout
        self.max_form_body = max_form_body
        self.channel: grpc.aio.Channel | None = None
        # One multi-callable per RPC path, built on first use: building one
        # per request costs more than a small RPC's own work in the edge.
        self._callables: dict[str, Any] = {}

    def open(self) -> None:
        """Open the channel to the server (the app's lifespan starts)."""
        self.channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._callables.clear()

    async def close(self) -> None:
        """Close the channel; multi-callables of the old channel are forgotten."""
        channel, self.channel = self.channel, None
        self._callables.clear()
        if channel is not None:
            await channel.close(None)

    def _metadata(self, request: Request) -> list[tuple[str, str]]:
        metadata = [(h, request.headers[h]) for h in _FORWARDED_HEADERS if h in request.headers]
        request_id = request.headers.get("x-request-id") or f"{_ID_PREFIX}-{next(_ids)}"
        metadata.append(("x-request-id", request_id))
        return metadata

    def _call(self, binding: Binding) -> Any:
        """The multi-callable of ``binding``'s RPC on the current channel (cached)."""
        callable_ = self._callables.get(binding.rpc_path)
        if callable_ is None:
            assert self.channel is not None, "the edge's lifespan has not started"
            factory = (
                self.channel.unary_stream if binding.server_streaming else self.channel.unary_unary
            )
            callable_ = factory(
                binding.rpc_path,
                request_serializer=_serialize,
                response_deserializer=binding.response_class.FromString,
            )
            self._callables[binding.rpc_path] = callable_
        return callable_

    async def handle(self, binding: Binding, request: Request) -> Response:
        try:
            rpc_request = await build_request(binding, request, max_form_body=self.max_form_body)
        except BadRequestError as error:
            return bad_request_response(str(error), error.field, error.status_code)
        metadata = self._metadata(request)
        if binding.server_streaming:
            return await self._stream(binding, rpc_request, metadata, request)
        try:
            reply = await self._call(binding)(rpc_request, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            return rpc_error_response(error)
        return self._reply(binding, reply)

    def _reply(self, binding: Binding, reply: message.Message) -> Response:
        if binding.raw_response:
            body = reply
            return Response(
                getattr(body, "data", b""),
                binding.success_code,
                media_type=getattr(body, "content_type", "") or "application/octet-stream",
            )
        if binding.success_code == 204:
            return Response(status_code=204)
        if binding.response_body:
            value = to_json(reply).get(binding.response_body)
            return JSONResponse(value, binding.success_code)
        return JSONResponse(to_json(reply), binding.success_code)

    async def _stream(
        self,
        binding: Binding,
        rpc_request: message.Message,
        metadata: Sequence[tuple[str, str]],
        request: Request,
    ) -> Response:
        """A server-streaming RPC as Server-Sent Events, or NDJSON when asked for."""
        call = self._call(binding)(rpc_request, metadata=metadata)
        # Wait for the server to accept the call (headers), so that an
        # immediate error still gets its own HTTP status instead of a 200 stream.
        try:
            await call.initial_metadata()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                return status_response(
                    await call.code(), await call.details(), await call.trailing_metadata()
                )
        except grpc.aio.AioRpcError as error:
            return rpc_error_response(error)
        ndjson = NDJSON in request.headers.get("accept", "")

        async def events() -> AsyncIterator[bytes]:
            try:
                async for reply in call:
                    text = json.dumps(to_json(reply), separators=(",", ":"))
                    yield (text + "\n" if ndjson else f"data: {text}\n\n").encode()
            except grpc.aio.AioRpcError as error:
                body = json.dumps(
                    {"errorType": "error", "message": error.details(), "code": error.code().name}
                )
                yield (body + "\n" if ndjson else f"event: error\ndata: {body}\n\n").encode()
            finally:
                call.cancel()  # the HTTP client went away, or the stream ended

        return StreamingResponse(
            events(), binding.success_code, media_type=NDJSON if ndjson else SSE
        )


def _serialize(request: message.Message) -> bytes:
    return request.SerializeToString()


def _endpoint(edge: Edge, by_verb: dict[str, Binding]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await edge.handle(by_verb[request.method], request)

    return endpoint


def create_app(
    target: str, timeout: float = 300.0, max_form_body: int = MAX_FORM_BODY
) -> Starlette:
    """The edge for the gRPC server at ``target`` (``host:port``).

    ``max_form_body`` bounds what the edge reads of a multipart upload.
    """
    edge = Edge(target, timeout, max_form_body)
    bindings = bindings_of(hpcgate_services())
    by_path: dict[str, dict[str, Binding]] = {}
    for binding in bindings:  # already sorted, most specific first
        by_path.setdefault(binding.route_path, {})[binding.verb] = binding
    routes = [
        Route(path, _endpoint(edge, verbs), methods=list(verbs)) for path, verbs in by_path.items()
    ]
    document = openapi_document(bindings)

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        edge.open()
        try:
            yield
        finally:
            await edge.close()

    return Starlette(routes=routes, lifespan=lifespan)
