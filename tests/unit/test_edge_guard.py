"""The edge's token guard: the shape check, and the cache of the server's verdicts."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from starlette.datastructures import Headers

from hpcgate.edge.bindings import bindings_of, hpcgate_services
from hpcgate.edge.guard import (
    MAX_AUTHORIZATION,
    TokenRefusedError,
    TokenVerifier,
    bearer_token,
)
from hpcgate.server.rpc.authentication import is_public


def jwt(**claims: object) -> str:
    def part(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ([], 401, "TOKEN_MISSING"),
        ([("authorization", "Bearer ")], 401, "TOKEN_MISSING"),
        ([("authorization", "Basic YTpi")], 401, "TOKEN_MALFORMED"),
        ([("authorization", "Bearer not-a-jwt")], 401, "TOKEN_MALFORMED"),
        (
            [("authorization", "Bearer a.b.c"), ("authorization", "Bearer a.b.c")],
            401,
            "TOKEN_MALFORMED",
        ),
        ([("authorization", "Bearer " + "a" * MAX_AUTHORIZATION + ".b.c")], 431, "TOKEN_TOO_LARGE"),
    ],
)
def test_shapes_that_cannot_be_tokens(
    headers: list[tuple[str, str]], status: int, reason: str
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    with pytest.raises(TokenRefusedError) as refused:
        bearer_token(Headers(raw=raw))
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_a_jwt_shaped_token_passes() -> None:
    token = jwt(exp=1)
    assert bearer_token(Headers({"authorization": f"bearer  {token} "})) == token


class Server:
    """Stands in for the server's verdict: counts the questions."""

    def __init__(self, delay: float = 0.0) -> None:
        self.asked = 0
        self.delay = delay
        self.refused: set[str] = set()

    async def verify(self, token: str) -> str:
        self.asked += 1
        await asyncio.sleep(self.delay)
        if token in self.refused:
            raise PermissionError("refused")
        return "alice"


async def test_a_verdict_is_cached_and_refusals_are_not() -> None:
    server = Server()
    verifier = TokenVerifier(server.verify)
    good = jwt(exp=time.time() + 3600)
    assert await verifier.username(good) == "alice"
    assert await verifier.username(good) == "alice"
    assert server.asked == 1
    bad = jwt(exp=time.time() + 3600, sub="mallory")
    server.refused.add(bad)
    for _ in range(2):
        with pytest.raises(PermissionError):
            await verifier.username(bad)
    assert server.asked == 3


async def test_an_entry_never_outlives_its_token_or_the_ttl() -> None:
    verifier = TokenVerifier(Server().verify, ttl=3600)
    expired = jwt(exp=time.time() - 1)
    verifier.remember(expired, "alice")
    assert verifier.known(expired) is None
    soon = jwt(exp=time.time() + 0.2)
    verifier.remember(soon, "alice")
    assert verifier.known(soon) == "alice"
    await asyncio.sleep(0.5)
    assert verifier.known(soon) is None
    short = TokenVerifier(Server().verify, ttl=0.2)
    lasting = jwt(exp=time.time() + 3600)
    short.remember(lasting, "alice")
    await asyncio.sleep(0.5)
    assert short.known(lasting) is None


async def test_the_cache_is_bounded() -> None:
    verifier = TokenVerifier(Server().verify, size=3)
    tokens = [jwt(exp=time.time() + 3600, n=i) for i in range(5)]
    for token in tokens:
        verifier.remember(token, "alice")
    assert [verifier.known(t) for t in tokens] == [None, None, "alice", "alice", "alice"]


async def test_concurrent_askers_share_one_question() -> None:
    server = Server(delay=0.1)
    verifier = TokenVerifier(server.verify)
    token = jwt(exp=time.time() + 3600)
    names = await asyncio.gather(*(verifier.username(token) for _ in range(10)))
    assert names == ["alice"] * 10
    assert server.asked == 1


async def test_waiters_ask_anew_when_the_first_asker_goes_away() -> None:
    server = Server(delay=1.0)
    verifier = TokenVerifier(server.verify)
    token = jwt(exp=time.time() + 3600)
    first = asyncio.ensure_future(verifier.username(token))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(verifier.username(token))
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second == "alice"
    assert server.asked == 2


def test_public_routes_are_the_servers_public_methods() -> None:
    """RestOptions.public and the server's list agree for every REST-bound RPC."""
    for binding in bindings_of(hpcgate_services()):
        assert binding.rest.public == is_public(binding.rpc_path), binding.rpc_path
