"""Each HTTP request straight to its route's endpoint; the rest through Starlette.

Starlette's application wraps every request in five layers before an
endpoint runs (ServerErrorMiddleware, ExceptionMiddleware, the Router, the
route's ``request_response`` and its exception wrapper), each a coroutine
and most a ``send`` wrapper of their own: together about a fifth of the
edge's CPU per ``GET /status/systems`` (py-spy under wrk,
``bench/results/2026-12-03-edge-profile.md``). The edge registers no
exception handlers, so for a request that some route matches fully those
layers only pass the call through. :class:`Dispatch` matches the routes
itself, in the same order and with the same ``Route.matches`` as the
Router, and calls the first full match's endpoint directly. Everything
else (a 404, a 405 of a method no route takes, a trailing-slash redirect,
the lifespan) goes to the Starlette application unchanged, so those
answers stay Starlette's. An endpoint's exception is answered 500 by
:class:`hpcgate.edge.observe.Observed`, the outermost layer, as
ServerErrorMiddleware did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class Dispatch:
    """An ASGI app: ``routes`` served directly, anything they do not fully match by ``fallback``."""

    def __init__(self, routes: Sequence[Route], fallback: ASGIApp) -> None:
        self.routes = tuple(routes)
        self.fallback = fallback

    def _match(self, scope: Scope) -> Endpoint | None:
        """The endpoint of the first route that matches ``scope`` fully (path params set)."""
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                endpoint: Endpoint = route.endpoint
                return endpoint
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._match(scope) if scope["type"] == "http" else None
        if endpoint is None:
            await self.fallback(scope, receive, send)
            return
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)
