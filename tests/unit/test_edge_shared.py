"""The edge's shared replies: kept per RPC and request, until their own age, bounded,
and renewed by one call that the other callers wait for."""

from __future__ import annotations

import asyncio
import time

from hpcgate.edge.shared import SharedReplies
from hpcgate.v1 import filesystem_pb2, status_pb2

SYSTEMS = "/hpcgate.v1.Status/ListSystems"
LS = "/hpcgate.v1.Filesystem/Ls"


def test_a_reply_is_answered_until_its_age_and_then_forgotten() -> None:
    shared = SharedReplies()
    key = shared.key(SYSTEMS, status_pb2.ListSystemsRequest())
    assert shared.get(key) is None
    shared.put(key, b"reply", max_age_ms=200)
    assert shared.get(shared.key(SYSTEMS, status_pb2.ListSystemsRequest())) == b"reply"
    time.sleep(0.25)
    assert shared.get(key) is None
    assert len(shared) == 0


def test_the_rpc_and_every_request_field_are_part_of_the_key() -> None:
    shared = SharedReplies()
    home = filesystem_pb2.LsRequest(system_name="cluster", path="/home/alice")
    shared.put(shared.key(LS, home), b"home", max_age_ms=60_000)

    def kept(path: str, system: str, where: str) -> bytes | None:
        return shared.get(
            shared.key(path, filesystem_pb2.LsRequest(system_name=system, path=where))
        )

    assert kept(LS, "cluster", "/home/alice") == b"home"
    assert kept(LS, "cluster", "/home/bob") is None
    assert kept(LS, "other", "/home/alice") is None
    assert kept("/hpcgate.v1.Filesystem/View", "cluster", "/home/alice") is None


def test_the_store_keeps_the_most_recent_entries() -> None:
    shared = SharedReplies(entries=2)
    keys = [shared.key(LS, filesystem_pb2.LsRequest(path=f"/{n}")) for n in range(3)]
    for n, key in enumerate(keys):
        shared.put(key, str(n).encode(), max_age_ms=60_000)
    assert len(shared) == 2
    assert shared.get(keys[0]) is None
    assert [shared.get(k) for k in keys[1:]] == [b"1", b"2"]


async def test_callers_wait_for_the_one_call_that_renews_a_reply() -> None:
    shared = SharedReplies()
    key = shared.key(SYSTEMS, status_pb2.ListSystemsRequest())
    assert await shared.wait(key) is None  # nothing kept, nothing under way: call yourself
    flight = shared.flight(key)
    assert flight is not None
    assert shared.flight(key) is None  # one renewal at a time
    waiters = [asyncio.create_task(shared.wait(key)) for _ in range(3)]
    gone = asyncio.create_task(shared.wait(key))
    await asyncio.sleep(0)
    gone.cancel()  # a waiter that goes away leaves the call and the others alone
    shared.land(flight, b"fresh", max_age_ms=60_000)
    assert await asyncio.gather(*waiters) == [b"fresh"] * 3
    assert shared.get(key) == b"fresh"


async def test_a_failed_renewal_is_not_kept_and_its_waiters_call_themselves() -> None:
    shared = SharedReplies()
    key = shared.key(SYSTEMS, status_pb2.ListSystemsRequest())
    flight = shared.flight(key)
    assert flight is not None
    waiter = asyncio.create_task(shared.wait(key))
    await asyncio.sleep(0)
    shared.land(flight, None)
    assert await waiter is None
    assert shared.get(key) is None
    assert shared.flight(key) is not None  # the next caller may renew it
