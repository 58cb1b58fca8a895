"""The Redis coordinator against a real redis-server: leases, fencing, slots, outages.

Two coordinators stand for two replicas (each has its own replica id and
connections); the Redis server is this module's own, on a free port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from hpcgate.server.coordination import LOCAL
from hpcgate.server.coordination.redis import RETRY_AFTER, RedisCoordinator
from hpcgate.server.health.checker import HealthChecker
from hpcgate.server.health.probes import Probe
from redisserver import RedisServer

# redis-server comes with the cluster's packages (dev/cluster), not with the venv.
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisCoordinator, ...]]:
    """Two replicas' coordinators under a prefix of the test's own."""
    prefix = f"t{time.monotonic_ns()}:"
    replicas = tuple(RedisCoordinator(redis_server.url, prefix, lease_ttl=1.0) for _ in range(2))
    try:
        yield replicas
    finally:
        for replica in replicas:
            await replica.close()


async def test_one_holder_at_a_time_and_a_stale_holder_cannot_publish(
    pair: tuple[RedisCoordinator, ...],
) -> None:
    a, b = pair
    heard: list[bytes] = []
    listening = b.listen("jobs", heard.append)
    token = await a.claim("poller")
    assert token is not None and token > LOCAL
    assert await b.claim("poller") is None
    assert await a.claim("poller") == token  # renewed, same grant
    await asyncio.sleep(0.3)  # the subscription is in place
    assert await a.publish("jobs", b"one", ("poller", token))
    await asyncio.sleep(1.3)  # a stalls past its lease ...
    taken = await b.claim("poller")  # ... and b takes over
    assert taken is not None and taken > token
    assert not await a.publish("jobs", b"stale", ("poller", token))
    assert await b.publish("jobs", b"two", ("poller", taken))
    await asyncio.sleep(0.3)
    assert heard == [b"one", b"two"]
    listening.close()
    await b.release("poller", taken)
    assert await a.claim("poller") is not None


async def test_slots_hold_the_limit_across_replicas_and_lapse_with_their_holder(
    pair: tuple[RedisCoordinator, ...],
) -> None:
    a, b = pair
    assert await a.take_slot("ssh", "a1", 2)
    assert await a.take_slot("ssh", "a2", 2)
    assert not await b.take_slot("ssh", "b1", 2)
    await asyncio.sleep(0.6)
    await a.renew_slots("ssh", ["a1"])  # a2's holder "died": not renewed
    await asyncio.sleep(0.6)
    assert await b.take_slot("ssh", "b1", 2)  # a2 lapsed
    assert not await b.take_slot("ssh", "b2", 2)  # a1 is alive
    await a.give_slot("ssh", "a1")
    assert await b.take_slot("ssh", "b2", 2)


async def test_without_redis_a_replica_acts_alone_at_once_and_recovers(
    pair: tuple[RedisCoordinator, ...], redis_server: RedisServer
) -> None:
    a, b = pair
    heard: list[bytes] = []
    b.listen("jobs", heard.append)
    assert await b.claim("poller") is not None
    assert await a.claim("poller") is None
    redis_server.kill()
    try:
        started = time.monotonic()
        assert await a.claim("poller") == LOCAL  # acts alone, does not raise
        assert await a.take_slot("ssh", "a1", 1)
        assert await a.load("health") is None
        assert time.monotonic() - started < 3  # never hangs
        assert not a.health().healthy and "Redis unreachable" in (a.health().message or "")
    finally:
        redis_server.start()
    await asyncio.sleep(RETRY_AFTER + 0.2)
    token = await a.claim("poller")  # b's lease went with the old server's memory
    assert token is not None and token != LOCAL
    assert a.health().healthy
    # b's reader reconnected and resubscribed by itself.
    deadline = time.monotonic() + 10
    while not heard and time.monotonic() < deadline:
        await a.publish("jobs", b"back", ("poller", token))
        await asyncio.sleep(0.2)
    assert heard and heard[0] == b"back"


async def test_one_replica_probes_and_every_replica_reports_its_results(
    redis_server: RedisServer,
) -> None:
    """Three checkers of one system on one Redis: one probes, all answer alike."""
    prefix = f"h{time.monotonic_ns()}:"
    coordinators = [RedisCoordinator(redis_server.url, prefix, lease_ttl=2.0) for _ in range(3)]
    probed: list[int] = []

    def probe_of(replica: int) -> Probe:
        async def check() -> None:
            probed.append(replica)

        return Probe("ssh", check)

    checkers = [
        HealthChecker("daint", [probe_of(i)], 0.3, 1.0, coordinator=c)
        for i, c in enumerate(coordinators)
    ]
    try:
        for checker in checkers:
            checker.start()
        await asyncio.sleep(2.0)
        assert len(set(probed)) == 1, probed  # one prober ...
        assert len(probed) <= 2.0 / 0.3 + 2  # ... once per interval
        # ... and every replica reports its findings (and Redis's health).
        for checker in checkers:
            assert {r.service_type for r in checker.results()} == {"ssh", "coordination"}
            assert all(r.healthy for r in checker.results())
    finally:
        for checker in checkers:
            await checker.stop()
        for coordinator in coordinators:
            await coordinator.close()
