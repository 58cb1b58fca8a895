"""Batched small-file reads (filesystem/smallreads.py) against the real cluster.

One service is configured to batch every download (no direct reads), and
its answers are compared with those of a service that reads each file over
SFTP: every kind of file and every error must come out the
same, with the batches' tar doing the work where it can.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import stat
from collections.abc import AsyncIterator

import asyncssh
import grpc
import pytest
from prometheus_client import REGISTRY

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

# max_ops_file_size of the batching service: above a batch's file size limit.
LIMIT = 200_000
Outcome = tuple[str, bytes | str]


async def _service(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, burst: int, rate: float
) -> AsyncIterator[LiveService]:
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("reads") / "jwks.json"
    issuer.write_jwks(jwks)
    limits = {"max_ops_file_size": LIMIT, "direct_read_burst": burst, "direct_read_rate": rate}
    settings = live_settings(cluster, jwks, data_operation=limits)
    async for service in start_service(settings):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


@pytest.fixture(scope="module")
async def batching(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """A service that gathers every download into batches (burst and rate 0)."""
    async for service in _service(cluster, tmp_path_factory, 0, 0):
        yield service


@pytest.fixture(scope="module")
async def direct(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """The same service, but reading every file over SFTP (a burst no test reaches)."""
    async for service in _service(cluster, tmp_path_factory, 1_000_000, 1e9):
        yield service


def _reads(route: str) -> float:
    labels = {"system": SYSTEM, "route": route}
    return REGISTRY.get_sample_value("hpcgate_filesystem_small_reads_total", labels) or 0.0


async def _make_files(conn: asyncssh.SSHClientConnection, directory: str) -> dict[str, bytes]:
    """Files of every kind in ``directory``; returns the regular ones' contents by path."""
    contents = {
        f"{directory}/plain": b"plain\n",
        f"{directory}/empty": b"",
        f"{directory}/it's $(odd) \n name": b"odd name",
        f"{directory}/big": bytes(range(256)) * 400,  # 100 KiB: beyond a batch's files
        f"{directory}/too-big": b"x" * (LIMIT + 1),
        f"{directory}/secret": b"nobody may read this",
        f"{directory}/ü-{'n' * 150}": b"long name",
    }
    async with conn.start_sftp_client() as sftp:
        for path, data in contents.items():
            async with sftp.open(path, "wb") as file:
                await file.write(data)
        await sftp.chmod(f"{directory}/secret", 0)
        await sftp.symlink(f"{directory}/plain", f"{directory}/link")
        await sftp.mkdir(f"{directory}/subdir")
    await conn.run(shlex.join(["mkfifo", "--", f"{directory}/fifo"]), check=True)
    contents[f"{directory}/link"] = contents[f"{directory}/plain"]
    return contents


async def _download(live: LiveService, path: str) -> Outcome:
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    request = filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=path)
    try:
        reply = await stub.Download(request, metadata=live.metadata("alice"), timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details() or ""
    return "OK", reply.data


async def _stream(live: LiveService, path: str, offset: int, length: int | None) -> Outcome:
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    request = filesystem_pb2.DownloadStreamRequest(
        system_name=SYSTEM, path=path, offset=offset, length=length, chunk_size=1024
    )
    parts: list[filesystem_pb2.DownloadStreamResponse] = []
    try:
        async for reply in stub.DownloadStream(request, metadata=live.metadata("alice")):
            parts.append(reply)
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details() or ""
    header, trailer = parts[0].header, parts[-1].trailer
    data = b"".join(part.chunk for part in parts[1:-1])
    assert trailer.sha256 == hashlib.sha256(data).hexdigest()
    assert (trailer.size, header.length) == (len(data), len(data))
    assert stat.S_ISREG(header.mode)
    described = f"size={header.size} mode={header.mode:o} mtime={header.mtime.seconds}"
    return described, data


async def test_batched_downloads_answer_exactly_as_direct_ones(
    direct: LiveService, batching: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    async with cluster.connect("alice") as conn:
        contents = await _make_files(conn, remote_dir)
    names = [*contents, "missing", "subdir", "fifo"]
    paths = [p if p.startswith("/") else f"{remote_dir}/{p}" for p in names]
    before = {route: _reads(route) for route in ("direct", "batched", "fallback")}

    # All at once, three times over, so that the batches hold many files.
    batched = await asyncio.gather(*(_download(batching, p) for p in paths * 3))
    reference = [await _download(direct, p) for p in paths]

    assert batched == reference * 3
    outcomes = dict(zip(paths, reference, strict=True))
    for path, data in contents.items():
        if path.endswith(("/secret", "/too-big")):
            continue
        assert outcomes[path] == ("OK", data), path
    assert outcomes[f"{remote_dir}/secret"][0] == "PERMISSION_DENIED"
    assert outcomes[f"{remote_dir}/too-big"][0] == "RESOURCE_EXHAUSTED"
    assert outcomes[f"{remote_dir}/missing"][0] == "NOT_FOUND"
    assert outcomes[f"{remote_dir}/fifo"][0] == "INVALID_ARGUMENT"
    # The batching service batched everything; only what a batch cannot
    # carry (errors, a file beyond its size limit) fell back to SFTP.
    assert _reads("direct") - before["direct"] == len(paths)  # the direct service's
    carried = [p for p in contents if not p.endswith(("big", "/secret"))]
    assert len(carried) == 5
    assert _reads("batched") - before["batched"] == 3 * len(carried)
    assert _reads("fallback") - before["fallback"] == 3 * (len(paths) - len(carried))


async def test_batched_stream_ranges_match_direct_ones(
    direct: LiveService, batching: LiveService, cluster: Cluster, remote_dir: str
) -> None:
    data = bytes(range(256)) * 20
    path = f"{remote_dir}/ranged"
    async with (
        cluster.connect("alice") as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "wb") as file,
    ):
        await file.write(data)
    ranges = [(0, None), (100, 1000), (5000, None), (len(data), None), (len(data) + 1, None)]
    batched = await asyncio.gather(*(_stream(batching, path, o, n) for o, n in ranges))
    reference = [await _stream(direct, path, o, n) for o, n in ranges]
    assert batched == reference
    assert batched[1][1] == data[100:1100]
    assert batched[-1][0] == "OUT_OF_RANGE"
