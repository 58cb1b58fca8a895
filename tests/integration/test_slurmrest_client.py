"""The slurm-rest client against the cluster's real slurmrestd (Slurm 22.05, v0.0.38)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.slurmrest.client import SlurmRestClient
from hpcgate.server.scheduler.slurmrest.tokens import CommandTokens, TokenMinter

if TYPE_CHECKING:
    from cluster_fixture import Cluster

pytestmark = pytest.mark.asyncio


async def _client(cluster: Cluster, url: str | None = None) -> SlurmRestClient:
    rest = cluster.raw["slurmrestd"]
    key = await asyncio.to_thread(Path(rest["jwt_key"]).read_bytes)
    return SlurmRestClient(url or rest["url"], TokenMinter(key, 300).token, timeout=10)


async def test_detects_the_version_and_pings_as_the_user(cluster: Cluster) -> None:
    client = await _client(cluster)
    try:
        body = await client.request("GET", "ping", "alice")
        assert client.version == cluster.raw["slurmrestd"]["api_version"]
        assert [p["ping"] for p in body["pings"]] == ["UP"]
    finally:
        await client.close()


async def test_slurmrestd_down_is_unavailable_with_its_reason(cluster: Cluster) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await _client(cluster, f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ServiceError) as caught:
            await client.request("GET", "ping", "alice")
        assert (caught.value.code, caught.value.reason) == (
            ErrorKind.UNAVAILABLE,
            "SLURMRESTD_UNAVAILABLE",
        )
    finally:
        await client.close()


async def test_tokens_from_the_sites_command(cluster: Cluster) -> None:
    """``token_command``: ``scontrol token`` (run as root, as CI does) mints each user's."""
    conf = cluster.raw["slurm"]["conf"]
    tokens = CommandTokens(
        ["env", f"SLURM_CONF={conf}", "scontrol", "token", "username={user}", "lifespan=300"],
        300,
    )
    client = SlurmRestClient(cluster.raw["slurmrestd"]["url"], tokens.token, timeout=10)
    try:
        body = await client.request("GET", "jobs", "bob")
        assert body["errors"] == []
        # Cached: a second request as bob runs no second command.
        first = await tokens.token("bob")
        assert await tokens.token("bob") == first
        assert await tokens.token("alice") != first
    finally:
        await client.close()
