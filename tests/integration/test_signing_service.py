"""User certificates from a signing service: a real HTTP service signing with the cluster's CA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncssh
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster_fixture import Cluster
from conftest import serve_asgi
from hpcgate.server.config import parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh import PoolManager

TOKEN = "signing-secret"


@dataclass
class Signer:
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def signer(cluster: Cluster) -> AsyncIterator[Signer]:
    """A signing service on loopback that signs what the bearer of TOKEN asks for."""
    ca = cluster.ca_key()
    found = Signer("")

    async def sign(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorized"}, 401)
        body = await request.json()
        found.requests.append(body["principal"])
        key = asyncssh.import_public_key(body["public_key"])
        cert = ca.generate_user_certificate(
            key, "signer", principals=[body["principal"]], valid_before=f"+{body['lifetime']}s"
        )
        return JSONResponse({"certificate": cert.export_certificate().decode()})

    server, task, url = await serve_asgi(Starlette(routes=[Route("/sign", sign, methods=["POST"])]))
    found.url = f"{url}/sign"
    yield found
    server.should_exit = True
    await task


def _pools(cluster: Cluster, signer: Signer, token: str) -> PoolManager:
    settings = parse_config(
        {
            "credentials": {"signing_url": signer.url, "signing_token": {"value": token}},
            "systems": [
                {
                    "name": "signed",
                    "ssh": {
                        "host": cluster.ssh.host,
                        "port": cluster.ssh.port,
                        "known_hosts": cluster.ssh.known_hosts,
                    },
                }
            ],
        }
    )
    return PoolManager(settings)


async def test_logins_use_certificates_from_the_signing_service(
    cluster: Cluster, signer: Signer
) -> None:
    pools = _pools(cluster, signer, TOKEN)
    try:
        pool = pools.pool("signed")
        results = await asyncio.gather(*(pool.run(u, ["id", "-un"]) for u in ["alice", "bob"] * 5))
        assert [r.stdout.decode().strip() for r in results] == ["alice", "bob"] * 5
        # One certificate per user, cached for the burst.
        assert sorted(signer.requests) == ["alice", "bob"]
    finally:
        await pools.close()


async def test_a_refusing_signing_service_is_a_clear_error(
    cluster: Cluster, signer: Signer
) -> None:
    pools = _pools(cluster, signer, "wrong-token")
    try:
        with pytest.raises(ServiceError) as caught:
            await pools.pool("signed").run("alice", ["true"])
        assert caught.value.code == ErrorKind.UNAVAILABLE
        assert caught.value.reason == "SSH_SIGNING_FAILED"
    finally:
        await pools.close()
