"""Wire fidelity of the filesystem ops: what FirecREST v2's server sends, on the real cluster.

The reference is FirecREST's own code: ``tail --lines=+N`` for a skipped
heading, its pydantic models' JSON types, and its size-limit answers.
Expected contents come from the cluster's own GNU tools, run as the user.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import grpc
import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc, options_pb2

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


# -- JSON types ----------------------------------------------------------------------------

_STR_OR_NULL = (str, type(None))
# FirecREST's filesystem/ops/models.py, key by key.
FILE = {
    "name": str,
    "type": str,
    "linkTarget": _STR_OR_NULL,
    "user": str,
    "group": str,
    "permissions": str,
    "lastModified": str,
    "size": str,
}
CONTENT = {"content": str, "contentType": str, "startPosition": int, "endPosition": int}
STAT = dict.fromkeys(("mode", "ino", "dev", "nlink", "uid", "gid", "size", "atime", "ctime"), int)
STAT["mtime"] = int


def conforms(obj: dict[str, Any], model: dict[str, Any], where: str) -> None:
    """Every key of ``model`` is in ``obj`` with its JSON type (bool never counts as int)."""
    missing = model.keys() - obj.keys()
    assert not missing, f"{where}: keys left out: {sorted(missing)}"
    for key, kind in model.items():
        value = obj[key]
        assert isinstance(value, kind) and not isinstance(value, bool), (where, key, value)


async def test_ops_replies_have_firecrests_keys_and_json_types(
    rest: httpx.AsyncClient, alice: asyncssh.SSHClientConnection, workdir: str
) -> None:
    path = f"{workdir}/lines.txt"
    await put(alice, path, LINES)
    await alice.run(shlex.join(["ln", "-s", "lines.txt", f"{workdir}/link"]), check=True)

    listing = (await rest.get("/ls", params={"path": workdir})).json()["output"]
    for entry in listing:
        conforms(entry, FILE, "ls")
    by_name = {e["name"]: e for e in listing}
    assert by_name["lines.txt"]["size"] == str(len(LINES))
    assert (by_name["lines.txt"]["linkTarget"], by_name["link"]["linkTarget"]) == (
        None,
        "lines.txt",
    )

    stat = (await rest.get("/stat", params={"path": path})).json()["output"]
    conforms(stat, STAT, "stat")
    assert stat["size"] == len(LINES)
    for op in ("head", "tail"):
        conforms((await rest.get(f"/{op}", params={"path": path})).json()["output"], CONTENT, op)
    checksum = (await rest.get("/checksum", params={"path": path})).json()["output"]
    assert checksum["algorithm"] == "SHA256"  # FirecREST's name, not "SHA-256"
    assert isinstance((await rest.get("/file", params={"path": path})).json()["output"], str)
    made = await rest.post("/mkdir", json={"sourcePath": f"{workdir}/d"})
    assert made.status_code == 201, made.text
    conforms(made.json()["output"], FILE, "mkdir")
    changed = await rest.put("/chmod", json={"sourcePath": path, "mode": "640"})
    conforms(changed.json()["output"], FILE, "chmod")


# -- size limits ---------------------------------------------------------------------------

TRANSPORT_WORDS = "larger than max"


def limit_of(live: LiveService) -> int:
    return live.settings.systems[0].data_operation.max_ops_file_size


@pytest.fixture
async def roomy(live: LiveService) -> AsyncIterator[filesystem_pb2_grpc.FilesystemAsyncStub]:
    """A gRPC client that accepts replies beyond gRPC's default 4 MiB, as a Download needs."""
    channel = grpc.aio.insecure_channel(
        live.grpc_target, options=[("grpc.max_receive_message_length", -1)]
    )
    try:
        yield filesystem_pb2_grpc.FilesystemStub(channel)
    finally:
        await channel.close(None)


def assert_413(response: httpx.Response, message: str) -> None:
    """FirecREST's 413 body, with hpcgate's reason, and no gRPC transport text."""
    assert response.status_code == 413, response.text
    body = response.json()
    assert TRANSPORT_WORDS not in response.text
    assert (body["errorType"], body["message"]) == ("error", message)
    assert body["data"]["reason"] == "FILE_TOO_LARGE"


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_a_file_of_exactly_the_limit_can_be_viewed_and_downloaded(
    live: LiveService,
    rest: httpx.AsyncClient,
    roomy: filesystem_pb2_grpc.FilesystemAsyncStub,
    alice: asyncssh.SSHClientConnection,
    workdir: str,
    kind: str,
) -> None:
    limit = limit_of(live)
    if kind == "text":
        data = (b"0123456789abcdef" * (limit // 16 + 1))[:limit]
    else:
        # Every byte value, many not UTF-8: as text each of those becomes U+FFFD,
        # three bytes, so the reply is far larger than the file.
        data = (bytes(range(256)) * (limit // 256 + 1))[:limit]
    path = f"{workdir}/exact.{kind}"
    await put(alice, path, data)
    text = data.decode("utf-8", "replace")

    viewed = await rest.get("/view", params={"path": path})
    assert viewed.status_code == 200, viewed.text[:500]
    assert viewed.json()["output"] == text
    downloaded = await rest.get("/download", params={"path": path})
    assert downloaded.status_code == 200, downloaded.text[:500]
    assert downloaded.content == data

    metadata = live.metadata("alice")
    view = await roomy.View(
        filesystem_pb2.ViewRequest(system_name=live.system, path=path), metadata=metadata
    )
    assert view.output == text
    download = await roomy.Download(
        filesystem_pb2.DownloadRequest(system_name=live.system, path=path), metadata=metadata
    )
    assert download.data == data


async def test_over_the_limit_is_firecrests_413_never_transport_text(
    live: LiveService,
    rest: httpx.AsyncClient,
    roomy: filesystem_pb2_grpc.FilesystemAsyncStub,
    alice: asyncssh.SSHClientConnection,
    workdir: str,
) -> None:
    limit = limit_of(live)
    # Just over, and far over (beyond what one message of the limit's size holds).
    for size in (limit + 1, 2 * limit + 2 * 1024 * 1024):
        response = await rest.post(
            "/upload", params={"path": workdir}, files={"file": (f"up-{size}", b"u" * size)}
        )
        assert_413(response, "File to upload is too large.")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await roomy.Upload(
            filesystem_pb2.UploadRequest(
                system_name=live.system,
                path=workdir,
                file=options_pb2.UploadedFile(filename="up-grpc", content=b"u" * (limit + 1)),
            ),
            metadata=live.metadata("alice"),
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "File to upload is too large."
    listing = await alice.run(shlex.join(["ls", "-A", "--", workdir]), check=True)
    assert listing.stdout == "", "nothing over the limit lands on the cluster"

    path = f"{workdir}/big.bin"
    await put(alice, path, b"d" * (limit + 1))
    assert_413(await rest.get("/download", params={"path": path}), "File to download is too large.")
    head = await rest.get("/head", params={"path": path, "bytes": limit + 1})
    assert head.status_code == 413 and TRANSPORT_WORDS not in head.text, head.text
    assert head.json()["data"]["reason"] == "FILE_TOO_LARGE"
    # As FirecREST: the view of a file beyond the limit is 413, asking for more than
    # the limit is a bad `size` (400); `size` and `offset` reach every part of it.
    view = await rest.get("/view", params={"path": path})
    assert view.status_code == 413 and TRANSPORT_WORDS not in view.text, view.text
    assert view.json()["data"]["reason"] == "FILE_TOO_LARGE"
    view = await rest.get("/view", params={"path": path, "size": limit + 1})
    assert view.status_code == 400, view.text
    assert view.json()["data"]["fieldViolations"][0]["field"] == "size"
    tail = await rest.get("/view", params={"path": path, "offset": limit})
    assert tail.status_code == 200 and tail.json()["output"] == "d"
