"""Dispatch picks the route Starlette's Router would, or leaves the request to Starlette."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from hpcgate.edge.app import create_app
from hpcgate.edge.dispatch import Dispatch

VERBS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _dispatch() -> Dispatch:
    dispatch = create_app("127.0.0.1:1").app
    assert isinstance(dispatch, Dispatch)
    return dispatch


def _scope(path: str, method: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}


def _routers_choice(routes: tuple[Route, ...], path: str, method: str) -> Route | None:
    """The route Starlette's Router serves a request by: its first full match."""
    for route in routes:
        match, _ = route.matches(_scope(path, method))
        if match is Match.FULL:
            return route
    return None


def _paths(routes: tuple[Route, ...]) -> list[str]:
    """Each template filled in, and the near misses that Starlette must answer."""
    paths = []
    for route in routes:
        filled = route.path.replace("{system_name}", "cluster").replace("{job_id}", "42")
        paths += [filled, filled + "/", filled.rstrip("/"), filled + "/x"]
        paths.append(route.path.replace("{system_name}", "").replace("{job_id}", ""))
    return [*paths, "/", "", "/compute/cluster/jobs/watch", "/nope", "//status/systems"]


def test_every_path_and_verb_gets_the_routers_route_or_goes_to_starlette() -> None:
    dispatch = _dispatch()
    direct = 0
    for path in _paths(dispatch.routes):
        for method in VERBS:
            chosen = _routers_choice(dispatch.routes, path, method)
            scope = _scope(path, method)
            endpoint = dispatch.match(scope)
            if endpoint is not None:
                direct += 1
                assert chosen is not None, (path, method)
                assert scope["route"] is chosen, (path, method)
                assert endpoint is chosen.endpoint
                assert scope["path_params"] == chosen.matches(_scope(path, method))[1].get(
                    "path_params"
                )
    # What the routes serve goes straight to its endpoint (every verb reaches a
    # binding's endpoint, which answers 405 itself).
    assert direct >= len(dispatch.routes) * len(VERBS) - 3 * (len(VERBS) - 2)


def test_the_route_listed_first_wins_a_path_two_templates_fit() -> None:
    dispatch = _dispatch()
    scope = _scope("/compute/cluster/jobs/watch", "GET")
    dispatch.match(scope)
    assert scope["route"].path == "/compute/{system_name}/jobs/watch"
    assert scope["path_params"] == {"system_name": "cluster"}


def test_a_parameter_spanning_segments_is_refused() -> None:
    async def endpoint(request: Request) -> Response:
        raise AssertionError

    with pytest.raises(ValueError, match="whole-segment"):
        Dispatch([Route("/files/{path:path}", endpoint)], Starlette())
