"""`/status/systems` answered from the edge's shared copy, and to whom (:mod:`hpcgate.edge.shared`).

The session's real server and edge; how often the server was called is read
from its own RPC tallies (the server runs in this process).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from conftest import LiveService
from devkeys import DevIssuer
from hpcgate.server.rpc.metrics import RPC_METRICS
from hpcgate.v1 import options_pb2, status_pb2

LIST_SYSTEMS = "/hpcgate.v1.Status/ListSystems"


def _max_age() -> float:
    """Seconds for which the contract lets the edge share a ListSystems reply."""
    method = status_pb2.DESCRIPTOR.services_by_name["Status"].methods_by_name["ListSystems"]
    rest = method.GetOptions().Extensions[options_pb2.rest]
    return float(rest.shared_reply_max_age_ms) / 1000


def _calls() -> int:
    """ListSystems calls the server has answered, whatever their outcome."""
    return sum(RPC_METRICS.method(LIST_SYSTEMS).codes.values())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _fresh(live: LiveService, user: str) -> dict[str, str]:
    """A token the edge has never seen (its own ``jti``)."""
    return _bearer(live.issuer.token(user, jti=uuid.uuid4().hex))


async def test_an_accepted_caller_gets_the_reply_of_the_last_second(live: LiveService) -> None:
    assert _max_age() > 0
    await asyncio.sleep(_max_age() + 0.2)  # no young copy left by earlier tests
    alice = _fresh(live, "alice")
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=30) as http:
        before = _calls()
        first = await http.get("/status/systems", headers=alice)
        assert first.status_code == 200, first.text
        assert _calls() == before + 2  # one call judges the new token, one is the reply
        again = [await http.get("/status/systems", headers=alice) for _ in range(5)]
        assert _calls() == before + 2  # all five from the edge's copy
        assert [r.status_code for r in again] == [200] * 5
        assert {r.content for r in again} == {first.content}
        assert {r.headers["F7T-AuthUsername"] for r in again} == {"alice"}

        await asyncio.sleep(_max_age() + 0.2)
        later = await http.get("/status/systems", headers=alice)
        assert later.status_code == 200
        assert _calls() == before + 3


async def test_each_new_caller_is_judged_by_the_server_first(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=30) as http:
        warm = await http.get("/status/systems", headers=_fresh(live, "alice"))
        assert warm.status_code == 200
        before = _calls()

        # A token the server never accepted, while the copy is young: refused, by the server.
        forged = _bearer(DevIssuer.generate().token("alice"))
        refused = await http.get("/status/systems", headers=forged)
        assert refused.status_code == 401, refused.text
        assert "F7T-AuthUsername" not in refused.headers
        assert "systems" not in refused.json()
        expired = _bearer(live.issuer.token("alice", lifetime=-60, jti=uuid.uuid4().hex))
        assert (await http.get("/status/systems", headers=expired)).status_code == 401
        assert _calls() == before + 2

        # Bob's first token is judged by a call (and named by the server), his next is not.
        bob = _fresh(live, "bob")
        first = await http.get("/status/systems", headers=bob)
        judged = _calls()
        second = await http.get("/status/systems", headers=bob)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["F7T-AuthUsername"] == second.headers["F7T-AuthUsername"] == "bob"
    # The judging call, and a renewal only if the copy aged out meanwhile (a slow machine).
    assert before + 3 <= judged <= before + 4
    assert _calls() == judged


async def test_callers_that_find_the_copy_aged_out_wait_for_one_renewal(
    live: LiveService,
) -> None:
    alice = _fresh(live, "alice")
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=30) as http:
        assert (await http.get("/status/systems", headers=alice)).status_code == 200
        await asyncio.sleep(_max_age() + 0.2)
        before = _calls()
        replies = await asyncio.gather(
            *(http.get("/status/systems", headers=alice) for _ in range(20))
        )
    assert [r.status_code for r in replies] == [200] * 20
    assert _calls() == before + 1
