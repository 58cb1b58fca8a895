"""Wire fidelity of the filesystem ops: what FirecREST v2's server sends, on the real cluster.

The reference is FirecREST's own code: ``tail --lines=+N`` for a skipped
heading, its pydantic models' JSON types, and its size-limit answers.
Expected contents come from the cluster's own GNU tools, run as the user.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator

import asyncssh
import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

pytestmark = pytest.mark.asyncio

LINES = b"".join(b"line %d\n" % i for i in range(1, 21)) + b"no newline at the end"


@pytest.fixture
async def alice(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with cluster.connect("alice") as conn:
        yield conn


@pytest.fixture
async def workdir(alice: asyncssh.SSHClientConnection) -> AsyncIterator[str]:
    path = f"/home/alice/hpcgate-fidelity-{uuid.uuid4().hex[:10]}"
    await alice.run(shlex.join(["mkdir", "--", path]), check=True)
    try:
        yield path
    finally:
        await alice.run(shlex.join(["rm", "-rf", "--", path]), check=True)


@pytest.fixture
async def rest(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{live.rest_url}/filesystem/{live.system}/ops",
        headers=live.headers("alice"),
        timeout=60,
    ) as client:
        yield client


async def put(conn: asyncssh.SSHClientConnection, path: str, data: bytes) -> None:
    async with conn.start_sftp_client() as sftp, sftp.open(path, "wb") as handle:
        await handle.write(data)


async def gnu_tail(conn: asyncssh.SSHClientConnection, option: str, path: str) -> bytes:
    """What the cluster's ``tail`` prints for FirecREST's command line."""
    result = await conn.run(shlex.join(["tail", option, "--", path]), check=True, encoding=None)
    assert isinstance(result.stdout, bytes)
    return result.stdout


@pytest.mark.parametrize("unit", ["lines", "bytes"])
async def test_tail_skip_heading_starts_at_n_as_tail_plus_n(
    live: LiveService,
    rest: httpx.AsyncClient,
    alice: asyncssh.SSHClientConnection,
    workdir: str,
    unit: str,
) -> None:
    path = f"{workdir}/lines.txt"
    await put(alice, path, LINES)
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    for count in (0, 1, 2, 18, 20, 21, 22, len(LINES), len(LINES) + 1):
        expected = (await gnu_tail(alice, f"--{unit}=+{count}", path)).decode()
        response = await rest.get("/tail", params={"path": path, unit: count, "skipHeading": True})
        assert response.status_code == 200, response.text
        output = response.json()["output"]
        assert output["content"] == expected, (unit, count)
        assert (output["startPosition"], output["endPosition"]) == (count, -1)
        reply = await stub.Tail(
            filesystem_pb2.TailRequest(
                system_name=live.system, path=path, skip_heading=True, **{unit: count}
            ),
            metadata=live.metadata("alice"),
        )
        assert reply.output.content == expected, (unit, count)
