"""Health checking and pool metrics against the real cluster: failure and recovery.

These tests start their own service (short probing interval, own system
name so metrics labels are theirs) and stop the cluster's sshd, so they
restart it before they finish.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cluster_fixture import CLUSTER_SCRIPT, Cluster
from conftest import Service, live_settings, start_service
from devkeys import DevIssuer
from faults import eventually
from hpcgate.v1 import status_pb2, status_pb2_grpc

INTERVAL = 1.0
SYSTEM = "probed"


async def _service(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, interval: float
) -> AsyncIterator[tuple[Service, DevIssuer]]:
    """A service of its own on the cluster: idle timeout 1 s, probing every ``interval`` s."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("probed") / "jwks.json"
    issuer.write_jwks(jwks)
    ssh = {
        "host": cluster.ssh.host,
        "port": cluster.ssh.port,
        "known_hosts": cluster.ssh.known_hosts,
        "timeouts": {"idle": 1, "connect": 2, "login": 2},
        "pool": {"max_connections": 3, "max_channels": 10},
    }
    settings = live_settings(
        cluster, jwks, name=SYSTEM, ssh=ssh, probing={"interval": interval, "timeout": 2}
    )
    async for service in start_service(settings):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield service, issuer


@pytest.fixture
async def probed(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Service, DevIssuer]]:
    """Probing every INTERVAL seconds."""
    async for found in _service(cluster, tmp_path_factory, INTERVAL):
        yield found


@pytest.fixture
async def quiet(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Service, DevIssuer]]:
    """Probing rarely, so that the probe's own connection idles out."""
    async for found in _service(cluster, tmp_path_factory, 600):
        yield found


def _cluster_pid(part: str) -> int:
    """The pid of one of the cluster's daemons, from ``cluster.py info``."""
    info = json.loads(
        subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), "info"], capture_output=True, check=True
        ).stdout
    )
    return int(info["pids"][part])


def _sshd_processes(cluster: Cluster) -> list[int]:
    listener = _cluster_pid("sshd")
    children = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True)
    return [listener, *(int(pid) for pid in children.stdout.split())]


def _terminate(pids: list[int]) -> None:
    """SIGTERM ``pids`` and wait (bounded) for them to go, so a restart finds their ports free."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _restart_cluster() -> None:
    subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "start"], capture_output=True, check=True)


async def test_sshd_down_fails_fast_then_recovers(
    probed: tuple[Service, DevIssuer], cluster: Cluster
) -> None:
    service, issuer = probed
    checker = service.running.runtime.system(SYSTEM).health
    stub = status_pb2_grpc.StatusStub(service.channel)
    health = health_pb2_grpc.HealthStub(service.channel)
    auth = [("authorization", f"Bearer {issuer.token('alice')}")]
    assert checker.by_type()["ssh"]

    _terminate(_sshd_processes(cluster))
    try:
        await eventually(
            lambda: not checker.by_type().get("ssh", True), 3 * INTERVAL + 2, "ssh unhealthy"
        )
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListNodes(status_pb2.ListNodesRequest(system_name=SYSTEM), metadata=auth)
        fail_fast = time.perf_counter() - started
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unhealthy" in (caught.value.details() or "")
        async with httpx.AsyncClient(base_url=service.rest_url) as client:
            response = await client.get(f"/status/{SYSTEM}/partitions", headers=dict(auth))
        assert response.status_code == 503
        assert response.json()["data"]["reason"] == "SERVICE_UNHEALTHY"
        state = await health.Check(health_pb2.HealthCheckRequest(service=f"{SYSTEM}/ssh"))
        assert state.status == health_pb2.HealthCheckResponse.NOT_SERVING
        print(f"\nfail-fast UNAVAILABLE while sshd is down: {fail_fast * 1000:.1f} ms")
    finally:
        _restart_cluster()

    await eventually(lambda: all(checker.by_type().values()), 3 * INTERVAL + 2, "all healthy again")
    state = await health.Check(health_pb2.HealthCheckRequest(service=f"{SYSTEM}/ssh"))
    assert state.status == health_pb2.HealthCheckResponse.SERVING
    reply = await stub.ListNodes(status_pb2.ListNodesRequest(system_name=SYSTEM), metadata=auth)
    assert reply.nodes


async def test_slurm_down_is_503_through_the_health_gate(
    probed: tuple[Service, DevIssuer],
) -> None:
    service, issuer = probed
    checker = service.running.runtime.system(SYSTEM).health
    auth = {"Authorization": f"Bearer {issuer.token('alice')}"}
    job = {"job": {"script": "#!/bin/bash\ntrue\n", "workingDirectory": "/home/alice"}}
    _terminate([_cluster_pid("slurmctld")])
    try:
        await eventually(
            lambda: not checker.by_type().get("scheduler", True), 3 * INTERVAL + 5, "unhealthy"
        )
        async with httpx.AsyncClient(base_url=service.rest_url, headers=auth) as client:
            submit = await client.post(f"/compute/{SYSTEM}/jobs", json=job)
            jobs = await client.get(f"/compute/{SYSTEM}/jobs")
            files = await client.get(f"/filesystem/{SYSTEM}/ops/ls", params={"path": "/home"})
        assert submit.status_code == 503, submit.text
        assert submit.json()["data"]["reason"] == "SERVICE_UNHEALTHY"
        assert jobs.status_code == 503
        assert files.status_code == 200  # the filesystem does not need the scheduler
    finally:
        _restart_cluster()
    await eventually(lambda: all(checker.by_type().values()), 3 * INTERVAL + 5, "healthy again")


def _gauge(text: str, name: str, system: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("system") == system:
                return float(sample.value)
    return 0.0


async def test_metrics_show_connections_rise_and_fall(quiet: tuple[Service, DevIssuer]) -> None:
    service, issuer = quiet
    stub = status_pb2_grpc.StatusStub(service.channel)
    auth = [("authorization", f"Bearer {issuer.token('bob')}")]
    url = f"http://127.0.0.1:{service.running.metrics_port}/metrics"

    async def scrape() -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).text

    # Let the probes' own connection (the service account's) idle out first.
    pool = service.running.runtime.system(SYSTEM).pool
    await eventually(lambda: pool.stats().total.connections == 0, 10, "pool idle before the load")
    request = status_pb2.GetUserInfoRequest(system_name=SYSTEM)
    load = {asyncio.ensure_future(stub.GetUserInfo(request, metadata=auth)) for _ in range(60)}
    peak = 0.0
    while load:
        done, load = await asyncio.wait(load, timeout=0.05)
        peak = max(peak, _gauge(await scrape(), "hpcgate_ssh_connections", SYSTEM))
        for finished in done:
            finished.result()
    assert peak >= 2, "60 concurrent userinfo calls (3 commands each) need more than one connection"
    assert peak <= 3  # never more than max_connections
    text = await scrape()
    assert 'hpcgate_rpc_total{code="OK",method="/hpcgate.v1.Status/GetUserInfo"}' in text
    # After the idle timeout the connections close, and the gauge says so.
    await eventually(lambda: pool.stats().total.connections == 0, 10, "idle connections closed")
    assert _gauge(await scrape(), "hpcgate_ssh_connections", SYSTEM) == 0


async def test_graceful_shutdown_drains_then_closes_pools(
    quiet: tuple[Service, DevIssuer],
) -> None:
    service, issuer = quiet
    stub = status_pb2_grpc.StatusStub(service.channel)
    auth = [("authorization", f"Bearer {issuer.token('alice')}")]
    request = status_pb2.GetUserInfoRequest(system_name=SYSTEM)
    in_flight = [asyncio.ensure_future(stub.GetUserInfo(request, metadata=auth)) for _ in range(20)]
    pool = service.running.runtime.system(SYSTEM).pool
    await eventually(lambda: pool.stats().total.channels_in_use > 0, 10, "calls in flight")

    await service.running.stop(grace=10)

    replies = await asyncio.gather(*in_flight)  # every call in flight finished normally
    assert all(reply.user.name == "alice" for reply in replies)
    assert pool.stats().total.connections == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUserInfo(request, metadata=auth, timeout=2)
    assert caught.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
