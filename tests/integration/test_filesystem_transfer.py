"""File contents over the Filesystem service: small ops download/upload and the gRPC streams.

Everything runs as alice (and bob) on the loopback cluster; each test works
in a fresh directory of alice's and removes it afterwards. What is on the
cluster is checked over a separate SSH connection, not through the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shlex
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterable

import asyncssh
import grpc
import httpx
import pytest

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.edge import create_app
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc, options_pb2
from localsite import SYSTEM

MIB = 1024 * 1024
CHUNK = 256 * 1024
# The size limit of the second service (max_ops_file_size).
SMALL_LIMIT = 1000
PWNED = "/tmp/pwned"
# A command substitution with a slash cannot be one file name; it is a path:
# the file "pwned)" in the directory "tmp" in the directory "$(touch ".
PWNED_DIRECTORY = "$(touch /tmp"
# File names that break anything that pastes them into a shell or a header.
# Run by a shell, the substitutions would create "pwned" in the working
# directory (the home directory).
ADVERSARIAL_NAMES = [
    "with space",
    "single'quote",
    'double"quote',
    "$(touch pwned)",
    "`touch pwned`",
    "pwned)",
    "new\nline",
    "-leading-dash",
    "--help",
    "*",
    "semi;colon&amp|pipe",
    "back\\slash",
    "ünïcødé-名前-😀",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes of UTF-8
]


@pytest.fixture
async def alice_ssh(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An SSH connection of alice's own, to look at the cluster behind the service's back."""
    async with cluster.connect("alice") as conn:
        yield conn


@pytest.fixture
async def workdir(alice_ssh: asyncssh.SSHClientConnection) -> AsyncIterator[str]:
    """A fresh directory of alice's under /home/alice, removed after the test."""
    path = f"/home/alice/transfer-{uuid.uuid4().hex[:12]}"
    await alice_ssh.run(shlex.join(["mkdir", "--", path]), check=True)
    try:
        yield path
    finally:
        await alice_ssh.run(shlex.join(["rm", "-rf", "--", path]), check=True)


@pytest.fixture
def stub(live: LiveService) -> filesystem_pb2_grpc.FilesystemAsyncStub:
    return filesystem_pb2_grpc.FilesystemStub(live.channel)


@pytest.fixture(scope="module")
async def small_limit(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """A second service on the same cluster whose max_ops_file_size is SMALL_LIMIT."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("small-limit") / "jwks.json"
    issuer.write_jwks(jwks)
    settings = live_settings(cluster, jwks, data_operation={"max_ops_file_size": SMALL_LIMIT})
    async for service in start_service(settings):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


async def _listing(conn: asyncssh.SSHClientConnection, directory: str) -> set[str]:
    async with conn.start_sftp_client() as sftp:
        return {name for name in await sftp.listdir(directory) if name not in (".", "..")}


async def _stat_or_none(
    conn: asyncssh.SSHClientConnection, path: str
) -> tuple[int | None, int | None] | None:
    """(owner uid, mtime) of ``path`` on the cluster, or None if it does not exist."""
    async with conn.start_sftp_client() as sftp:
        try:
            attrs = await sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            return None
        return attrs.uid, attrs.mtime


async def _remote_bytes(conn: asyncssh.SSHClientConnection, path: str) -> bytes:
    async with conn.start_sftp_client() as sftp, sftp.open(path, "rb") as file:
        data: bytes = await file.read()
        return data


async def _put(conn: asyncssh.SSHClientConnection, path: str, data: bytes, mode: int) -> None:
    async with conn.start_sftp_client() as sftp:
        async with sftp.open(path, "wb") as file:
            await file.write(data)
        await sftp.chmod(path, mode)


def _upload_requests(
    path: str,
    data: bytes,
    *,
    digest: str | None = None,
    overwrite: bool = False,
    size: int | None = None,
    mode: int | None = None,
    trailer: bool = True,
) -> list[filesystem_pb2.UploadStreamRequest]:
    """Header, chunks and trailer of an UploadStream of ``data`` to ``path``."""
    header = filesystem_pb2.UploadStreamHeader(system_name=SYSTEM, path=path, overwrite=overwrite)
    if size is not None:
        header.size = size
    if mode is not None:
        header.mode = mode
    messages = [filesystem_pb2.UploadStreamRequest(header=header)]
    messages += [
        filesystem_pb2.UploadStreamRequest(chunk=data[i : i + CHUNK])
        for i in range(0, len(data), CHUNK)
    ]
    if trailer:
        sha = digest if digest is not None else hashlib.sha256(data).hexdigest()
        messages.append(
            filesystem_pb2.UploadStreamRequest(
                trailer=filesystem_pb2.UploadStreamTrailer(sha256=sha)
            )
        )
    return messages


async def _aiter(
    items: Iterable[filesystem_pb2.UploadStreamRequest],
) -> AsyncIterator[filesystem_pb2.UploadStreamRequest]:
    for item in items:
        yield item


async def _download_stream(
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    live: LiveService,
    path: str,
    user: str = "alice",
    **options: int,
) -> tuple[filesystem_pb2.DownloadStreamHeader, bytes, filesystem_pb2.DownloadStreamTrailer]:
    """A DownloadStream read the way a client must: header, chunks, trailer; digest checked."""
    request = filesystem_pb2.DownloadStreamRequest(system_name=SYSTEM, path=path, **options)
    replies = [r async for r in stub.DownloadStream(request, metadata=live.metadata(user))]
    kinds = [r.WhichOneof("payload") for r in replies]
    assert kinds[0] == "header" and kinds[-1] == "trailer"
    assert set(kinds[1:-1]) <= {"chunk"}
    data = b"".join(r.chunk for r in replies[1:-1])
    trailer = replies[-1].trailer
    assert trailer.size == len(data)
    assert hashlib.sha256(data).hexdigest() == trailer.sha256
    return replies[0].header, data, trailer


# -- streaming ---------------------------------------------------------------


async def test_50_mib_stream_round_trip_keeps_the_sha256(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    data = os.urandom(50 * MIB)
    digest = hashlib.sha256(data).hexdigest()
    path = f"{workdir}/big.bin"

    started = time.monotonic()
    reply = await stub.UploadStream(
        _aiter(_upload_requests(path, data, size=len(data))), metadata=live.metadata("alice")
    )
    uploaded = time.monotonic() - started
    assert (reply.path, reply.size, reply.sha256) == (path, len(data), digest)
    checked = await alice_ssh.run(shlex.join(["sha256sum", "--", path]), check=True)
    assert str(checked.stdout).split()[0] == digest

    started = time.monotonic()
    header, received, trailer = await _download_stream(stub, live, path)
    downloaded = time.monotonic() - started
    assert header.size == header.length == len(data)
    assert stat.S_ISREG(header.mode)
    assert abs(header.mtime.seconds - time.time()) < 300
    assert trailer.sha256 == digest
    assert received == data
    print(f"\n50 MiB: UploadStream {uploaded:.2f} s, DownloadStream {downloaded:.2f} s")
    assert await _listing(alice_ssh, workdir) == {"big.bin"}  # no temporary file left


async def test_download_stream_of_a_range(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    data = os.urandom(3 * MIB + 17)
    path = f"{workdir}/range.bin"
    await _put(alice_ssh, path, data, 0o644)

    header, received, _ = await _download_stream(
        stub, live, path, offset=1000, length=2 * MIB, chunk_size=64 * 1024
    )
    assert (header.size, header.offset, header.length) == (len(data), 1000, 2 * MIB)
    assert received == data[1000 : 1000 + 2 * MIB]

    _, tail, _ = await _download_stream(stub, live, path, offset=len(data) - 5)
    assert tail == data[-5:]
    _, empty, _ = await _download_stream(stub, live, path, offset=len(data))
    assert empty == b""

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _download_stream(stub, live, path, offset=len(data) + 1)
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_cancelled_upload_leaves_neither_target_nor_temporary_file(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    path = f"{workdir}/cancelled.bin"
    never = asyncio.Event()

    async def halfway() -> AsyncIterator[filesystem_pb2.UploadStreamRequest]:
        for message in _upload_requests(path, os.urandom(8 * MIB), trailer=False)[:17]:
            yield message  # the header and 4 MiB of data, then the client stalls
        await never.wait()

    call = stub.UploadStream(halfway(), metadata=live.metadata("alice"))
    # Wait until the server has the temporary file open and data in it.
    temporary: str | None = None
    for _ in range(200):
        names = await _listing(alice_ssh, workdir)
        temporary = next((n for n in names if ".hpcgate-" in n), None)
        if temporary is not None:
            break
        await asyncio.sleep(0.05)
    assert temporary is not None, "the upload never started"
    assert temporary.startswith(".cancelled.bin.hpcgate-") and temporary.endswith(".part")

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(100):
        if not await _listing(alice_ssh, workdir):
            break
        await asyncio.sleep(0.05)
    assert await _listing(alice_ssh, workdir) == set()


async def test_digest_mismatch_is_data_loss_and_writes_nothing(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    data = os.urandom(MIB + 3)
    wrong = hashlib.sha256(data + b"!").hexdigest()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(
            _aiter(_upload_requests(f"{workdir}/x.bin", data, digest=wrong)),
            metadata=live.metadata("alice"),
        )
    assert error.value.code() == grpc.StatusCode.DATA_LOSS
    assert "SHA-256 mismatch" in (error.value.details() or "")
    assert await _listing(alice_ssh, workdir) == set()


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"size": 10}, grpc.StatusCode.DATA_LOSS),  # more bytes than announced
        ({"size": 5000}, grpc.StatusCode.DATA_LOSS),  # fewer
        ({"trailer": False}, grpc.StatusCode.INVALID_ARGUMENT),  # no trailer
    ],
)
async def test_malformed_uploads_write_nothing(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
    options: dict[str, int],
    code: grpc.StatusCode,
) -> None:
    requests = _upload_requests(f"{workdir}/x.bin", b"y" * 1000, **options)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(_aiter(requests), metadata=live.metadata("alice"))
    assert error.value.code() == code
    assert await _listing(alice_ssh, workdir) == set()


async def test_existing_target_needs_overwrite(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    path = f"{workdir}/kept.txt"
    await _put(alice_ssh, path, b"original", 0o600)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(
            _aiter(_upload_requests(path, b"replacement")), metadata=live.metadata("alice")
        )
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await _remote_bytes(alice_ssh, path) == b"original"

    await stub.UploadStream(
        _aiter(_upload_requests(path, b"replacement", overwrite=True)),
        metadata=live.metadata("alice"),
    )
    assert await _remote_bytes(alice_ssh, path) == b"replacement"
    async with alice_ssh.start_sftp_client() as sftp:
        assert stat.S_IMODE((await sftp.stat(path)).permissions or 0) == 0o600  # kept

    await stub.UploadStream(
        _aiter(_upload_requests(f"{workdir}/new.txt", b"", mode=0o640)),
        metadata=live.metadata("alice"),
    )
    async with alice_ssh.start_sftp_client() as sftp:
        attrs = await sftp.stat(f"{workdir}/new.txt")
    assert (attrs.size, stat.S_IMODE(attrs.permissions or 0)) == (0, 0o640)
    assert await _listing(alice_ssh, workdir) == {"kept.txt", "new.txt"}


async def test_upload_stream_into_a_missing_directory_is_not_found(
    live: LiveService, stub: filesystem_pb2_grpc.FilesystemAsyncStub, workdir: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(
            _aiter(_upload_requests(f"{workdir}/no/such/dir/x", b"data")),
            metadata=live.metadata("alice"),
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "No such file or directory" in (error.value.details() or "")


# -- small download and upload -------------------------------------------------


async def test_small_upload_and_download_over_rest(
    live: LiveService, workdir: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    data = os.urandom(100_000)
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": workdir},
            files={"file": ("data.bin", data)},
        )
        assert reply.status_code == 204, reply.text
        assert await _remote_bytes(alice_ssh, f"{workdir}/data.bin") == data

        # Uploading again replaces the file, as FirecREST does.
        again = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": workdir},
            files={"file": ("data.bin", b"second")},
        )
        assert again.status_code == 204, again.text

        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/download", params={"path": f"{workdir}/data.bin"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/octet-stream"
        assert reply.content == b"second"

        missing = await http.get(
            f"/filesystem/{SYSTEM}/ops/download", params={"path": f"{workdir}/missing"}
        )
        assert missing.status_code == 404
        assert "No such file or directory" in missing.json()["message"]

        directory = await http.get(f"/filesystem/{SYSTEM}/ops/download", params={"path": workdir})
        assert directory.status_code == 400
        assert "Is a directory" in directory.json()["message"]
    assert await _listing(alice_ssh, workdir) == {"data.bin"}


async def test_files_near_the_default_limit_pass_the_grpc_message_limits(
    live: LiveService, workdir: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    """4.7 MB is under maxOpsFileSize (5 MiB) but over gRPC's default 4 MiB message."""
    data = os.urandom(4_700_000)
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": workdir},
            files={"file": ("big.bin", data)},
        )
        assert reply.status_code == 204, reply.text
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/download", params={"path": f"{workdir}/big.bin"}
        )
    assert reply.status_code == 200, reply.text
    assert reply.content == data
    assert await _remote_bytes(alice_ssh, f"{workdir}/big.bin") == data


async def test_edge_refuses_a_form_body_over_its_limit_with_413(live: LiveService) -> None:
    """The edge stops reading a multipart body at its own bound, before any RPC."""
    app = create_app(live.grpc_target, max_form_body=1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        reply = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": "/home/alice"},
            files={"file": ("big.bin", b"x" * 4096)},
            headers=live.headers("alice"),
        )
    assert reply.status_code == 413
    assert reply.json()["data"]["reason"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x" * 256])
async def test_upload_refuses_a_file_name_that_is_not_one_component(
    live: LiveService, workdir: str, name: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        reply = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": workdir},
            files={"file": (name, b"data")},
        )
    assert reply.status_code == 400, reply.text
    assert reply.json()["data"]["fieldViolations"][0]["field"] in ("file.filename", "file")
    assert await _listing(alice_ssh, workdir) == set()


async def test_size_limit_is_413_over_rest(
    small_limit: LiveService, workdir: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    headers = small_limit.headers("alice")
    async with httpx.AsyncClient(base_url=small_limit.rest_url, headers=headers) as http:
        for size, status in ((SMALL_LIMIT, 204), (SMALL_LIMIT + 1, 413)):
            reply = await http.post(
                f"/filesystem/{SYSTEM}/ops/upload",
                params={"path": workdir},
                files={"file": (f"up-{size}", b"u" * size)},
            )
            assert reply.status_code == status, reply.text
        assert await _listing(alice_ssh, workdir) == {f"up-{SMALL_LIMIT}"}

        await _put(alice_ssh, f"{workdir}/big", b"d" * (SMALL_LIMIT + 1), 0o644)
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/download", params={"path": f"{workdir}/big"}
        )
        assert reply.status_code == 413, reply.text
        assert reply.json()["errorType"] == "error"
        assert reply.json()["data"]["reason"] == "FILE_TOO_LARGE"
        reply = await http.get(
            f"/filesystem/{SYSTEM}/ops/download", params={"path": f"{workdir}/up-{SMALL_LIMIT}"}
        )
        assert reply.status_code == 200
        assert reply.content == b"u" * SMALL_LIMIT

    # The streams have no such limit.
    stub = filesystem_pb2_grpc.FilesystemStub(small_limit.channel)
    request = filesystem_pb2.DownloadStreamRequest(system_name=SYSTEM, path=f"{workdir}/big")
    replies = [
        r async for r in stub.DownloadStream(request, metadata=small_limit.metadata("alice"))
    ]
    assert b"".join(r.chunk for r in replies) == b"d" * (SMALL_LIMIT + 1)


async def _round_trip(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    http: httpx.AsyncClient,
    alice_ssh: asyncssh.SSHClientConnection,
    directory: str,
    name: str,
) -> None:
    """Upload and download ``directory/name`` over gRPC, then over REST, then stream it."""
    path = posixpath.join(directory, name)
    metadata = live.metadata("alice")
    by_grpc = f"grpc {name}".encode()
    await stub.Upload(
        filesystem_pb2.UploadRequest(
            system_name=SYSTEM,
            path=directory,
            file=options_pb2.UploadedFile(filename=name, content=by_grpc),
        ),
        metadata=metadata,
    )
    reply = await stub.Download(
        filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=path), metadata=metadata
    )
    assert reply.data == by_grpc, name
    assert await _remote_bytes(alice_ssh, path) == by_grpc, name

    by_rest = f"rest {name}".encode()
    sent = await http.post(
        f"/filesystem/{SYSTEM}/ops/upload",
        params={"path": directory},
        files={"file": (name, by_rest)},
    )
    assert sent.status_code == 204, (name, sent.text)
    got = await http.get(f"/filesystem/{SYSTEM}/ops/download", params={"path": path})
    assert got.status_code == 200, (name, got.text)
    assert got.content == by_rest, name
    _, streamed, _ = await _download_stream(stub, live, path)
    assert streamed == by_rest, name


async def test_adversarial_names_round_trip_over_grpc_and_rest(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    nested = posixpath.join(workdir, PWNED_DIRECTORY)
    async with alice_ssh.start_sftp_client() as sftp:
        await sftp.makedirs(nested)
    # Where a shell would have created "pwned": normally absent before and after.
    canaries = (PWNED, "/home/alice/pwned")
    before = [await _stat_or_none(alice_ssh, path) for path in canaries]
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("alice")) as http:
        for name in ADVERSARIAL_NAMES:
            await _round_trip(live, stub, http, alice_ssh, workdir, name)
        await _round_trip(live, stub, http, alice_ssh, nested, "pwned)")
    assert posixpath.join(nested, "pwned)").endswith("/$(touch /tmp/pwned)")
    assert await _listing(alice_ssh, workdir) == {*ADVERSARIAL_NAMES, "$(touch "}
    assert await _listing(alice_ssh, nested) == {"pwned)"}
    assert [await _stat_or_none(alice_ssh, path) for path in canaries] == before


async def test_bob_cannot_read_or_write_alices_files(
    live: LiveService,
    stub: filesystem_pb2_grpc.FilesystemAsyncStub,
    workdir: str,
    alice_ssh: asyncssh.SSHClientConnection,
) -> None:
    path = f"{workdir}/private"
    await _put(alice_ssh, path, b"alice only", 0o600)
    async with httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("bob")) as http:
        reply = await http.get(f"/filesystem/{SYSTEM}/ops/download", params={"path": path})
        assert reply.status_code == 403, reply.text
        assert "Permission denied" in reply.json()["message"]
        reply = await http.post(
            f"/filesystem/{SYSTEM}/ops/upload",
            params={"path": workdir},
            files={"file": ("from-bob", b"x")},
        )
        assert reply.status_code == 403, reply.text

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _download_stream(stub, live, path, user="bob")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(
            _aiter(_upload_requests(path, b"bob was here", overwrite=True)),
            metadata=live.metadata("bob"),
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _remote_bytes(alice_ssh, path) == b"alice only"
    assert await _listing(alice_ssh, workdir) == {"private"}


async def test_paths_outside_the_filesystems_are_invalid(
    live: LiveService, stub: filesystem_pb2_grpc.FilesystemAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _download_stream(stub, live, "/etc/passwd")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("path:")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadStream(
            _aiter(_upload_requests("/tmp/x", b"data")), metadata=live.metadata("alice")
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("header.path:")
