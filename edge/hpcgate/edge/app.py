"""The edge's ASGI application.

Routes come from :mod:`hpcgate.edge.bindings`; each request becomes one gRPC
call on a channel opened in the app's lifespan. ``Authorization`` and a
request id travel as gRPC metadata. Where the contract says so, a request
shares a call instead: with the caller's other requests that came at the
same time (:mod:`.gather`), or with the callers of the last moment, whose
reply is the same for all (:mod:`.shared`).

A request passes, in this order: the token's shape (:mod:`.guard`; 401
before anything else, so an anonymous bad request is 401, not 400), the
server's verdict on the token when the route reads a body (so no anonymous
body is ever read), the declared body length (413), the body itself,
read within the route's limit and in time (:mod:`.body`), then the request
message (400) and the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from hpcgate.edge.accesslog import AccessLog
from hpcgate.edge.bindings import Binding, Gathering, bindings_of, hpcgate_services
from hpcgate.edge.body import BodyError, BodyLimits, check_declared, has_body
from hpcgate.edge.dispatch import Dispatch
from hpcgate.edge.errors import (
    bad_request_response,
    error_body,
    rich_status_response,
    rpc_error_response,
    status_response,
    stream_error_body,
)
from hpcgate.edge.gather import Gathered, Gatherer
from hpcgate.edge.guard import TokenRefusedError, TokenVerifier, bearer_token
from hpcgate.edge.headers import attachment, set_username, username_of
from hpcgate.edge.jsonwriters import to_json
from hpcgate.edge.observe import Observed, request_id_of, set_route
from hpcgate.edge.openapi import openapi_document
from hpcgate.edge.probes import CHECK_TIMEOUT, HEALTH_CHECK, Readiness
from hpcgate.edge.rendered import RenderedReplies
from hpcgate.edge.shared import SharedReplies
from hpcgate.edge.streams import HEARTBEAT, frame, replies, resume_from_header
from hpcgate.edge.transcode import BadRequestError, Built, body_limit, build_request
from hpcgate.edge.upstream import UpstreamTLS, open_channel
from hpcgate.v1 import status_pb2

_FORWARDED_HEADERS = ("authorization",)
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
# Default heartbeat of SSE streams, in seconds: shorter than any proxy's idle timeout.
HEARTBEAT_SECONDS = 15.0
# Trailing metadata in which the server names the authenticated caller.
USERNAME_METADATA = "hpcgate-username"
# The call that asks the server about a token: authenticated, and cheap for
# the server (it caches the reply).
_VERIFY_PATH = "/hpcgate.v1.Status/ListSystems"
VERIFY_TIMEOUT = 10.0
SHUTTING_DOWN = "SHUTTING_DOWN"
# Codes of calls that ended before, or without, the server's authentication.
_NOT_AUTHENTICATED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
_ALL_VERBS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _username(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == USERNAME_METADATA and isinstance(value, str):
            return value
    return ""


class Edge:
    """Holds the gRPC channel and serves every binding through it."""

    def __init__(
        self,
        target: str,
        timeout: float,
        limits: BodyLimits,
        idempotent: frozenset[str] = frozenset(),
        tls: UpstreamTLS | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.target = target
        # Seconds of silence after which an SSE stream gets a comment line (0: never).
        self.heartbeat = heartbeat
        # RPC paths retried on UNAVAILABLE (those of GET routes), and TLS to the servers.
        self.idempotent = idempotent
        self.tls = tls
        self.timeout = timeout
        self.limits = limits
        self.channel: grpc.aio.Channel | None = None
        # One multi-callable per RPC path (and reply form), built on first
        # use: building one per request costs more than a small RPC's own
        # work in the edge.
        self._callables: dict[tuple[str, bool], Any] = {}
        self.rendered = RenderedReplies()
        self.shared = SharedReplies()
        self.gatherer = Gatherer(self._gathering_call, timeout, _username)
        self.verifier = TokenVerifier(self._verify)
        self.draining = False
        self._streams: set[grpc.aio.UnaryStreamCall[Any, Any]] = set()
        self.readiness = Readiness(self._health_check, lambda: self.draining)

    def open(self) -> None:
        """Open the channel to the server (the app's lifespan starts)."""
        self.channel = open_channel(self.target, self.idempotent, CHANNEL_OPTIONS, self.tls)
        self._callables.clear()

    async def close(self) -> None:
        """Close the channel; multi-callables of the old channel are forgotten."""
        channel, self.channel = self.channel, None
        self._callables.clear()
        if channel is not None:
            await channel.close(None)

    def drain(self) -> None:
        """Shutdown begins: end every open stream (with an ``end`` event), refuse new ones."""
        self.draining = True
        for call in list(self._streams):
            call.cancel()

    def _metadata(self, request: Request) -> list[tuple[str, str]]:
        metadata = [(h, request.headers[h]) for h in _FORWARDED_HEADERS if h in request.headers]
        metadata.append(("x-request-id", request_id_of(request.scope)))
        return metadata

    def _health_check(self) -> Any:
        """A grpc.health.v1 check of the whole server, over the edge's channel."""
        check = self._callable(HEALTH_CHECK, False, health_pb2.HealthCheckResponse.FromString)
        return check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT)

    def _callable(
        self, path: str, streaming: bool, deserialize: Callable[[bytes], Any] | None
    ) -> Any:
        """The multi-callable of the RPC at ``path`` on the current channel (cached).

        ``deserialize`` None: the call answers the reply's bytes, unparsed.
        """
        key = (path, deserialize is None)
        callable_ = self._callables.get(key)
        if callable_ is None:
            if self.channel is None:  # an app driven without its lifespan (ASGI test transport)
                self.open()
            assert self.channel is not None
            # A registered method, as the generated stubs ask for: gRPC core
            # then interns the path once instead of on every call (typed Any:
            # grpc's type stubs do not know the keyword).
            factory: Any = self.channel.unary_stream if streaming else self.channel.unary_unary
            callable_ = factory(
                path,
                request_serializer=_serialize,
                response_deserializer=deserialize,
                _registered_method=True,
            )
            self._callables[key] = callable_
        return callable_

    def _gathering_call(self, gathering: Gathering) -> Any:
        return self._callable(gathering.rpc_path, True, gathering.response_class.FromString)

    def _call(self, binding: Binding) -> Any:
        # A JSON reply stays bytes until it is rendered (:mod:`.rendered`).
        deserialize = None if _renders_json(binding) else binding.response_class.FromString
        return self._callable(binding.rpc_path, binding.server_streaming, deserialize)

    async def _verify(self, token: str) -> str:
        """Ask the server about ``token``: the username it accepts it for, or its refusal."""
        verify = self._callable(_VERIFY_PATH, False, None)  # only the verdict counts
        call = verify(
            status_pb2.ListSystemsRequest(),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=VERIFY_TIMEOUT,
        )
        await call
        return _username(await call.trailing_metadata())

    async def _judge(self, request: Request, token: str) -> None:
        """Have the server judge ``token`` (cached) and name the caller; raises its refusal."""
        set_username(request.scope, await self.verifier.username(token))

    async def handle(self, binding: Binding, request: Request) -> Response:
        with_body = has_body(request)
        token: str | None = None
        try:
            if not binding.rest.public:
                token = bearer_token(request.headers)
            if token is not None and (binding.reads_body or binding.server_streaming):
                await self._judge(request, token)
            check_declared(request, body_limit(binding, self.limits) or self.limits.json)
            built = await build_request(binding, request, self.limits)
        except TokenRefusedError as refused:
            return bad_request_response(
                str(refused), None, refused.status, refused.reason, close=with_body
            )
        except grpc.aio.AioRpcError as error:  # the server refused the token
            response = rpc_error_response(error)
            if with_body:
                response.headers["connection"] = "close"
            return response
        except BodyError as error:
            return bad_request_response(
                str(error),
                None,
                error.status,
                error.reason,
                close=True,
                user=username_of(request.scope),
            )
        except ClientDisconnect:
            return Response(status_code=499)
        except BadRequestError as error:
            if token is not None:
                # An anonymous caller learns nothing of the request's shape:
                # the token is judged first (401 before 400).
                try:
                    await self._judge(request, token)
                except grpc.aio.AioRpcError as refusal:
                    return rpc_error_response(refusal)
            return bad_request_response(
                str(error),
                error.field,
                error.status_code,
                user=username_of(request.scope),
                error_type="validation",
            )
        if binding.server_streaming:
            return await self._stream(binding, built, request)
        return await self._unary(binding, built, request, token)

    async def _unary(
        self, binding: Binding, built: Built, request: Request, token: str | None
    ) -> Response:
        """One unary call; or, as the contract says, one request of a call
        gathering the caller's requests that came together (:mod:`.gather`),
        or for a reply callers may share (:mod:`.shared`), the edge's young copy.

        The caller's token is judged first (the verifier's cached verdict, or
        one call for every request with that new token), so a copy only ever
        reaches a caller the server accepts. Callers that find the copy aged
        out while another renews it wait for that call.
        """
        gathering = binding.gathered_by
        if gathering is not None and token is not None:
            asked: Any = built.message  # the contract's request: system_name and path
            gathered = await self.gatherer.submit(
                gathering, token, asked.system_name, asked.path, self._metadata(request)
            )
            if gathered is not None:
                return await self._gathered(binding, built, request, token, gathered)
        max_age = binding.rest.shared_reply_max_age_ms if _renders_json(binding) else 0
        if not max_age or token is None:
            return (await self._called(binding, built, request, token))[0]
        try:
            await self._judge(request, token)
        except grpc.aio.AioRpcError as refusal:
            return rpc_error_response(refusal, built.spelled)
        key = self.shared.key(binding.rpc_path, built.message)
        kept = await self.shared.wait(key)
        if kept is not None:
            return self._reply(binding, kept, built.message)
        flight = self.shared.flight(key)
        reply: bytes | None = None
        try:
            response, reply = await self._called(binding, built, request, token)
        finally:
            if flight is not None:
                self.shared.land(flight, reply, max_age)
        if flight is None and reply is not None:
            self.shared.put(key, reply, max_age)
        return response

    async def _called(
        self, binding: Binding, built: Built, request: Request, token: str | None
    ) -> tuple[Response, Any]:
        """The call's response, and its reply (None if it failed).

        The caller's name comes back in the call's trailing metadata.
        """
        metadata = self._metadata(request)
        call = self._call(binding)(built.message, metadata=metadata, timeout=self.timeout)
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            return await self._failed(error, built, request, token), None
        self._named(request, token, _username(await call.trailing_metadata()))
        return self._reply(binding, reply, built.message), reply

    async def _gathered(
        self, binding: Binding, built: Built, request: Request, token: str, gathered: Gathered
    ) -> Response:
        """The response to one request of a gathered call (:mod:`.gather`), as its own call's."""
        if gathered.failed is not None:
            return await self._failed(gathered.failed, built, request, token)
        self._named(request, token, gathered.username)
        if gathered.error is not None:
            return rich_status_response(gathered.error, built.spelled, username_of(request.scope))
        return self._reply(binding, gathered.reply, built.message)

    def _named(self, request: Request, token: str | None, username: str) -> None:
        """The server named the caller of a successful call: remember it, and say it."""
        if token is not None and username:
            self.verifier.remember(token, username)
            set_username(request.scope, username)

    async def _failed(
        self, error: grpc.aio.AioRpcError, built: Built, request: Request, token: str | None
    ) -> Response:
        """The response to a failed call."""
        if token is not None and error.code() not in _NOT_AUTHENTICATED:
            # A failed call's trailing metadata is its status details, not
            # the username: the verifier names the caller (cached).
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._judge(request, token)
        return rpc_error_response(error, built.spelled, username_of(request.scope))

    def _reply(self, binding: Binding, reply: Any, rpc_request: message.Message) -> Response:
        if _renders_json(binding):  # the reply's bytes
            body = self.rendered.body(
                binding.response_class, binding.rpc_path, binding.response_body, reply
            )
            return Response(body, binding.success_code, media_type="application/json")
        if binding.raw_response:
            body = reply
            response = Response(
                getattr(body, "data", b""),
                binding.success_code,
                media_type=getattr(body, "content_type", "") or "application/octet-stream",
            )
            path = getattr(rpc_request, "path", "")
            name = posixpath.basename(path) if isinstance(path, str) else ""
            if name:
                response.headers["content-disposition"] = attachment(name)
            return response
        return Response(status_code=204)

    async def _stream(self, binding: Binding, built: Built, request: Request) -> Response:
        """A server-streaming RPC as Server-Sent Events, or NDJSON when asked for."""
        if self.draining:
            return bad_request_response(
                "the edge is shutting down", None, 503, SHUTTING_DOWN, close=True
            )
        spelled = built.spelled
        resume_from_header(built.message, request.headers)
        call = self._call(binding)(built.message, metadata=self._metadata(request))
        self._streams.add(call)
        # Wait for the server to accept the call (headers), so that an
        # immediate error still gets its own HTTP status instead of a 200 stream.
        try:
            await call.initial_metadata()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                self._streams.discard(call)
                return status_response(
                    await call.code(),
                    await call.details(),
                    await call.trailing_metadata(),
                    spelled,
                    username_of(request.scope),
                )
        except grpc.aio.AioRpcError as error:
            self._streams.discard(call)
            return rpc_error_response(error, spelled, username_of(request.scope))
        ndjson = NDJSON in request.headers.get("accept", "")
        heartbeat = 0.0 if ndjson else self.heartbeat

        def item(kind: str, data: dict[str, Any]) -> bytes:
            return frame(ndjson, kind, data)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for reply in replies(call, heartbeat):
                    yield HEARTBEAT if reply is None else item("", to_json(reply))
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
                ended_by_drain = self.draining and (
                    isinstance(error, asyncio.CancelledError)
                    or error.code() == grpc.StatusCode.CANCELLED
                )
                if ended_by_drain:
                    end = error_body("the edge is shutting down", {"reason": SHUTTING_DOWN})
                    yield item("end", {"event": "end", **end} if ndjson else end)
                elif isinstance(error, asyncio.CancelledError):
                    raise
                else:
                    body = stream_error_body(
                        error.code(),
                        error.details(),
                        error.trailing_metadata(),
                        username_of(request.scope),
                    )
                    yield item("error", body)
            finally:
                self._streams.discard(call)
                call.cancel()  # the HTTP client went away, or the stream ended

        return StreamingResponse(
            events(), binding.success_code, media_type=NDJSON if ndjson else SSE
        )


def _renders_json(binding: Binding) -> bool:
    """Whether ``binding`` answers its unary reply as a JSON body."""
    return not (binding.raw_response or binding.server_streaming or binding.success_code == 204)


def _serialize(request: message.Message) -> bytes:
    return request.SerializeToString()


def _endpoint(
    edge: Edge, template: str, by_verb: dict[str, Binding]
) -> Callable[[Request], Awaitable[Response]]:
    allowed = ", ".join(sorted(by_verb))

    async def endpoint(request: Request) -> Response:
        set_route(request.scope, template)
        binding = by_verb.get(request.method)
        if binding is None:
            # The most specific template that matches the path decides: a
            # verb it does not bind is 405, not a match of a less specific
            # template (DELETE .../jobs/watch is not a job named "watch").
            response = bad_request_response(
                f"method {request.method} is not allowed here (allowed: {allowed})",
                None,
                405,
                "METHOD_NOT_ALLOWED",
                close=has_body(request),
            )
            response.headers["allow"] = allowed
            return response
        return await edge.handle(binding, request)

    return endpoint


class EdgeApp:
    """The edge's ASGI application (observed, headers on every response), and its :class:`Edge`."""

    def __init__(self, app: ASGIApp, edge: Edge, access_log: AccessLog | None) -> None:
        self.edge = edge
        self.access_log = access_log
        self.app = app  # the application inside the observation (a :class:`Dispatch`)
        self._observed = Observed(app, access_log)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._observed(scope, receive, send)


def create_app(
    target: str,
    timeout: float = 300.0,
    max_form_body: int | None = None,
    limits: BodyLimits | None = None,
    tls: UpstreamTLS | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
    access_log: AccessLog | None = None,
) -> EdgeApp:
    """The edge for the gRPC server(s) at ``target`` (see :mod:`.upstream`).

    ``limits`` bound what the edge reads of a body, and how patiently;
    ``max_form_body`` overrides their upload limit (multipart bodies);
    ``heartbeat`` is the SSE streams' keepalive interval (:mod:`.streams`);
    ``access_log`` gets a line per request (:mod:`.accesslog`; None: no log).
    """
    limits = limits or BodyLimits()
    if max_form_body is not None:
        limits = dataclasses.replace(limits, upload=max_form_body)
    bindings = bindings_of(hpcgate_services())
    gets = [b for b in bindings if b.verb == "GET"]
    reads = frozenset(b.rpc_path for b in gets) | {
        b.gathered_by.rpc_path for b in gets if b.gathered_by is not None
    }
    edge = Edge(target, timeout, limits, reads, tls, heartbeat)
    by_path: dict[str, dict[str, Binding]] = {}
    for binding in bindings:  # already sorted, most specific first
        by_path.setdefault(binding.route_path, {})[binding.verb] = binding
    # Every verb reaches the endpoint, which answers 405 itself.
    routes = [
        Route(path, _endpoint(edge, path, verbs), methods=_ALL_VERBS)
        for path, verbs in by_path.items()
    ]
    document = openapi_document(bindings)

    async def openapi(request: Request) -> Response:
        set_route(request.scope, "/openapi.json")
        return JSONResponse(document)

    async def healthz(request: Request) -> Response:
        set_route(request.scope, "/healthz")
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        set_route(request.scope, "/readyz")
        verdict = await edge.readiness.verdict()
        if verdict.ready:
            return JSONResponse({"status": "ready"})
        return bad_request_response(verdict.message, None, 503, verdict.reason)

    routes[:0] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        edge.open()
        try:
            yield
        finally:
            await edge.close()
            if access_log is not None:
                access_log.flush()

    starlette = Starlette(routes=routes, lifespan=lifespan)
    return EdgeApp(Dispatch(routes, starlette), edge, access_log)
