"""Filesystem.BulkDownload: many files in one stream, relayed from one remote tar.

The benchmark is the seeds': 1,000 files of 1 KB. Times are printed (run
with ``-s``), not asserted: the loopback floors are 0.75 s for SFTP
open/read/close per file and 0.024 s for one tar stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shlex
import stat
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncssh
import grpc
import pytest

from cluster_fixture import Cluster
from conftest import LiveService
from hpcgate.server.filesystem import bulk
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

FILES = 1000
FILE_SIZE = 1024


@dataclass
class Received:
    """What the stream said about one file."""

    header: filesystem_pb2.BulkDownloadFileHeader | None = None
    data: bytearray = field(default_factory=bytearray)
    sha256: str | None = None
    error: filesystem_pb2.BulkDownloadFileError | None = None


@dataclass
class Stream:
    files: dict[int, Received]
    order: list[int]
    messages: int
    largest_chunk: int
    largest_message: int


async def _bulk(
    live: LiveService, request: filesystem_pb2.BulkDownloadRequest, user: str = "alice"
) -> Stream:
    """Read a BulkDownload, checking the stream's rules as a client must."""
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    files: dict[int, Received] = {}
    order: list[int] = []
    current: int | None = None  # the file whose header came and whose end did not
    messages = largest_chunk = largest_message = 0
    async for reply in stub.BulkDownload(request, metadata=live.metadata(user)):
        messages += 1
        largest_message = max(largest_message, sum(len(e.chunk) for e in reply.entries))
        for entry in reply.entries:
            kind = entry.WhichOneof("kind")
            received = files.setdefault(entry.file_index, Received())
            if kind == "header":
                assert current is None, "files interleave"
                assert received.header is None and received.error is None
                received.header = entry.header
                current = entry.file_index
                order.append(current)
            elif kind == "chunk":
                assert current == entry.file_index, "data outside its file"
                received.data += entry.chunk
                largest_chunk = max(largest_chunk, len(entry.chunk))
            elif kind == "end":
                assert current == entry.file_index
                assert received.header is not None
                assert len(received.data) == received.header.size
                assert hashlib.sha256(received.data).hexdigest() == entry.end.sha256
                received.sha256 = entry.end.sha256
                current = None
            else:
                assert kind == "error"
                assert current in (None, entry.file_index)
                received.error = entry.error
                current = None
                order.append(entry.file_index)
    assert current is None, "the stream ended inside a file"
    return Stream(files, order, messages, largest_chunk, largest_message)


def _files_request(paths: list[str], chunk_size: int = 0) -> filesystem_pb2.BulkDownloadRequest:
    return filesystem_pb2.BulkDownloadRequest(
        system_name=SYSTEM,
        files=filesystem_pb2.BulkDownloadFiles(paths=paths),
        chunk_size=chunk_size,
    )


def _tree_request(root: str, **options: object) -> filesystem_pb2.BulkDownloadRequest:
    return filesystem_pb2.BulkDownloadRequest(
        system_name=SYSTEM,
        tree=filesystem_pb2.BulkDownloadTree(root=root, **options),  # type: ignore[arg-type]
    )


async def _unpack(conn: asyncssh.SSHClientConnection, root: str, files: dict[str, bytes]) -> None:
    """Create ``files`` (relative path -> content) under ``root`` as the connection's user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
            archive.addfile(info, io.BytesIO(content))
    command = shlex.join(["tar", "-x", "-f", "-", "-C", root])
    await conn.run(command, input=buffer.getvalue(), encoding=None, check=True)


@pytest.fixture
async def alice_ssh(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with cluster.connect("alice") as conn:
        yield conn


@pytest.fixture
async def root(alice_ssh: asyncssh.SSHClientConnection) -> AsyncIterator[str]:
    """A fresh directory of alice's, removed after the test."""
    path = f"/home/alice/bulk-{uuid.uuid4().hex[:12]}"
    await alice_ssh.run(shlex.join(["mkdir", "--", path]), check=True)
    try:
        yield path
    finally:
        await alice_ssh.run(shlex.join(["rm", "-rf", "--", path]), check=True)


async def _sftp_floor(conn: asyncssh.SSHClientConnection, paths: list[str]) -> float:
    """Seconds to fetch ``paths`` with one SFTP open/read/close each (concurrently)."""
    async with conn.start_sftp_client() as sftp:

        async def one(path: str) -> bytes:
            async with sftp.open(path, "rb") as file:
                data: bytes = await file.read()
                return data

        started = time.monotonic()
        await asyncio.gather(*(one(p) for p in paths))
        return time.monotonic() - started


async def test_thousand_small_files_in_one_stream(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    contents = {f"f{i:04d}.dat": os.urandom(FILE_SIZE) for i in range(FILES)}
    await _unpack(alice_ssh, root, contents)
    names = sorted(contents)
    paths = [f"{root}/{name}" for name in names]
    missing = 500
    paths.insert(missing, f"{root}/no-such-file")

    started = time.monotonic()
    stream = await _bulk(live, _files_request(paths))
    cold = time.monotonic() - started  # may include logging in
    started = time.monotonic()
    await _bulk(live, _files_request(paths))
    warm = time.monotonic() - started
    floor = await _sftp_floor(alice_ssh, paths[:missing] + paths[missing + 1 :])

    assert sorted(stream.files) == list(range(FILES + 1))
    for index, path in enumerate(paths):
        received = stream.files[index]
        if index == missing:
            assert received.error is not None and received.header is None
            assert received.error.code == grpc.StatusCode.NOT_FOUND.value[0]
            assert received.error.path == path
            assert "No such file or directory" in received.error.message
            continue
        name = path.rsplit("/", 1)[1]
        assert received.header is not None and received.error is None
        assert received.header.path == path
        assert received.header.relative_path == name
        assert received.header.size == FILE_SIZE
        assert stat.S_ISREG(received.header.mode)
        assert received.data == contents[name]
        assert received.sha256 == hashlib.sha256(contents[name]).hexdigest()
    # Files come in the order asked for; the one tar could not read is reported at the end.
    assert stream.order == [i for i in range(FILES + 1) if i != missing] + [missing]
    # Batched, not one message per file. How many depends on how tar's output
    # arrives (one message per read): a loaded machine's smaller reads gave 118.
    assert stream.messages < FILES // 4
    print(
        f"\nBulkDownload of {FILES} x {FILE_SIZE} B in {stream.messages} messages:"
        f" {cold:.3f} s first, {warm:.3f} s again; SFTP open/read/close per file"
        f" (concurrent, one connection): {floor:.3f} s"
    )


async def test_directory_tree(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    long_name = "l" * 150 + ".out"  # longer than a tar header's name field
    contents = {
        "a.out": b"a" * 10,
        "b.txt": b"b" * 20,
        "empty.out": b"",
        long_name: b"long",
        "new\nline ü.out": b"newline",
        ".hidden.out": b"hidden",
        "sub/c.out": b"c" * 30,
        "sub/d.txt": b"d",
        "sub/deeper/e.out": os.urandom(3 * 1024 * 1024),
        "sub/.h/f.out": b"f",
    }
    await _unpack(alice_ssh, root, contents)
    async with alice_ssh.start_sftp_client() as sftp:
        await sftp.symlink(f"{root}/a.out", f"{root}/link.out")  # not followed in a tree

    async def relative_paths(**options: object) -> dict[str, bytes]:
        stream = await _bulk(live, _tree_request(root, **options))
        assert stream.order == list(range(len(stream.files)))  # a running number
        found = {}
        for received in stream.files.values():
            assert received.header is not None and received.error is None
            assert received.header.path == f"{root}/{received.header.relative_path}"
            found[received.header.relative_path] = bytes(received.data)
        return found

    top = await relative_paths()
    assert top == {n: c for n, c in contents.items() if "/" not in n and not n.startswith(".")}
    everything = await relative_paths(recursive=True, show_hidden=True)
    assert everything == contents
    outs = await relative_paths(recursive=True, glob="*.out")
    assert set(outs) == {
        "a.out",
        "empty.out",
        long_name,
        "new\nline ü.out",
        "sub/c.out",
        "sub/deeper/e.out",
    }
    assert await relative_paths(recursive=True, glob="sub/*.txt") == {"sub/d.txt": b"d"}


async def test_named_files_edge_cases(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    big = os.urandom(3 * 1024 * 1024 + 5)
    await _unpack(alice_ssh, root, {"big.bin": big, "small": b"s", "dir/x": b"x"})
    async with alice_ssh.start_sftp_client() as sftp:
        await sftp.symlink(f"{root}/small", f"{root}/link")
    paths = [f"{root}/big.bin", f"{root}/dir", f"{root}/link", f"{root}/big.bin"]

    stream = await _bulk(live, _files_request(paths, chunk_size=64 * 1024))
    assert stream.files[0].data == big and stream.files[3].data == big  # asked twice: sent twice
    assert stream.largest_chunk <= 64 * 1024 and stream.largest_message <= 64 * 1024
    error = stream.files[1].error
    assert error is not None and error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "Is a directory" in error.message
    link = stream.files[2]
    assert link.data == b"s" and link.header is not None and link.header.relative_path == "link"


async def test_bob_gets_errors_for_alices_files(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    await _unpack(alice_ssh, root, {"private": b"alice only"})
    stream = await _bulk(live, _files_request([f"{root}/private"]), user="bob")
    error = stream.files[0].error
    assert error is not None and error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "Permission denied" in error.message
    assert not stream.files[0].data

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _bulk(live, _tree_request(root), user="bob")
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_requests_are_invalid_argument(live: LiveService) -> None:
    for request, field_name in (
        (_files_request(["/home/alice/ok", "relative"]), "files.paths[1]"),
        (_tree_request("/etc"), "tree.root"),
        (filesystem_pb2.BulkDownloadRequest(system_name=SYSTEM), "selection"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await _bulk(live, request)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (failure.value.details() or "").startswith(f"{field_name}:")


async def _tar_running(conn: asyncssh.SSHClientConnection) -> bool:
    """Whether a bulk download's tar (or its `timeout` wrapper) runs as alice."""
    # "[-]-" matches the tar's "--hard-dereference" but not this pgrep's own command line.
    command = shlex.join(["pgrep", "-u", "alice", "-f", "[-]-hard-dereference"])
    return (await conn.run(command)).exit_status == 0


async def test_a_cancelled_bulk_download_stops_its_tar(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    await _unpack(alice_ssh, root, {f"big{i}": os.urandom(4 * 1024 * 1024) for i in range(12)})
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    call = stub.BulkDownload(_tree_request(root), metadata=live.metadata("alice"))
    first = await call.read()
    assert isinstance(first, filesystem_pb2.BulkDownloadResponse) and first.entries
    assert await _tar_running(alice_ssh)  # held back by flow control: we read no further

    call.cancel()
    for _ in range(100):
        if not await _tar_running(alice_ssh):
            break
        await asyncio.sleep(0.05)
    assert not await _tar_running(alice_ssh)


async def test_an_unlistable_subdirectory_is_an_error_entry(
    live: LiveService, root: str, alice_ssh: asyncssh.SSHClientConnection
) -> None:
    await _unpack(alice_ssh, root, {"a": b"a", "locked/b": b"b", "z/c": b"c"})
    async with alice_ssh.start_sftp_client() as sftp:
        await sftp.chmod(f"{root}/locked", 0)
        try:
            stream = await _bulk(live, _tree_request(root, recursive=True))
        finally:
            await sftp.chmod(f"{root}/locked", 0o755)
    assert stream.order == [0, 1, 2]  # the files, then the directory that failed
    assert [stream.files[i].data for i in (0, 1)] == [b"a", b"c"]
    error = stream.files[2].error
    assert error is not None and error.path == f"{root}/locked"
    assert error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("piece", [1, 7, 511, 512, 513, 4096, 1 << 30])
def test_relay_parses_the_archive_however_it_is_cut(tar_format: int, piece: int) -> None:
    """The incremental reader on its own: any split of the stream gives the same events."""
    files = {
        "/d/" + "n" * 150: os.urandom(1000),  # a GNU long name, or a pax path record
        "/d/ünï\ncode": b"x" * 512,
        "/d/empty": b"",
        "/d/unasked": b"skipped",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        directory = tarfile.TarInfo("/d/dir")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o640, 1_700_000_000
            archive.addfile(info, io.BytesIO(content))
    data = buffer.getvalue()
    wanted = ["/d/dir", "/d/" + "n" * 150, "/d/ünï\ncode", "/d/empty", "/d/missing"]
    relay = bulk.TarRelay([bulk.Target(i, p, "") for i, p in enumerate(wanted)], 300)
    for start in range(0, len(data), piece):
        relay.feed(data[start : start + piece])
    relay.finish({"/d/missing": "/d/missing: Cannot stat: No such file or directory"})
    batches = relay.take()
    assert all(sum(len(e.data) for e in b if isinstance(e, bulk.BulkChunk)) <= 300 for b in batches)
    events = [event for batch in batches for event in batch]

    errors = {e.index: e for e in events if isinstance(e, bulk.BulkError)}
    assert errors[0].code == grpc.StatusCode.INVALID_ARGUMENT  # a directory
    assert errors[4].code == grpc.StatusCode.NOT_FOUND
    assert set(errors) == {0, 4}
    for index in (1, 2, 3):
        content = files[wanted[index]]
        own = [e for e in events if e.index == index]
        header, *chunks, end = own
        assert isinstance(header, bulk.BulkHeader) and isinstance(end, bulk.BulkEnd)
        assert (header.size, header.mode, header.mtime) == (len(content), 0o100640, 1_700_000_000)
        assert b"".join(c.data for c in chunks if isinstance(c, bulk.BulkChunk)) == content
        assert end.sha256 == hashlib.sha256(content).hexdigest()
