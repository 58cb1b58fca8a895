"""Each HTTP request straight to its route's endpoint; the rest through Starlette.

Starlette's application wraps every request in five layers before an
endpoint runs (ServerErrorMiddleware, ExceptionMiddleware, the Router, the
route's ``request_response`` and its exception wrapper), each a coroutine
and most a ``send`` wrapper of their own, and its Router tries the routes'
regular expressions one by one: ``ops/ls`` is the 20th of 39 routes (py-spy
under wrk put the routing layers at about a quarter of the edge's CPU per
``GET /status/systems``). The edge registers no exception handlers, so for
a request that some route matches fully those layers only pass the call
through.

:class:`Dispatch` finds the route by the path's segments in a table
(literal segments, and ``{name}`` for one segment, as Starlette's ``{name}``
matches), takes the first route in the routes' order that fits, confirms it
with that route's own ``Route.matches`` (which also sets the path
parameters) and calls its endpoint directly. Everything else (a 404, a 405
of a method no route takes, a trailing-slash redirect, a ``{name}`` left
empty, the lifespan) goes to the Starlette application unchanged, so those
answers stay Starlette's. An endpoint's exception is answered 500 by
:class:`hpcgate.edge.observe.Observed`, the outermost layer, as
ServerErrorMiddleware did.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
# A path parameter the table can stand for: a whole segment, Starlette's default convertor.
_PLAIN_PARAMETER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
# Per number of segments: (positions of parameters, {literal segments: first route}).
Table = dict[int, list[tuple[frozenset[int], dict[tuple[str, ...], int]]]]


def _table(routes: Sequence[Route]) -> Table:
    """The routes by their segments; an earlier route wins over a later of the same shape."""
    by_positions: dict[tuple[int, frozenset[int]], dict[tuple[str, ...], int]] = {}
    for index, route in enumerate(routes):
        segments = route.path.split("/")
        positions = frozenset(i for i, s in enumerate(segments) if "{" in s or "}" in s)
        for i in positions:
            if not _PLAIN_PARAMETER.fullmatch(segments[i]):
                # {name:path} and the like span or split segments: the table could
                # then pick a later route than Starlette's first match.
                raise ValueError(f"{route.path}: only whole-segment {{name}} parameters")
        literals = tuple(s for i, s in enumerate(segments) if i not in positions)
        by_positions.setdefault((len(segments), positions), {}).setdefault(literals, index)
    table: Table = {}
    for (count, positions), routes_by_literals in by_positions.items():
        table.setdefault(count, []).append((positions, routes_by_literals))
    return table


class Dispatch:
    """An ASGI app: ``routes`` served directly, anything they do not fully match by ``fallback``.

    ``fallback`` is the Starlette application of the same ``routes``.
    """

    def __init__(self, routes: Sequence[Route], fallback: ASGIApp) -> None:
        self.routes = tuple(routes)
        self.fallback = fallback
        self._table = _table(self.routes)

    def _candidate(self, path: str) -> Route | None:
        """The first route (in order) whose segments fit ``path``'s, if any."""
        segments = path.split("/")
        best: int | None = None
        for positions, routes_by_literals in self._table.get(len(segments), ()):
            literals = tuple(s for i, s in enumerate(segments) if i not in positions)
            index = routes_by_literals.get(literals)
            if index is not None and (best is None or index < best):
                best = index
        return None if best is None else self.routes[best]

    def match(self, scope: Scope) -> Endpoint | None:
        """The endpoint of the route that Starlette's Router would pick, when it matches fully.

        None when Starlette should answer: no route fits, or the one that fits
        does not match fully (its method, an empty parameter), where a later
        route or a 404/405 of Starlette's decides.
        """
        route = self._candidate(scope["path"])
        if route is None:
            return None
        match, child_scope = route.matches(scope)
        if match is not Match.FULL:
            return None
        scope["route"] = route
        scope.update(child_scope)
        endpoint: Endpoint = route.endpoint
        return endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.match(scope) if scope["type"] == "http" else None
        if endpoint is None:
            await self.fallback(scope, receive, send)
            return
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)
