"""Graceful shutdown of both processes, with real SIGTERMs to real subprocesses.

A server (``python -m hpcgate.server``) and an edge (``python -m
hpcgate.edge``) in front of it run on the loopback cluster. While a job
runs, a unary call (AttachJob running ``sleep`` inside the job, so it is
surely in flight) and a watch stream are open when the signal comes: the
unary call must finish, the stream must end cleanly (SSE ``event: end``
with a reason on REST, UNAVAILABLE with a reason on gRPC), and the process
must exit within its grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from integration.test_edge_hardening import EdgeProcess, start_edge, stop_edge
from integration.test_scheduler import cancel_quietly, submit

from cluster_fixture import Cluster
from conftest import LiveService, free_port
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc
from localsite import local_config

GRACE = 8.0
ATTACH_SECONDS = 3


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    target: str


def _start_server(config: Path) -> ServerProcess:
    target = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "hpcgate.server", "--config", str(config), "--listen", target]
    process = subprocess.Popen(argv)
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited"
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return ServerProcess(process, target)
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture
def server(cluster: Cluster, live: LiveService, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process trusting the live service's token issuer."""
    jwks = tmp_path / "jwks.json"
    live.issuer.write_jwks(jwks)
    config = local_config(cluster.raw, jwks)
    config["server"] = {"shutdown_grace": GRACE, "metrics_listen": None}
    path = tmp_path / "hpcgate.yaml"
    path.write_text(yaml.safe_dump(config))
    running = _start_server(path)
    try:
        yield running
    finally:
        _stop(running.process)


@pytest.fixture
async def running_job(live: LiveService) -> AsyncIterator[int]:
    """A job of alice's that runs (long enough for every test here)."""
    job_id = await submit(live, "alice", "sleep 300")
    stub = scheduler_pb2_grpc.SchedulerStub(live.channel)
    try:
        async with asyncio.timeout(60):
            while True:
                reply = await stub.GetJob(
                    scheduler_pb2.GetJobRequest(system_name=live.system, job_id=job_id),
                    metadata=live.metadata("alice"),
                )
                if reply.jobs and reply.jobs[0].status.state == "RUNNING":
                    break
                await asyncio.sleep(0.5)
        yield job_id
    finally:
        await cancel_quietly(live, "alice", job_id)


async def _exit_status(process: subprocess.Popen[bytes]) -> int:
    """The process's exit status; fails if it is still up well after its grace."""
    return await asyncio.to_thread(process.wait, GRACE + 15)


async def test_edge_sigterm_ends_streams_finishes_calls_and_exits(
    live: LiveService, server: ServerProcess, running_job: int
) -> None:
    edge: EdgeProcess = start_edge(server.target, "--shutdown-grace", str(GRACE))
    try:
        headers = live.headers("alice")
        async with httpx.AsyncClient(base_url=edge.url, headers=headers, timeout=60) as client:
            attach = asyncio.create_task(
                client.put(
                    f"/compute/cluster/jobs/{running_job}/attach",
                    json={"command": f"sleep {ATTACH_SECONDS}"},
                )
            )
            watch_url = "/compute/cluster/jobs/watch"
            async with (
                client.stream("GET", watch_url) as sse,
                client.stream("GET", watch_url, headers={"Accept": "application/x-ndjson"}) as nd,
            ):
                assert sse.status_code == 200 and nd.status_code == 200
                await asyncio.sleep(1)  # the attach is under way on the cluster
                edge.process.send_signal(signal.SIGTERM)
                sse_lines = [line async for line in sse.aiter_lines() if line]
                nd_lines = [line async for line in nd.aiter_lines() if line]
            attached = await attach
        status = await _exit_status(edge.process)
    finally:
        stop_edge(edge)
    assert attached.status_code == 204, attached.text
    assert sse_lines[-2] == "event: end"
    end = json.loads(sse_lines[-1].removeprefix("data: "))
    assert end["data"]["reason"] == "SHUTTING_DOWN"
    last = json.loads(nd_lines[-1])
    assert last["event"] == "end" and last["data"]["reason"] == "SHUTTING_DOWN"
    assert status in (0, -signal.SIGTERM)


async def test_server_sigterm_ends_watches_finishes_calls_and_exits(
    live: LiveService, server: ServerProcess, running_job: int, cluster: Cluster
) -> None:
    marker = f"/home/alice/.attach-{running_job}"
    metadata = live.metadata("alice")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        watch = stub.WatchJobs(
            scheduler_pb2.WatchJobsRequest(system_name=live.system), metadata=metadata
        )
        await watch.initial_metadata()
        command = f"sleep {ATTACH_SECONDS} && touch {shlex.quote(marker)}"
        attach = asyncio.ensure_future(
            stub.AttachJob(
                scheduler_pb2.AttachJobRequest(
                    system_name=live.system, job_id=running_job, command=command
                ),
                metadata=metadata,
            )
        )
        await asyncio.sleep(1)  # the attach is under way on the cluster
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in watch:
                pass
        await attach  # finished, not cut
    status = await _exit_status(server.process)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (ended.value.details() or "")
    assert status == 0
    async with cluster.connect("alice") as conn:
        done = await conn.run(f"test -e {shlex.quote(marker)} && rm -f {shlex.quote(marker)}")
    assert done.exit_status == 0, "the attached command did not run to its end"
