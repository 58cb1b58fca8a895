"""Paths are judged where they lead: the attacks of issue 14 on the loopback cluster.

Each test arranges, as alice over her own SSH login, a directory under
/home/alice with links leading out of the configured filesystems (/home,
/scratch): to /etc/passwd, and to a directory of alice's under /tmp that she
could write if hpcgate let her. Each attack must be refused with
PATH_OUTSIDE_FILESYSTEMS naming the request field, and the cluster must be
exactly as it was: the outside directory and the work directory are
snapshotted (names, types, modes, sizes, link targets, contents' digests)
before and compared after.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shlex
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio

REASON = "PATH_OUTSIDE_FILESYSTEMS"
SECRET = b"alice's file outside the filesystems\n"
# Lists a tree: every entry's path, type, mode, size and link target, and
# each regular file's SHA-256, sorted.
_SNAPSHOT = r"""
cd -- "$1" || exit 1
find . -printf '%p %y %m %s %l\n' | sort
find . -type f -exec sha256sum -- {} + | sort
"""


@dataclass
class Trap:
    """alice's work directory with links out, and the outside directory they lead to."""

    conn: asyncssh.SSHClientConnection
    work: str  # under /home/alice
    outside: str  # under /tmp, alice's own

    @property
    def passwd(self) -> str:
        """A link to /etc/passwd."""
        return f"{self.work}/passwd"

    @property
    def tmplink(self) -> str:
        """A link to the outside directory."""
        return f"{self.work}/tmplink"

    @property
    def secret(self) -> str:
        """A link to a file alice owns outside."""
        return f"{self.work}/secret"

    async def run(self, *argv: str) -> str:
        result = await self.conn.run(shlex.join(argv), check=True)
        return str(result.stdout)

    async def snapshot(self) -> tuple[str, str]:
        """The state of both directories."""
        return (
            await self.run("sh", "-c", _SNAPSHOT, "sh", self.outside),
            await self.run("sh", "-c", _SNAPSHOT, "sh", self.work),
        )

    async def put(self, path: str, data: bytes) -> None:
        async with self.conn.start_sftp_client() as sftp, sftp.open(path, "wb") as handle:
            await handle.write(data)


@pytest.fixture(scope="module")
async def alice(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with cluster.connect("alice") as conn:
        yield conn


@pytest.fixture
async def trap(alice: asyncssh.SSHClientConnection) -> AsyncIterator[Trap]:
    tag = uuid.uuid4().hex[:10]
    found = Trap(alice, f"/home/alice/paths-{tag}", f"/tmp/hpcgate-paths-{tag}")
    await found.run("mkdir", "-m", "700", "--", found.work, found.outside)
    await found.put(f"{found.outside}/secret.txt", SECRET)
    await found.put(f"{found.work}/inside.txt", b"inside\n")
    await found.run("ln", "-s", "/etc/passwd", found.passwd)
    await found.run("ln", "-s", found.outside, found.tmplink)
    await found.run("ln", "-s", f"{found.outside}/secret.txt", found.secret)
    try:
        yield found
    finally:
        await alice.run(shlex.join(["rm", "-rf", "--", found.work, found.outside]))


@pytest.fixture(scope="module")
async def http(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{live.rest_url}/filesystem/{SYSTEM}",
        headers=live.headers("alice"),
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def stub(live: LiveService) -> filesystem_pb2_grpc.FilesystemAsyncStub:
    return filesystem_pb2_grpc.FilesystemStub(live.channel)


def refused(reply: httpx.Response, field: str) -> dict[str, Any]:
    """A 400 with reason PATH_OUTSIDE_FILESYSTEMS naming ``field``; nothing of passwd in it."""
    assert reply.status_code == 400, reply.text
    assert "root:x:0:0" not in reply.text
    assert SECRET.decode() not in reply.text
    body: dict[str, Any] = reply.json()
    assert body["data"]["reason"] == REASON, body
    assert [v["field"] for v in body["data"]["fieldViolations"]] == [field], body
    return body


def grpc_refused(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert REASON in str(error.debug_error_string()) or "configured filesystem" in (
        error.details() or ""
    )


# -- reads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "op", "params"),
    [
        ("GET", "ops/view", {}),
        ("GET", "ops/head", {}),
        ("GET", "ops/tail", {}),
        ("GET", "ops/checksum", {}),
        ("GET", "ops/download", {}),
        ("GET", "ops/ls", {}),
        ("GET", "ops/stat", {"dereference": "true"}),
    ],
)
async def test_a_read_through_a_link_to_etc_passwd_is_refused(
    http: httpx.AsyncClient, trap: Trap, method: str, op: str, params: dict[str, str]
) -> None:
    before = await trap.snapshot()
    for link in (trap.passwd, trap.secret):
        reply = await http.request(method, op, params={"path": link, **params})
        refused(reply, "path")
    assert await trap.snapshot() == before


async def test_a_read_through_a_link_inside_still_works(
    http: httpx.AsyncClient, trap: Trap
) -> None:
    await trap.run("ln", "-s", f"{trap.work}/inside.txt", f"{trap.work}/good")
    reply = await http.get("ops/view", params={"path": f"{trap.work}/good"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"] == "inside\n"
    # The entry itself, not where it leads: stat and file describe the link.
    reply = await http.get("ops/stat", params={"path": trap.passwd})
    assert reply.status_code == 200, reply.text
    reply = await http.get("ops/file", params={"path": trap.passwd})
    assert reply.status_code == 200, reply.text
    assert "symbolic link" in reply.json()["output"]


async def test_ls_lists_links_out_as_links_and_refuses_to_follow_them(
    http: httpx.AsyncClient, trap: Trap
) -> None:
    reply = await http.get("ops/ls", params={"path": trap.work, "dereference": "true"})
    assert reply.status_code == 200, reply.text
    entries = {entry["name"]: entry for entry in reply.json()["output"]}
    # Not followed: listed as the links they are, nothing of the outside shown.
    assert entries["tmplink"]["type"] == "l"
    assert entries["tmplink"]["linkTarget"] == trap.outside
    assert entries["passwd"]["type"] == "l"
    reply = await http.get(
        "ops/ls", params={"path": trap.work, "recursive": "true", "dereference": "true"}
    )
    assert reply.status_code == 200, reply.text
    assert not any("secret.txt" in entry["name"] for entry in reply.json()["output"])
    refused(await http.get("ops/ls", params={"path": trap.tmplink}), "path")


async def test_streams_and_bulk_refuse_links_out(
    stub: filesystem_pb2_grpc.FilesystemAsyncStub, live: LiveService, trap: Trap
) -> None:
    metadata = live.metadata("alice")
    request = filesystem_pb2.DownloadStreamRequest(system_name=SYSTEM, path=trap.passwd)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.DownloadStream(request, metadata=metadata):
            pass
    grpc_refused(caught.value)

    files = filesystem_pb2.BulkDownloadFiles(
        paths=[trap.passwd, f"{trap.work}/inside.txt", f"{trap.secret}"]
    )
    bulk = filesystem_pb2.BulkDownloadRequest(system_name=SYSTEM, files=files)
    entries = [
        e async for reply in stub.BulkDownload(bulk, metadata=metadata) for e in reply.entries
    ]
    chunks = {e.file_index: b"" for e in entries if e.WhichOneof("kind") == "chunk"}
    for e in entries:
        if e.WhichOneof("kind") == "chunk":
            chunks[e.file_index] += e.chunk
    errors = {e.file_index: e.error for e in entries if e.WhichOneof("kind") == "error"}
    assert chunks == {1: b"inside\n"}
    assert sorted(errors) == [0, 2]
    assert all(error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for error in errors.values())

    tree = filesystem_pb2.BulkDownloadTree(root=trap.tmplink, recursive=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        request_tree = filesystem_pb2.BulkDownloadRequest(system_name=SYSTEM, tree=tree)
        async for _ in stub.BulkDownload(request_tree, metadata=metadata):
            pass
    grpc_refused(caught.value)


# -- writes --------------------------------------------------------------------------------


async def test_an_upload_into_a_link_to_tmp_is_refused(
    http: httpx.AsyncClient,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    live: LiveService,
    trap: Trap,
) -> None:
    before = await trap.snapshot()
    reply = await http.post(
        "ops/upload", params={"path": trap.tmplink}, files={"file": ("dropped", b"x" * 100)}
    )
    refused(reply, "path")
    # Onto a link to a file outside: not written through.
    reply = await http.post(
        "ops/upload", params={"path": trap.work}, files={"file": ("secret", b"x")}
    )
    assert reply.status_code == 204, reply.text  # replaces the link itself, inside
    assert (await trap.run("cat", "--", f"{trap.outside}/secret.txt")).encode() == SECRET
    await trap.run("ln", "-sfn", "--", f"{trap.outside}/secret.txt", trap.secret)
    assert await trap.snapshot() == before

    data = b"streamed" * 1000
    header = filesystem_pb2.UploadStreamHeader(system_name=SYSTEM, path=f"{trap.tmplink}/up")
    trailer = filesystem_pb2.UploadStreamTrailer(sha256=hashlib.sha256(data).hexdigest())

    async def messages() -> AsyncIterator[filesystem_pb2.UploadStreamRequest]:
        yield filesystem_pb2.UploadStreamRequest(header=header)
        yield filesystem_pb2.UploadStreamRequest(chunk=data)
        yield filesystem_pb2.UploadStreamRequest(trailer=trailer)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UploadStream(messages(), metadata=live.metadata("alice"))
    grpc_refused(caught.value)
    assert await trap.snapshot() == before  # no file, and no .part left anywhere


@pytest.mark.parametrize(
    ("method", "op", "body", "field"),
    [
        ("POST", "ops/mkdir", {"path": "{tmplink}/made", "parent": True}, "path"),
        ("POST", "ops/mkdir", {"path": "{tmplink}/made"}, "path"),
        ("PUT", "ops/chmod", {"path": "{secret}", "mode": "777"}, "path"),
        ("PUT", "ops/chown", {"path": "{secret}", "owner": "alice"}, "path"),
        ("DELETE", "ops/rm", {"path": "{tmplink}/secret.txt"}, "path"),
        # symlink: the link's place, and where it would point.
        (
            "POST",
            "ops/symlink",
            {"path": "{work}/inside.txt", "linkPath": "{tmplink}/l"},
            "linkPath",
        ),
        ("POST", "ops/symlink", {"path": "{secret}", "linkPath": "{work}/l"}, "path"),
        ("POST", "ops/symlink", {"path": "{tmplink}/x", "linkPath": "{work}/l"}, "path"),
        (
            "POST",
            "ops/compress",
            {"sourcePath": "{work}/inside.txt", "targetPath": "{tmplink}/a.tar.gz"},
            "targetPath",
        ),
        (
            "POST",
            "ops/compress",
            {"sourcePath": "{tmplink}", "targetPath": "{work}/a.tar.gz", "dereference": True},
            "sourcePath",
        ),
        (
            "POST",
            "ops/compress",
            {"sourcePath": "{work}", "targetPath": "/home/alice/a.tar.gz", "dereference": True},
            "sourcePath",
        ),
        (
            "POST",
            "ops/extract",
            {"sourcePath": "{secret}", "targetPath": "{work}"},
            "sourcePath",
        ),
    ],
)
async def test_a_change_through_a_link_out_is_refused(
    http: httpx.AsyncClient, trap: Trap, method: str, op: str, body: dict[str, Any], field: str
) -> None:
    filled = {
        k: v.format(work=trap.work, tmplink=trap.tmplink, secret=trap.secret)
        if isinstance(v, str)
        else v
        for k, v in body.items()
    }
    before = await trap.snapshot()
    if method == "DELETE":
        reply = await http.request(method, op, params=filled)
    else:
        reply = await http.request(method, op, json=filled)
    refused(reply, field)
    assert await trap.snapshot() == before
    assert (await trap.conn.run("test -e /home/alice/a.tar.gz")).exit_status != 0


async def test_rm_of_a_link_removes_the_link_not_what_it_leads_to(
    http: httpx.AsyncClient, trap: Trap
) -> None:
    reply = await http.delete("ops/rm", params={"path": trap.tmplink})
    assert reply.status_code == 204, reply.text
    assert (await trap.run("cat", "--", f"{trap.outside}/secret.txt")).encode() == SECRET
    assert (await trap.conn.run(shlex.join(["test", "-L", trap.tmplink]))).exit_status != 0


# -- archives ------------------------------------------------------------------------------


def _archive(*members: tarfile.TarInfo) -> bytes:
    """A tar archive of ``members`` (regular ones get one byte of data)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member in members:
            if member.isreg():
                member.size = 1
                archive.addfile(member, io.BytesIO(b"x"))
            else:
                archive.addfile(member)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


async def test_extract_refuses_hostile_archives_and_changes_nothing(
    http: httpx.AsyncClient, trap: Trap
) -> None:
    target = f"{trap.work}/into"
    await trap.run("mkdir", "--", target)
    hostile = {
        "dotdot": [_member("fine"), _member("../escaped")],
        "deep-dotdot": [_member("a/b/../../../escaped")],
        "absolute-link": [_member("evil", tarfile.SYMTYPE, trap.outside)],
        "relative-link-out": [_member("evil", tarfile.SYMTYPE, "../../../../etc/passwd")],
        "through-a-link": [_member("tmplink/dropped")],
    }
    # A link already in the target, leading out, that a member would go through.
    await trap.run("ln", "-s", trap.outside, f"{target}/tmplink")
    for name, members in hostile.items():
        await trap.put(f"{trap.work}/{name}.tar", _archive(*members))
    before = await trap.snapshot()
    for name in hostile:
        reply = await http.post(
            "ops/extract",
            json={
                "sourcePath": f"{trap.work}/{name}.tar",
                "targetPath": target,
                "compression": "none",
            },
        )
        refused(reply, "sourcePath")
        assert await trap.snapshot() == before, name
    # A benign archive with a link inside still extracts.
    benign = _archive(
        _member("d/", tarfile.DIRTYPE), _member("d/f"), _member("d/l", tarfile.SYMTYPE, "f")
    )
    await trap.put(f"{trap.work}/benign.tar", benign)
    reply = await http.post(
        "ops/extract",
        json={"sourcePath": f"{trap.work}/benign.tar", "targetPath": target, "compression": "none"},
    )
    assert reply.status_code == 204, reply.text
    assert await trap.run("readlink", "--", f"{target}/d/l") == "f\n"


# -- the small-file batch path -------------------------------------------------------------


@pytest.fixture(scope="module")
async def batching(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """A service that gathers every download into batches (burst and rate 0)."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("paths") / "jwks.json"
    issuer.write_jwks(jwks)
    limits = {"direct_read_burst": 0, "direct_read_rate": 0}
    settings = live_settings(cluster, jwks, data_operation=limits)
    async for service in start_service(settings):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


def _batched() -> float:
    labels = {"system": SYSTEM, "route": "batched"}
    return REGISTRY.get_sample_value("hpcgate_filesystem_small_reads_total", labels) or 0.0


async def test_a_read_batch_leaves_out_links_out(batching: LiveService, trap: Trap) -> None:
    stub = filesystem_pb2_grpc.FilesystemStub(batching.channel)
    metadata = batching.metadata("alice")
    paths = [trap.passwd, trap.secret, *(f"{trap.work}/inside.txt" for _ in range(8))]
    before = _batched()

    async def download(path: str) -> bytes | grpc.aio.AioRpcError:
        request = filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=path)
        try:
            reply = await stub.Download(request, metadata=metadata, timeout=30)
            data: bytes = reply.data
            return data
        except grpc.aio.AioRpcError as error:
            return error

    outcomes = await asyncio.gather(*(download(path) for path in paths))
    for outcome in outcomes[:2]:
        assert isinstance(outcome, grpc.aio.AioRpcError), outcome
        grpc_refused(outcome)
    assert outcomes[2:] == [b"inside\n"] * 8
    assert _batched() - before >= 8  # the inside reads did come from a batch


# -- transfer jobs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "op", "body", "field"),
    [
        ("POST", "cp", {"sourcePath": "{secret}", "targetPath": "{work}/copy"}, "sourcePath"),
        (
            "POST",
            "cp",
            {"sourcePath": "{work}/inside.txt", "targetPath": "{tmplink}/c"},
            "targetPath",
        ),
        (
            "POST",
            "mv",
            {"sourcePath": "{work}/inside.txt", "targetPath": "{tmplink}/m"},
            "targetPath",
        ),
        (
            "POST",
            "mv",
            {"sourcePath": "{tmplink}/secret.txt", "targetPath": "{work}/m"},
            "sourcePath",
        ),
        ("DELETE", "rm", {"path": "{tmplink}/secret.txt"}, "path"),
        (
            "POST",
            "compress",
            {"sourcePath": "{work}/inside.txt", "targetPath": "{tmplink}/a.tar"},
            "targetPath",
        ),
        ("POST", "extract", {"sourcePath": "{work}/out.tar", "targetPath": "{work}"}, "sourcePath"),
        (
            "POST",
            "extract",
            {"sourcePath": "{work}/out.tar", "targetPath": "{tmplink}"},
            "targetPath",
        ),
        (
            "POST",
            "upload",
            {
                "path": "{tmplink}/up",
                "transferDirectives": {"transferMethod": "s3", "fileSize": 10},
            },
            "path",
        ),
        (
            "POST",
            "download",
            {"sourcePath": "{passwd}", "transferDirectives": {"transferMethod": "s3"}},
            "sourcePath",
        ),
    ],
)
async def test_a_transfer_job_through_a_link_out_is_refused_before_it_is_submitted(
    http: httpx.AsyncClient, trap: Trap, method: str, op: str, body: dict[str, Any], field: str
) -> None:
    await trap.put(f"{trap.work}/out.tar", _archive(_member("evil", tarfile.SYMTYPE, "/etc")))
    filled: dict[str, Any] = {"account": "proj1"}
    if op == "extract":
        filled["compression"] = "none"
    for key, value in body.items():
        form = dict(work=trap.work, tmplink=trap.tmplink, secret=trap.secret, passwd=trap.passwd)
        filled[key] = value.format(**form) if isinstance(value, str) else value
    before = await trap.snapshot()
    if method == "DELETE":
        reply = await http.request(method, f"transfer/{op}", params=filled)
    else:
        reply = await http.request(method, f"transfer/{op}", json=filled)
    refused(reply, field)
    assert await trap.snapshot() == before
