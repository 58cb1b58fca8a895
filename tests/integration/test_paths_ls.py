"""A recursive listing lists what it can and names what it could not read (issue 14, item 14).

As ``ls -R`` does: an unreadable subdirectory is still an entry of its
parent, its contents are missing, and the listing goes on; hpcgate names it
under ``unreadable`` instead of failing the whole call.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio

_ARRANGE = """
cd -- "$1" &&
mkdir -p open/deeper shut open/deeper/shut-too &&
touch top open/a open/deeper/b shut/hidden open/deeper/shut-too/hidden-too &&
chmod 000 shut open/deeper/shut-too
"""


@pytest.fixture
async def tree(cluster: Cluster) -> AsyncIterator[str]:
    async with cluster.connect("alice") as conn:
        path = f"/home/alice/paths-ls-{uuid.uuid4().hex[:10]}"
        await conn.run(shlex.join(["mkdir", "--", path]), check=True)
        try:
            await conn.run(shlex.join(["sh", "-c", _ARRANGE, "sh", path]), check=True)
            yield path
        finally:
            await conn.run(shlex.join(["chmod", "-R", "u+rwx", "--", path]))
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)


async def test_recursive_ls_lists_what_it_can_and_names_the_rest(
    live: LiveService, tree: str
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/ls", params={"path": tree, "recursive": "true"}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    names = [entry["name"] for entry in body["output"]]
    assert sorted(names) == sorted(
        [
            "open",
            "shut",
            "top",
            "open/a",
            "open/deeper",
            "open/deeper/b",
            "open/deeper/shut-too",
        ]
    )
    assert body["unreadable"] == [
        {"name": "open/deeper/shut-too", "message": "open/deeper/shut-too: Permission denied"},
        {"name": "shut", "message": "shut: Permission denied"},
    ]


async def test_an_unreadable_listed_directory_itself_still_fails(
    live: LiveService, tree: str
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/ls", params={"path": f"{tree}/shut", "recursive": "true"}
        )
    assert reply.status_code == 403, reply.text
    assert "Permission denied" in reply.json()["message"]


async def test_a_recursive_ls_over_grpc_names_the_unreadable(live: LiveService, tree: str) -> None:
    from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    request = filesystem_pb2.LsRequest(system_name=SYSTEM, path=tree, recursive=True)
    reply = await stub.Ls(request, metadata=live.metadata("alice"))
    assert [u.name for u in reply.unreadable] == ["open/deeper/shut-too", "shut"]
    # Without recursion nothing below is read, so nothing is unreadable.
    flat = await stub.Ls(
        filesystem_pb2.LsRequest(system_name=SYSTEM, path=tree), metadata=live.metadata("alice")
    )
    assert list(flat.unreadable) == []
    assert [entry.name for entry in flat.output] == ["open", "shut", "top"]
