"""One user's hung scheduler commands do not delay that user's filesystem calls.

slurmctld is SIGSTOPped (it hangs: squeue waits for Slurm's MessageTimeout),
many of alice's ListJobs are sent, and then her ``ls`` must answer while
those calls are still blocked: the scheduler share of her pool
(``pool.max_scheduler_commands``) leaves channels free for the filesystem.
The stop is short and always undone (SIGCONT in ``finally``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from cluster_fixture import Cluster
from conftest import Service, live_settings, start_service
from devkeys import DevIssuer
from faults import cluster_pid, eventually, paused
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

SYSTEM = "isolated"
# 2 connections of 4 channels: 8 channels for alice, 4 of them for the scheduler.
POOL = {"max_connections": 2, "max_channels": 4}
CALLS = 20  # ListJobs, each running squeue and sacct: far more commands than channels


@pytest.fixture
async def isolated(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Service, DevIssuer]]:
    """A service with a small pool; probing rarely, so the health gate stays open."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("isolated") / "jwks.json"
    issuer.write_jwks(jwks)
    ssh = {
        "host": cluster.ssh.host,
        "port": cluster.ssh.port,
        "known_hosts": cluster.ssh.known_hosts,
        "pool": POOL,
    }
    settings = live_settings(
        cluster, jwks, name=SYSTEM, ssh=ssh, probing={"interval": 600, "timeout": 5}
    )
    async for service in start_service(settings):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield service, issuer


async def test_hung_scheduler_leaves_the_users_filesystem_free(
    isolated: tuple[Service, DevIssuer],
) -> None:
    service, issuer = isolated
    auth = [("authorization", f"Bearer {issuer.token('alice')}")]
    jobs = scheduler_pb2_grpc.SchedulerStub(service.channel)
    files = filesystem_pb2_grpc.FilesystemStub(service.channel)
    pool = service.running.runtime.system(SYSTEM).pool
    share = pool.scheduler_share
    assert share.limit == 4  # half of alice's 8 channels

    with paused(cluster_pid("slurmctld")):
        request = scheduler_pb2.ListJobsRequest(system_name=SYSTEM)
        compute = [
            asyncio.ensure_future(jobs.ListJobs(request, metadata=auth)) for _ in range(CALLS)
        ]
        # Her scheduler commands hang: the share is full and the rest queue for it.
        await eventually(lambda: share.held("alice") == share.limit, 20, "scheduler share full")
        # Hidden entries too: a fresh home holds only /etc/skel's dotfiles.
        home = filesystem_pb2.LsRequest(system_name=SYSTEM, path="/home/alice", show_hidden=True)
        listing = await files.Ls(home, metadata=auth)
        blocked = sum(not call.done() for call in compute)
        held = share.held("alice")
        in_use = pool.stats().users["alice"].channels_in_use
    assert listing.output
    assert blocked == CALLS, "ls answered only after compute calls had finished"
    assert held == share.limit, "the scheduler commands were still hanging"
    # The scheduler held no more of her channels than its share (the ls had its own).
    assert in_use <= share.limit

    # Once slurmctld runs again every call ends: answered, or 503 while it hung.
    codes = []
    for call in compute:
        try:
            await call
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
