"""Stale upload temporaries are swept, as each connected user, and nothing else is.

A service with a one-minute age bound and a one-second interval; files are
arranged over alice's and bob's own logins with old or fresh mtimes.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator

import asyncssh
import pytest

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio

STALE = ".data.bin.hpcgate-0123456789ab.part"  # hpcgate's own pattern
FRESH = ".other.hpcgate-abcdef012345.part"  # the same, but written just now
NOT_OURS = [".data.bin.hpcgate-xyz.part", "notes.part", "data.hpcgate-0123456789ab.part"]
_ARRANGE = """
cd -- "$1" || exit 1
shift
for name do printf x > "$name"; touch -d '2 hours ago' -- "$name"; done
printf x > .other.hpcgate-abcdef012345.part
"""


@pytest.fixture(scope="module")
async def sweeping(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("sweep") / "jwks.json"
    issuer.write_jwks(jwks)
    limits = {"part_max_age": 60, "part_sweep_interval": 1}
    settings = live_settings(cluster, jwks, data_operation=limits)
    async for service in start_service(settings):
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


async def _arrange(conn: asyncssh.SSHClientConnection, directory: str) -> None:
    await conn.run(shlex.join(["mkdir", "-p", "--", directory]), check=True)
    names = [STALE, *NOT_OURS]
    await conn.run(shlex.join(["sh", "-c", _ARRANGE, "sh", directory, *names]), check=True)


async def _names(conn: asyncssh.SSHClientConnection, directory: str) -> list[str]:
    result = await conn.run(shlex.join(["ls", "-A", "--", directory]), check=True)
    return sorted(str(result.stdout).splitlines())


async def _touch_service(live: LiveService, user: str, path: str) -> None:
    """One call as ``user``: it opens the user's pooled connection."""
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    request = filesystem_pb2.LsRequest(system_name=SYSTEM, path=path)
    await stub.Ls(request, metadata=live.metadata(user), timeout=30)


async def _until_gone(conn: asyncssh.SSHClientConnection, directory: str) -> list[str]:
    for _ in range(300):  # the sweeper looks every second; give it a generous while
        names = await _names(conn, directory)
        if STALE not in names:
            return names
        await asyncio.sleep(0.1)
    return await _names(conn, directory)


async def test_each_connected_users_stale_parts_are_swept_and_only_those(
    sweeping: LiveService, cluster: Cluster
) -> None:
    tag = uuid.uuid4().hex[:10]
    mine, bobs = f"/home/alice/sweep-{tag}/deep/er", f"/home/bob/sweep-{tag}"
    async with cluster.connect("alice") as alice, cluster.connect("bob") as bob:
        try:
            await _arrange(alice, mine)
            await _arrange(bob, bobs)
            await _touch_service(sweeping, "alice", "/home/alice")
            left = await _until_gone(alice, mine)
            assert left == sorted([FRESH, *NOT_OURS])
            # bob has not called: his files are his, and nobody swept them.
            assert STALE in await _names(bob, bobs)
            await _touch_service(sweeping, "bob", "/home/bob")
            assert await _until_gone(bob, bobs) == sorted([FRESH, *NOT_OURS])
        finally:
            await alice.run(shlex.join(["rm", "-rf", "--", f"/home/alice/sweep-{tag}"]))
            await bob.run(shlex.join(["rm", "-rf", "--", bobs]))
