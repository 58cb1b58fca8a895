"""Concurrent `ops/download` requests of one caller, gathered by the edge into one call.

The session's real server and edge (:mod:`hpcgate.edge.gather`): requests
made together must be answered exactly as each made alone, errors included,
with fewer gRPC calls; a caller's requests never ride with another token's.
How the server was called is read from its RPC tallies (it runs in this
process).
"""

from __future__ import annotations

import asyncio
import http.client
import shlex
import socket
from urllib.parse import urlencode, urlsplit

from cluster_fixture import Cluster
from conftest import LiveService
from devkeys import DevIssuer
from hpcgate.server.config import DataOperationConfig
from hpcgate.server.rpc.metrics import RPC_METRICS
from hpcgate.server.servicers.filesystem_streams import REPLY_BYTES
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

DOWNLOAD = "/hpcgate.v1.Filesystem/Download"
DOWNLOAD_MANY = "/hpcgate.v1.Filesystem/DownloadMany"
ROUTE = f"/filesystem/{SYSTEM}/ops/download"
LIMIT = DataOperationConfig().max_ops_file_size
Answer = tuple[int, str, str, str, bytes]


def _calls(method: str) -> int:
    return sum(RPC_METRICS.method(method).codes.values())


async def _files(cluster: Cluster, directory: str) -> dict[str, bytes]:
    """Files of alice's that a download answers in every way: bytes and each error."""
    contents = {
        f"{directory}/plain": b"plain\n",
        f"{directory}/empty": b"",
        f"{directory}/it's $(odd) name": b"odd name",
        f"{directory}/too-big": b"x" * (LIMIT + 1),
        f"{directory}/secret": b"nobody may read this",
        **{f"{directory}/n{i}": f"file {i}\n".encode() * (i + 1) for i in range(20)},
    }
    async with cluster.connect("alice") as conn:
        async with conn.start_sftp_client() as sftp:
            for path, data in contents.items():
                async with sftp.open(path, "wb") as file:
                    await file.write(data)
            await sftp.chmod(f"{directory}/secret", 0)
            await sftp.mkdir(f"{directory}/subdir")
        await conn.run(shlex.join(["mkfifo", "--", f"{directory}/fifo"]), check=True)
    return contents


def _request(token: str, path: str) -> bytes:
    query = urlencode({"path": path})
    return (
        f"GET {ROUTE}?{query} HTTP/1.1\r\nHost: edge\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> Answer:
    with sock:
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        body = reply.read()
        return (
            reply.status,
            reply.getheader("content-type", ""),
            reply.getheader("content-disposition", ""),
            reply.getheader("F7T-AuthUsername", ""),
            body,
        )


async def _together(live: LiveService, asked: list[tuple[str, str]]) -> list[Answer]:
    """``asked`` (token, path) requests that reach the edge in one turn of its loop.

    Each on a connection of its own, opened first (the edge accepts them
    while this test waits); then every request is written from the loop's
    own thread without yielding, so the edge reads them all in one turn.
    """
    address = urlsplit(live.rest_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80

    def connect() -> list[socket.socket]:
        return [socket.create_connection((host, port), timeout=60) for _ in asked]

    sockets = await asyncio.to_thread(connect)
    await asyncio.sleep(0.3)  # the edge accepts every connection
    for sock, (token, path) in zip(sockets, asked, strict=True):
        sock.sendall(_request(token, path))
    return list(await asyncio.gather(*(asyncio.to_thread(_answer, s) for s in sockets)))


async def _alone(live: LiveService, asked: list[tuple[str, str]]) -> list[Answer]:
    """The same requests, one after another."""
    return [(await _together(live, [one]))[0] for one in asked]


async def test_downloads_made_together_answer_as_each_made_alone(
    live: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    contents = await _files(cluster, remote_dir)
    names = ["missing", "subdir", "fifo", "../../etc/shadow", ""]
    paths = [*contents, *(f"{remote_dir}/{n}" for n in names)]
    asked = [(live.token("alice"), p) for p in paths]
    before = (_calls(DOWNLOAD), _calls(DOWNLOAD_MANY))
    alone = await _alone(live, asked)
    assert (_calls(DOWNLOAD), _calls(DOWNLOAD_MANY)) == (before[0] + len(paths), before[1])

    before = (_calls(DOWNLOAD), _calls(DOWNLOAD_MANY))
    together = await _together(live, asked * 3)
    assert together == alone * 3
    # Each request of a loop turn rode one call (the kernel may hand the edge
    # the requests in more than one turn): no call of its own, a few in all.
    assert _calls(DOWNLOAD) == before[0]
    assert 1 <= _calls(DOWNLOAD_MANY) - before[1] <= 10

    answers = dict(zip(paths, alone, strict=True))
    for path, data in contents.items():
        if not path.endswith(("/secret", "/too-big")):
            assert answers[path][0] == 200 and answers[path][4] == data, path
            assert answers[path][3] == "alice"
    assert answers[f"{remote_dir}/secret"][0] == 403
    assert answers[f"{remote_dir}/too-big"][0] == 413
    assert answers[f"{remote_dir}/missing"][0] == 404
    assert answers[f"{remote_dir}/fifo"][0] == 400
    assert all(a[3] == "alice" for a in alone)  # errors too name the caller


async def test_callers_are_never_gathered_together(
    live: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["chmod", "700", remote_dir]), check=True)
        async with conn.start_sftp_client() as sftp, sftp.open(f"{remote_dir}/a", "wb") as file:
            await file.write(b"alice's own")
    path = f"{remote_dir}/a"
    alice, bob = live.token("alice"), live.token("bob")
    forged = DevIssuer.generate().token("alice")
    alone = dict(
        zip(
            (alice, bob, forged),
            await _alone(live, [(alice, path), (bob, path), (forged, path)]),
            strict=True,
        )
    )
    before = _calls(DOWNLOAD_MANY)
    mixed = [alice, bob, forged] * 10
    together = await _together(live, [(who, path) for who in mixed])
    assert alone[alice][0] == 200 and alone[alice][4] == b"alice's own"
    assert alone[bob][0] == 403 and alone[bob][3] == "bob"
    assert alone[forged][0] == 401 and alone[forged][3] == ""
    assert together == [alone[who] for who in mixed]
    assert _calls(DOWNLOAD_MANY) >= before + 3  # a call per token at least


def _outcome(answer: filesystem_pb2.DownloadManyResponse) -> tuple[str, int, str, bytes]:
    if answer.HasField("error"):
        return "error", answer.error.code, answer.error.message, b""
    return "body", 0, "", answer.body.data


async def test_download_many_packs_answers_as_asked_and_within_bounds(
    live: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    """Packed replies carry the same answers as one file per reply, within both bounds."""
    contents = await _files(cluster, remote_dir)
    large = {f"{remote_dir}/large{i}": bytes([65 + i]) * (REPLY_BYTES * 2 // 3) for i in range(3)}
    async with cluster.connect("alice") as conn, conn.start_sftp_client() as sftp:
        for path, data in large.items():
            async with sftp.open(path, "wb") as file:
                await file.write(data)
    paths = [*contents, *large, f"{remote_dir}/missing", f"{remote_dir}/subdir"]
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)

    async def replies(per_reply: int) -> list[filesystem_pb2.DownloadManyResponse]:
        request = filesystem_pb2.DownloadManyRequest(
            system_name=live.system, paths=paths, max_files_per_reply=per_reply
        )
        return [r async for r in stub.DownloadMany(request, metadata=live.metadata("alice"))]

    single = await replies(0)
    assert all(not r.files for r in single) and len(single) == len(paths)
    alone = {r.index: _outcome(r) for r in single}
    packed = await replies(4)
    answers = [a for r in packed for a in r.files]
    assert all(not r.HasField("outcome") and r.files for r in packed)
    assert sorted(a.index for a in answers) == list(range(len(paths)))
    assert {a.index: _outcome(a) for a in answers} == alone
    for reply in packed:
        assert len(reply.files) <= 4
        sizes = [len(a.body.data) for a in reply.files]
        assert len(sizes) == 1 or sum(sizes) <= REPLY_BYTES, sizes
    assert len(packed) < len(paths)  # answers did share replies
    assert alone[paths.index(f"{remote_dir}/large1")] == (
        "body",
        0,
        "",
        large[f"{remote_dir}/large1"],
    )
