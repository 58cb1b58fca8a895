"""Every request observed once: its request id, metrics, response headers, access-log line.

The one ASGI wrapper around the application, outermost, so that every
answer counts (404s, 405s, the guard's 401s, streams) and carries the
headers of :mod:`.headers`. The request id is the client's
``X-Request-Id`` (nginx sets one, see ``deploy/nginx/hpcgate.conf``) when it
is a short printable string, else a fresh one; it goes to the server as
gRPC metadata (:func:`request_id_of`), back to the client as
``X-Request-Id``, and into the access log, so one id follows a request
through the logs of every hop. The route is the template the endpoint
set (:func:`set_route`), never the raw path.
"""

from __future__ import annotations

import itertools
import os
import time

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpcgate.edge.accesslog import AccessLog
from hpcgate.edge.headers import ResponseHeaders, username_of
from hpcgate.edge.metrics import EDGE_METRICS

_REQUEST_ID = "hpcgate.request_id"
_ROUTE = "hpcgate.route"
NO_ROUTE = "-"
# Probes come every few seconds: counted, not logged.
UNLOGGED = frozenset({"/healthz", "/readyz"})
MAX_REQUEST_ID = 128
# Request ids of requests without a usable X-Request-Id: a per-process random
# prefix and a counter (uuid4 per request showed in the edge's profile).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)
# The answer to a request whose handler raised before it answered.
INTERNAL_ERROR = PlainTextResponse("Internal Server Error", status_code=500)


def _usable(value: bytes) -> bool:
    """Whether a client's id may be used: gRPC metadata takes printable ASCII only."""
    return 0 < len(value) <= MAX_REQUEST_ID and all(0x20 < b < 0x7F for b in value)


def request_id_of(scope: Scope) -> str:
    """The request's id (one made up when the request did not pass :class:`Observed`)."""
    request_id: str | None = scope.get(_REQUEST_ID)
    if request_id is None:
        request_id = scope[_REQUEST_ID] = f"{_ID_PREFIX}-{next(_ids)}"
    return request_id


def set_route(scope: Scope, template: str) -> None:
    """Name the route template that serves the request (metrics and log label)."""
    scope[_ROUTE] = template


class Observed:
    """``app`` with request ids, metrics, response headers and (with ``access_log``) a log line."""

    def __init__(self, app: ASGIApp, access_log: AccessLog | None) -> None:
        self.app = app
        self.access_log = access_log
        self.headers = ResponseHeaders()
        self.metrics = EDGE_METRICS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, clock = time.time(), time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _usable(value):
                    request_id = value.decode()
                break
        if not request_id:
            request_id = f"{_ID_PREFIX}-{next(_ids)}"
        scope[_REQUEST_ID] = request_id
        echoed = (b"x-request-id", request_id.encode())
        status = 0
        sent = 0

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = self.headers.of(scope, message.get("headers", ()), started)
                headers.append(echoed)
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        metrics.in_flight += 1
        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            if not status:  # answered as Starlette's ServerErrorMiddleware would, then logged
                await INTERNAL_ERROR(scope, receive, observed_send)
            raise
        finally:
            metrics.in_flight -= 1
            seconds = time.perf_counter() - clock
            route = scope.get(_ROUTE, NO_ROUTE)
            method = scope["method"]
            answered = status or 499  # no response started: the client went away
            metrics.route(route).record(method, answered, seconds)
            if self.access_log is not None and route not in UNLOGGED:
                user = username_of(scope)
                entry = (started, method, route, answered, seconds, sent, request_id, user)
                self.access_log.request(entry)
