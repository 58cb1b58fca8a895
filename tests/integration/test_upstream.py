"""The edge's channel to several servers (``hpcgate.edge.upstream``).

Two real servers for the loopback cluster's system, but with its SSH port
pointing where nothing listens, and one edge given both addresses. The
edge connects to both (``round_robin``; ``pick_first`` would hold one
connection) and balances over them; with one server stopped every call
still succeeds; and a server's own UNAVAILABLE (SSH unreachable) carries
the no-retry pushback, so the edge asks once, not ``RETRY_ATTEMPTS`` times.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
import pytest

from cluster_fixture import Cluster
from conftest import free_port, live_settings, serve_asgi
from devkeys import DevIssuer
from hpcgate.edge import create_app
from hpcgate.server.app import Running, start
from hpcgate.server.rpc.errors import NO_RETRY
from hpcgate.server.rpc.metrics import RPC_METRICS
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

LS = "/hpcgate.v1.Filesystem/Ls"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevIssuer, Path]:
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("upstream") / "jwks.json"
    issuer.write_jwks(jwks)
    return issuer, jwks


@pytest.fixture
async def servers(cluster: Cluster, issuer: tuple[DevIssuer, Path]) -> AsyncIterator[list[Running]]:
    base = live_settings(cluster, issuer[1])
    dead_ssh = base.systems[0].ssh.model_copy(update={"port": free_port()})
    settings = base.model_copy(
        update={
            "server": base.server.model_copy(update={"metrics_listen": None}),
            "systems": [base.systems[0].model_copy(update={"ssh": dead_ssh})],
        }
    )
    running = [await start(settings, "127.0.0.1:0") for _ in range(2)]
    try:
        yield running
    finally:
        for server in running:
            await server.stop(grace=0)


@pytest.fixture
async def edge_url(servers: list[Running]) -> AsyncIterator[str]:
    target = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    server, task, url = await serve_asgi(create_app(target))
    try:
        yield url
    finally:
        server.should_exit = True
        await task


def _connections_to(port: int) -> int:
    """This process's established TCP connections whose remote end is ``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if found:
            inodes.add(found.group(1))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            count += remote == port and fields[3] == "01" and fields[9] in inodes
    return count


async def test_the_edge_balances_over_every_server_and_survives_one_stopping(
    servers: list[Running], edge_url: str, issuer: tuple[DevIssuer, Path]
) -> None:
    headers = {"Authorization": f"Bearer {issuer[0].token('alice')}"}
    async with httpx.AsyncClient(base_url=edge_url, headers=headers) as http:
        codes = [(await http.get("/status/systems")).status_code for _ in range(10)]
        assert codes == [200] * 10
        # round_robin holds a connection to every address; pick_first would hold one.
        assert all(_connections_to(s.port) >= 1 for s in servers)
        await servers[0].stop(grace=0)
        codes = [(await http.get("/status/systems")).status_code for _ in range(20)]
    assert codes == [200] * 20


async def test_a_backend_outage_is_asked_once_not_retried(
    servers: list[Running], edge_url: str, issuer: tuple[DevIssuer, Path]
) -> None:
    token = issuer[0].token("alice")
    before = RPC_METRICS.method(LS).codes.get("UNAVAILABLE", 0)
    async with httpx.AsyncClient(
        base_url=edge_url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        reply = await http.get(f"/filesystem/{SYSTEM}/ops/ls", params={"path": "/home/alice"})
    assert reply.status_code == 503, reply.text
    assert RPC_METRICS.method(LS).codes.get("UNAVAILABLE", 0) == before + 1

    # What tells the edge's retry policy so: the server's trailing metadata.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers[1].port}") as channel:
        stub = filesystem_pb2_grpc.FilesystemStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            request = filesystem_pb2.LsRequest(system_name=SYSTEM, path="/home/alice")
            await stub.Ls(request, metadata=[("authorization", f"Bearer {token}")], timeout=30)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    # (aio gives plain (key, value) pairs; grpc-stubs types them as _Metadatum.)
    trailing = [tuple(cast(Any, item)) for item in refused.value.trailing_metadata() or ()]
    assert NO_RETRY in trailing
