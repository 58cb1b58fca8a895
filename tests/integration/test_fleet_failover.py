"""A replica killed with SIGKILL: its pollers move, and its watchers reconnect without loss.

Two server replicas run as processes of their own (``python -m
hpcgate.server``) on one Redis. The one polling alice's jobs is killed in
the middle of a job's life: the other replica's poll counter (its metrics)
must start moving within the lease time, the watch it serves must go on
seeing every transition, and the killed replica's watcher, reconnecting
to the survivor, must see the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from integration.test_watch import COMPLETED, assert_lifecycle_order, collect

from cluster_fixture import Cluster
from conftest import free_port, live_settings
from devkeys import DevIssuer
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc
from localsite import SYSTEM
from redisserver import RedisServer

LEASE_TTL = 3.0


class Replica:
    """One server process, its channel and its metrics endpoint."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        settings = yaml.safe_load(config.read_text())
        settings["server"]["metrics_listen"] = f"127.0.0.1:{self.metrics_port}"
        own = config.with_name(f"server-{self.port}.yaml")
        own.write_text(yaml.safe_dump(settings))
        argv = [sys.executable, "-m", "hpcgate.server", "--config", str(own)]
        argv += ["--listen", f"127.0.0.1:{self.port}"]
        log = (logs / f"server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    async def polls(self) -> float:
        """The replica's count of job polls (its Prometheus counter)."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/")).text
        found = re.search(r'^hpcgate_scheduler_polls_total\{system="[^"]+"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("failover-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    return DevIssuer.generate()


@pytest.fixture
async def replicas(
    cluster: Cluster,
    redis_server: RedisServer,
    issuer: DevIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[list[Replica]]:
    workdir = tmp_path_factory.mktemp("failover")
    jwks = workdir / "jwks.json"
    issuer.write_jwks(jwks)
    config: dict[str, Any] = live_settings(cluster, jwks).model_dump(mode="json")
    config["coordination"] = {
        "backend": "redis",
        "url": redis_server.url,
        "prefix": f"failover{os.getpid()}:",
        "lease_ttl": LEASE_TTL,
    }
    path = workdir / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    fleet = [Replica(path, workdir) for _ in range(2)]
    try:
        for replica in fleet:
            await asyncio.wait_for(replica.channel.channel_ready(), 60)
        yield fleet
    finally:
        for replica in fleet:
            await replica.channel.close(None)
            replica.stop()


async def test_killed_holder_hands_over_within_the_lease_and_no_transition_is_lost(
    replicas: list[Replica], issuer: DevIssuer
) -> None:
    metadata = [("authorization", f"Bearer {issuer.token('alice')}")]
    first, second = replicas
    description = scheduler_pb2.JobDescriptionModel(
        working_directory="/scratch/alice", script="#!/bin/bash\nsleep 25\n"
    )
    submitted = await first.stub.SubmitJob(
        scheduler_pb2.SubmitJobRequest(system_name=SYSTEM, job=description), metadata=metadata
    )
    job_id = int(submitted.job_id)
    watch = scheduler_pb2.WatchJobsRequest(system_name=SYSTEM, job_ids=[job_id], send_initial=True)
    try:
        watches = [r.stub.WatchJobs(watch, metadata=metadata) for r in replicas]
        await asyncio.gather(*(w.initial_metadata() for w in watches))
        collecting = [asyncio.ensure_future(collect(w)) for w in watches]
        await asyncio.sleep(LEASE_TTL)  # the job starts; the holder polls
        # The poll interval backs off while nothing changes: watch a while.
        counts = [await r.polls() for r in replicas]
        for _ in range(100):
            moving = [await r.polls() > c for r, c in zip(replicas, counts, strict=True)]
            if any(moving):
                break
            await asyncio.sleep(0.1)
        assert moving.count(True) == 1, moving  # one poller, fleet-wide
        holder, survivor = (first, second) if moving[0] else (second, first)
        held = collecting[replicas.index(holder)]
        kept = collecting[replicas.index(survivor)]

        assert not kept.done() and not held.done()  # the job's end is still to come
        holder.kill()
        killed = time.monotonic()
        before = await survivor.polls()
        while await survivor.polls() == before:
            assert time.monotonic() - killed < LEASE_TTL * 1.25 + 2, "no takeover"
            await asyncio.sleep(0.1)
        took = time.monotonic() - killed
        print(f"\nthe survivor polled {took:.1f} s after the holder's SIGKILL")

        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await held
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        # The killed replica's watcher reconnects to the survivor ...
        again = survivor.stub.WatchJobs(watch, metadata=metadata)
        resumed = await collect(again)
        events = await kept
    finally:
        await cancel_quietly_on(survivor_of(replicas), job_id, metadata)
    # ... and both see the job to its end, every transition in order.
    for seen in (events, resumed):
        assert seen[-1].job.status.normalized_state == COMPLETED
        assert_lifecycle_order(seen)
    # The end came after the kill: the survivor saw a transition its new poller found.
    assert events[0].job.status.normalized_state != COMPLETED


def survivor_of(replicas: list[Replica]) -> Replica:
    """A replica still running (the first if both are)."""
    return next((r for r in replicas if r.process.poll() is None), replicas[0])


async def cancel_quietly_on(replica: Replica, job_id: int, metadata: Any) -> None:
    """Cancel the test's job if it still runs; a job already ended is no error."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        await replica.stub.CancelJob(
            scheduler_pb2.CancelJobRequest(system_name=SYSTEM, job_id=job_id),
            metadata=metadata,
            timeout=30,
        )
