"""``ls`` of a directory of more than one block: one confined ``find`` step, the SFTP answer.

A big directory is listed by ``find -printf`` on the cluster (listing.py,
findlisting.py), a small one and a recursive listing over SFTP. The two
must agree entry for entry on a big directory full of adversarial names
(newlines, tabs, a name that looks like an ``ls -l`` line, bytes that are
not UTF-8, hidden names, links inside, outside and broken), over gRPC and
REST; a big directory reached through a link that leads outside is refused
naming the field, and an unreadable one fails in the cluster's words.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio

FILLER = 400  # entries of 20 bytes each on ext4: several blocks
MANY = 4500  # more than two LsStream replies' worth

_ARRANGE = r"""
cd -- "$1" && mkdir big && cd big &&
seq -f 'filler-%04.0f' 1 "$2" | xargs touch -- &&
touch -- "$(printf 'new\nline')" "$(printf 'tab\there')" '-rw-r--r-- 1 a b 0 0 x' \
    "$(printf 'caf\351')" .hidden &&
mkdir sub .hidden-dir && echo 12345 > sized && chmod 640 sized &&
ln -s sized inside && ln -s /etc/passwd outside && ln -s nowhere broken &&
ln -s "$(printf 'target\nwith newline')" odd-link &&
cd .. && mkdir -p deep/closed && touch deep/file && chmod 000 deep/closed &&
ln -s /etc big-outside && mkdir many && (cd many && seq -f 'm-%05.0f' 1 "$3" | xargs touch --) &&
mkdir shut && cd shut &&
seq -f 'x-%04.0f' 1 "$2" | xargs touch -- && cd .. && chmod 000 shut
"""


@pytest.fixture
async def tree(cluster: Cluster) -> AsyncIterator[str]:
    async with cluster.connect("alice") as conn:
        path = f"/home/alice/paths-ls-big-{uuid.uuid4().hex[:10]}"
        await conn.run(shlex.join(["mkdir", "--", path]), check=True)
        try:
            argv = ["sh", "-c", _ARRANGE, "sh", path, str(FILLER), str(MANY)]
            await conn.run(shlex.join(argv), check=True)
            yield path
        finally:
            await conn.run(shlex.join(["chmod", "-R", "u+rwx", "--", path]))
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)


def _ls(**params: str | bool) -> filesystem_pb2.LsRequest:
    return filesystem_pb2.LsRequest(system_name=SYSTEM, **params)  # type: ignore[arg-type]


def _streamed(request: filesystem_pb2.LsRequest) -> filesystem_pb2.LsStreamRequest:
    return filesystem_pb2.LsStreamRequest.FromString(request.SerializeToString())


@pytest.mark.parametrize("show_hidden", [False, True])
@pytest.mark.parametrize("numeric_uid", [False, True])
async def test_find_and_sftp_list_a_big_directory_alike(
    live: LiveService, tree: str, show_hidden: bool, numeric_uid: bool
) -> None:
    flags = {"show_hidden": show_hidden, "numeric_uid": numeric_uid}
    async with grpc.aio.insecure_channel(live.grpc_target) as channel:
        stub = filesystem_pb2_grpc.FilesystemStub(channel)
        meta = live.metadata("alice")
        by_find = await stub.Ls(_ls(path=f"{tree}/big", **flags), metadata=meta)
        # Recursive: over SFTP. The subdirectories' (empty or hidden) contents add nothing.
        by_sftp = await stub.Ls(_ls(path=f"{tree}/big", recursive=True, **flags), metadata=meta)
    assert list(by_find.output) == list(by_sftp.output)
    names = [entry.name for entry in by_find.output]
    assert len(names) == FILLER + 10 + (2 if show_hidden else 0)
    found = {entry.name: entry for entry in by_find.output}
    assert {"new\nline", "tab\there", "-rw-r--r-- 1 a b 0 0 x", "caf\\xe9"} <= set(found)
    assert (".hidden" in found) is show_hidden
    assert found["outside"].type == "l" and found["outside"].link_target == "/etc/passwd"
    assert found["odd-link"].link_target == "target\nwith newline"
    assert found["broken"].link_target == "nowhere"
    assert (found["sized"].size, found["sized"].permissions) == (6, "rw-r-----")
    assert found["sub"].type == "d" and not found["sub"].HasField("link_target")
    assert found["sized"].user.isdigit() if numeric_uid else found["sized"].user == "alice"


async def test_rest_lists_a_big_directory_with_firecrests_fields(
    live: LiveService, tree: str
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.get(f"/filesystem/{SYSTEM}/ops/ls", params={"path": f"{tree}/big"})
    assert reply.status_code == 200, reply.text
    output = reply.json()["output"]
    assert len(output) == FILLER + 10
    entry = next(e for e in output if e["name"] == "inside")
    assert set(entry) == {
        "name",
        "type",
        "linkTarget",
        "user",
        "group",
        "permissions",
        "lastModified",
        "size",
    }
    assert (entry["type"], entry["linkTarget"], entry["user"]) == ("l", "sized", "alice")
    assert isinstance(entry["size"], str) and entry["lastModified"].endswith("Z")
    assert next(e for e in output if e["name"] == "sized")["linkTarget"] is None


async def test_a_big_directory_through_a_link_leading_outside_is_refused(
    live: LiveService, tree: str
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/ls", params={"path": f"{tree}/big-outside"}
        )
    assert reply.status_code == 400, reply.text
    assert reply.json()["data"]["reason"] == "PATH_OUTSIDE_FILESYSTEMS"
    assert "path" in reply.json()["message"]


async def test_an_unreadable_big_directory_fails_in_the_clusters_words(
    live: LiveService, tree: str
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.get(f"/filesystem/{SYSTEM}/ops/ls", params={"path": f"{tree}/shut"})
    assert reply.status_code == 403, reply.text
    assert "Permission denied" in reply.json()["message"]


async def test_ls_stream_gives_ls_entries_in_replies_and_the_unreadable_last(
    live: LiveService, tree: str
) -> None:
    async with grpc.aio.insecure_channel(live.grpc_target) as channel:
        stub = filesystem_pb2_grpc.FilesystemStub(channel)
        meta = live.metadata("alice")
        for request in (_ls(path=f"{tree}/many"), _ls(path=f"{tree}/deep", recursive=True)):
            whole = await stub.Ls(request, metadata=meta)
            replies = [reply async for reply in stub.LsStream(_streamed(request), metadata=meta)]
            assert [e for r in replies for e in r.output] == list(whole.output)
            assert list(replies[-1].unreadable) == list(whole.unreadable)
            assert not any(r.unreadable for r in replies[:-1])
        assert len(replies) == 1 and [u.name for u in whole.unreadable] == ["closed"]
        streamed = _streamed(_ls(path=f"{tree}/many"))
        many = [reply async for reply in stub.LsStream(streamed, metadata=meta)]
        assert [len(r.output) for r in many] == [2000, 2000, MANY - 4000]
        streamed = _streamed(_ls(path=f"{tree}/big/sub"))
        empty = [r async for r in stub.LsStream(streamed, metadata=meta)]
        assert len(empty) == 1 and not empty[0].output
