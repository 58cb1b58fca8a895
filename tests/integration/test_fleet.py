"""Three server replicas sharing coordination through a real Redis, on the loopback cluster.

The replicas run in this process, each with its own server, pools, health
checker and Redis coordinator (its own replica id and connections), so they
share only what goes through Redis. The fleet has no service account: its
only SSH connections are the test users', which the SSH test counts at the
sshd's port.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest
from integration.test_scheduler import cancel_quietly, ssh_output, submit
from integration.test_watch import COMPLETED, assert_lifecycle_order, collect, open_watch

from cluster_fixture import Cluster
from conftest import LiveService, Service, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.server.config import CredentialsConfig
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc, status_pb2, status_pb2_grpc
from localsite import SYSTEM
from redisserver import RedisServer

REPLICAS = 3
LEASE_TTL = 3.0
# A user's connections to the system, fleet-wide.
MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("fleet-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def fleet(
    cluster: Cluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[LiveService]]:
    """Three replicas of the server (each with its edge) on one Redis."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("fleet") / "jwks.json"
    issuer.write_jwks(jwks)
    base = live_settings(cluster, jwks)
    ssh = base.systems[0].ssh
    system = base.systems[0].model_copy(
        update={
            "ssh": ssh.model_copy(
                update={
                    "pool": ssh.pool.model_copy(update={"max_connections": MAX_CONNECTIONS}),
                    "timeouts": ssh.timeouts.model_copy(update={"idle": 1.0}),
                }
            )
        }
    )
    credentials = CredentialsConfig.model_validate(
        base.credentials.model_dump(exclude={"service_account"})
    )
    settings = base.model_copy(
        update={
            "systems": [system],
            "credentials": credentials,
            "coordination": base.coordination.model_copy(
                update={
                    "backend": "redis",
                    "url": redis_server.url,
                    "prefix": f"fleet{os.getpid()}:",
                    "lease_ttl": LEASE_TTL,
                }
            ),
        }
    )
    # start_service is an async generator: closing it stops the replica.
    services = [
        cast(AsyncGenerator[Service, None], start_service(settings)) for _ in range(REPLICAS)
    ]
    replicas = []
    try:
        for service in services:
            running = await anext(service)
            replicas.append(LiveService(**vars(running), issuer=issuer, system=SYSTEM))
        yield replicas
    finally:
        for service in services:
            await service.aclose()


def _polls(replica: LiveService) -> int:
    return replica.running.runtime.system(SYSTEM).watch.polls


def _commands(replica: LiveService) -> int:
    return replica.running.runtime.system(SYSTEM).watch.commands_run


async def test_watchers_on_every_replica_share_one_poller(fleet: list[LiveService]) -> None:
    """1,000 watchers over 3 replicas: one set of scheduler commands per interval, fleet-wide."""
    config = fleet[0].running.runtime.system(SYSTEM).config.scheduler
    job_ids = await asyncio.gather(*(submit(fleet[i % 3], "alice", "sleep 4") for i in range(10)))
    try:
        polls = [_polls(r) for r in fleet]
        commands = [_commands(r) for r in fleet]
        started = time.monotonic()
        calls = [
            open_watch(fleet[i % REPLICAS], "alice", [job_ids[i % 10]], send_initial=True)
            for i in range(1000)
        ]
        await asyncio.gather(*(call.initial_metadata() for call in calls))
        results = await asyncio.gather(*(collect(call) for call in calls))
        elapsed = time.monotonic() - started
    finally:
        await asyncio.gather(*(cancel_quietly(fleet[0], "alice", j) for j in job_ids))
    polled = [_polls(r) - p for r, p in zip(fleet, polls, strict=True)]
    ran = [_commands(r) - c for r, c in zip(fleet, commands, strict=True)]
    for i, events in enumerate(results):
        assert {e.job.job_id for e in events} == {job_ids[i % 10]}
        assert events[-1].job.status.normalized_state == COMPLETED
        assert_lifecycle_order(events)
    intervals = elapsed / config.poll_min_interval
    print(f"\n1000 watchers on 3 replicas: polls {polled}, commands {ran}, {elapsed:.1f} s")
    # One poller fleet-wide (a takeover would show as a second replica's polls) ...
    assert sorted(polled)[:2] == [0, 0], polled
    # ... never more often than the minimum interval, one squeue per poll
    # (sacct only for jobs squeue forgot).
    assert sum(polled) <= intervals + 2
    assert sum(ran) <= 2 * sum(polled)


def _ssh_sockets(port: int) -> set[str]:
    """This process's established TCP connections to ``port``, by inode (from the kernel)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        found = re.fullmatch(r"socket:\[(\d+)\]", target)
        if found:
            inodes.add(found.group(1))
    found_here = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                found_here.add(fields[9])
    return found_here


async def test_a_burst_through_every_replica_keeps_the_fleet_wide_ssh_limit(
    fleet: list[LiveService], cluster: Cluster, remote_dir: str
) -> None:
    """300 concurrent downloads by one user: never more than the limit at sshd's port."""
    await ssh_output(cluster, "alice", f"printf fleet > {remote_dir}/f")
    port = int(cluster.raw["ssh"]["port"])
    # The fleet's earlier connections close when idle, the test's own now.
    for _ in range(100):
        if not _ssh_sockets(port):
            break
        await asyncio.sleep(0.1)
    # Other services of the test session may keep connections of their own.
    before = _ssh_sockets(port)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = len(_ssh_sockets(port) - before)
            if now > peak[0]:
                peak[0] = now
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stubs = [filesystem_pb2_grpc.FilesystemStub(r.channel) for r in fleet]
        request = filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=f"{remote_dir}/f")
        replies = await asyncio.gather(
            *(
                stubs[i % REPLICAS].Download(
                    request, metadata=fleet[i % REPLICAS].metadata("alice"), timeout=60
                )
                for i in range(300)
            ),
            return_exceptions=True,
        )
    finally:
        stop.set()
        sampler.join()
    failures = [r for r in replies if isinstance(r, BaseException)]
    print(
        f"\n300 downloads over 3 replicas: peak {peak[0]} sshd connections, {len(failures)} failed"
    )
    assert not failures, failures[:3]
    assert all(r.data == b"fleet" for r in replies if not isinstance(r, BaseException))
    assert 1 <= peak[0] <= MAX_CONNECTIONS


async def _coordination_health(replica: LiveService) -> bool | None:
    stub = status_pb2_grpc.StatusStub(replica.channel)
    reply = await stub.ListSystems(
        status_pb2.ListSystemsRequest(), metadata=replica.metadata("alice"), timeout=10
    )
    for entry in reply.systems[0].services_health:
        if entry.service_type == "coordination":
            return entry.healthy
    return None


async def test_without_redis_replicas_serve_say_so_and_recover(
    fleet: list[LiveService], redis_server: RedisServer, remote_dir: str
) -> None:
    interval = fleet[0].running.settings.systems[0].probing.interval
    assert [await _coordination_health(r) for r in fleet] == [True] * REPLICAS
    redis_server.kill()
    try:
        await asyncio.sleep(interval + 1.5)
        started = time.monotonic()
        assert [await _coordination_health(r) for r in fleet] == [False] * REPLICAS
        for replica in fleet:  # they still serve, and do not hang
            stub = filesystem_pb2_grpc.FilesystemStub(replica.channel)
            await stub.Ls(
                filesystem_pb2.LsRequest(system_name=SYSTEM, path=remote_dir),
                metadata=replica.metadata("alice"),
                timeout=20,
            )
        job_id = await submit(fleet[1], "alice", "true")
        events = await collect(open_watch(fleet[2], "alice", [job_id]))
        assert events[-1].job.status.normalized_state == COMPLETED
        assert time.monotonic() - started < 30
    finally:
        redis_server.start()
    deadline = time.monotonic() + 3 * interval + 5
    while time.monotonic() < deadline:
        health = [await _coordination_health(r) for r in fleet]
        if health == [True] * REPLICAS:
            break
        await asyncio.sleep(0.5)
    assert health == [True] * REPLICAS


async def test_one_replica_at_a_time_sweeps_the_s3_store(fleet: list[LiveService]) -> None:
    stagings = [r.running.runtime.system(SYSTEM).staging for r in fleet]
    assert all(staging is not None for staging in stagings)
    for _ in range(2):  # the same holder keeps its turn
        swept = [await s.sweep_if_ours() for s in stagings if s is not None]
        assert [n is not None for n in swept].count(True) == 1, swept
