"""Scenario 1: N files of 1 KB, all requested at once (the FirecREST workload).

Each way of fetching the files is timed from the first request until every
file's bytes are in memory; the content check against what was written
comes after the timer stops. The raw floors use one asyncssh connection as
alice, in this process: SFTP open/read/close per file (the baseline every
ratio is taken against), ``cat`` per file on exec channels (bounded by
sshd's MaxSessions), and one ``tar`` stream (timed until the archive is in
memory; unpacking it is part of the check).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shlex
import tarfile
from collections.abc import Awaitable, Callable, Sequence

import asyncssh
import httpx

from bench.context import Context
from bench.httpclients import CONNECTIONS, AiohttpClient, Answer, ClientPerConnection, Query
from bench.measure import Stopwatch, check_http, measure, unimplemented_is_not_available
from bench.model import Figure, WrongBytesError
from bench.remote import SMALL_SIZE, output, small_name, verify
from bench.stack import Metadata
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

SCENARIO = "small_files"
BASELINE = "SFTP floor"
REST = f"REST download (httpx, {CONNECTIONS} clients x 1 connection)"
REST_AIOHTTP = f"REST download (aiohttp, one session of {CONNECTIONS} connections)"
HTTP_FLOOR = f"REST client floor (httpx, {CONNECTIONS} clients, trivial HTTP server)"
AIOHTTP_FLOOR = f"REST client floor (aiohttp, {CONNECTIONS} connections, trivial HTTP server)"
Fetch = Callable[[list[str]], Awaitable[list[bytes]]]
GetAll = Callable[[str, list[Query]], Awaitable[Sequence[httpx.Response | Answer]]]


async def _sftp(sftp: asyncssh.SFTPClient, paths: list[str]) -> list[bytes]:
    async def one(path: str) -> bytes:
        async with sftp.open(path, "rb") as file:
            data: bytes = await file.read()
            return data

    return list(await asyncio.gather(*(one(path) for path in paths)))


async def _cat(conn: asyncssh.SSHClientConnection, paths: list[str], limit: int) -> list[bytes]:
    slots = asyncio.Semaphore(limit)

    async def one(path: str) -> bytes:
        async with slots:
            return await output(conn, f"cat -- {shlex.quote(path)}")

    return list(await asyncio.gather(*(one(path) for path in paths)))


async def _tar(conn: asyncssh.SSHClientConnection, directory: str, count: int) -> bytes:
    names = " ".join(shlex.quote(small_name(i)) for i in range(count))
    return await output(conn, f"tar -cf - -C {shlex.quote(directory)} -- {names}")


def _untar(archive: bytes, count: int) -> list[bytes]:
    """The members of ``archive`` in the order of the small files' indices."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            files[member.name] = extracted.read() if extracted else b""
    return [files.get(small_name(i), b"") for i in range(count)]


async def _download_stream(
    stub: filesystem_pb2_grpc.FilesystemAsyncStub, system: str, path: str, metadata: Metadata
) -> bytes:
    """One DownloadStream call, checked as the contract asks (header, data, trailer digest)."""
    request = filesystem_pb2.DownloadStreamRequest(system_name=system, path=path)
    header, trailer, chunks = None, None, list[bytes]()
    async for reply in stub.DownloadStream(request, metadata=metadata):
        kind = reply.WhichOneof("payload")
        if kind == "header" and header is None and not chunks:
            header = reply.header
        elif kind == "chunk" and header is not None and trailer is None:
            chunks.append(reply.chunk)
        elif kind == "trailer" and header is not None and trailer is None:
            trailer = reply.trailer
        else:
            raise WrongBytesError(f"DownloadStream {path}: unexpected {kind} message")
    data = b"".join(chunks)
    if trailer is None:
        raise WrongBytesError(f"DownloadStream {path}: stream ended without trailer")
    if trailer.size != len(data) or trailer.sha256 != hashlib.sha256(data).hexdigest():
        raise WrongBytesError(
            f"DownloadStream {path}: trailer digest or size differs from the data"
        )
    return data


class _Bulk:
    """Reassembles a BulkDownload stream into one bytes object per requested file."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.files: dict[int, bytearray] = {}
        self.sizes: dict[int, int] = {}
        self.done: set[int] = set()
        self.current: int | None = None

    def add(self, entry: filesystem_pb2.BulkDownloadEntry) -> None:
        kind, index = entry.WhichOneof("kind"), entry.file_index
        if kind == "header" and self.current is None and index not in self.files:
            self.current, self.files[index] = index, bytearray()
            self.sizes[index] = entry.header.size
        elif kind == "chunk" and index == self.current:
            self.files[index] += entry.chunk
        elif kind == "end" and index == self.current:
            data = bytes(self.files[index])
            if (
                len(data) != self.sizes[index]
                or entry.end.sha256 != hashlib.sha256(data).hexdigest()
            ):
                raise WrongBytesError(
                    f"BulkDownload file {index}: size or digest differs from data"
                )
            self.done.add(index)
            self.current = None
        elif kind == "error":
            raise WrongBytesError(f"BulkDownload {entry.error.path}: {entry.error.message}")
        else:
            raise WrongBytesError(f"BulkDownload file {index}: unexpected {kind} entry")

    def result(self) -> list[bytes]:
        if self.current is not None or len(self.done) != self.count:
            raise WrongBytesError(f"BulkDownload: {len(self.done)} of {self.count} files complete")
        return [bytes(self.files[i]) for i in range(self.count)]


async def _bulk(
    stub: filesystem_pb2_grpc.FilesystemAsyncStub, system: str, paths: list[str], metadata: Metadata
) -> list[bytes]:
    request = filesystem_pb2.BulkDownloadRequest(
        system_name=system, files=filesystem_pb2.BulkDownloadFiles(paths=paths)
    )
    bulk = _Bulk(len(paths))
    async for reply in stub.BulkDownload(request, metadata=metadata):
        for entry in reply.entries:
            bulk.add(entry)
    return bulk.result()


async def _rest(http: httpx.AsyncClient, system: str, path: str) -> bytes:
    response = await http.get(f"/filesystem/{system}/ops/download", params={"path": path})
    check_http(response)
    return response.content


def _contents(answers: Sequence[httpx.Response | Answer]) -> list[bytes]:
    """The bodies of 2xx answers; the first other one raises as :func:`check_http` says."""
    for answer in answers:
        if not answer.is_success:
            check_http(answer if isinstance(answer, httpx.Response) else answer.response())
    return [answer.content for answer in answers]


async def _rest_floor(get_all: GetAll, count: int) -> float:
    """A REST client's own cost: as many requests to a server that just answers 1 KB.

    The client lives as long as the scenario, as the REST figures' clients
    do, so that neither side pays for opening its connections inside the timer.
    """
    watch = Stopwatch()
    answers = await get_all("/bytes", [{"size": str(SMALL_SIZE)}] * count)
    elapsed = watch.elapsed()
    for data in _contents(answers):
        if len(data) != SMALL_SIZE:
            raise WrongBytesError(f"HTTP floor: {len(data)} bytes, not {SMALL_SIZE}")
    return elapsed


def _fetchers(ctx: Context, aio: AiohttpClient) -> dict[str, Fetch]:
    """The ways of fetching files through hpcgate, by figure name (``aio``: to the edge)."""
    stub = filesystem_pb2_grpc.FilesystemStub(ctx.channel)
    system, metadata = ctx.stack.system, ctx.stack.metadata()

    async def stream(paths: list[str]) -> list[bytes]:
        calls = (_download_stream(stub, system, path, metadata) for path in paths)
        return list(await asyncio.gather(*calls))

    async def unary(paths: list[str]) -> list[bytes]:
        requests = (filesystem_pb2.DownloadRequest(system_name=system, path=p) for p in paths)
        calls = (stub.Download(request, metadata=metadata) for request in requests)
        return [reply.data for reply in await asyncio.gather(*calls)]

    url = f"/filesystem/{system}/ops/download"

    async def rest(paths: list[str]) -> list[bytes]:
        return _contents(await ctx.rest.get_all(url, [{"path": path} for path in paths]))

    async def rest_aiohttp(paths: list[str]) -> list[bytes]:
        return _contents(await aio.get_all(url, [{"path": path} for path in paths]))

    async def rest_one_client(paths: list[str]) -> list[bytes]:
        return list(await asyncio.gather(*(_rest(ctx.http, system, path) for path in paths)))

    async def bulk(paths: list[str]) -> list[bytes]:
        return await _bulk(stub, system, paths, metadata)

    return {
        "gRPC DownloadStream (1 RPC/file)": stream,
        "gRPC Download (1 RPC/file)": unary,
        REST: rest,
        REST_AIOHTTP: rest_aiohttp,
        "REST download (httpx, one client)": rest_one_client,
        "gRPC BulkDownload (1 call)": bulk,
    }


async def _timed(fetch: Fetch, paths: list[str], name: str) -> float:
    """Fetch ``paths`` once under the timer, then check every byte."""
    with unimplemented_is_not_available():
        watch = Stopwatch()
        files = await fetch(paths)
        elapsed = watch.elapsed()
    verify(files, name)
    return elapsed


async def _floors(ctx: Context, floors: dict[str, GetAll], count: int) -> list[Figure]:
    paths, params = ctx.dataset.small_paths(count), {"n": count}

    def figure(name: str) -> Figure:
        return Figure(SCENARIO, name, "s", dict(params), baseline=BASELINE)

    async with (await ctx.ssh.get()).start_sftp_client() as sftp:

        async def sftp_fetch(paths: list[str]) -> list[bytes]:
            return await _sftp(sftp, paths)

        sftp_figure = Figure(SCENARIO, BASELINE, "s", dict(params))
        await measure(sftp_figure, ctx.plan, lambda: _timed(sftp_fetch, paths, BASELINE))

    async def cat_fetch(paths: list[str]) -> list[bytes]:
        return await _cat(await ctx.ssh.get(), paths, ctx.max_sessions)

    name = f"cat floor ({ctx.max_sessions} exec channels)"
    cat_figure = await measure(figure(name), ctx.plan, lambda: _timed(cat_fetch, paths, name))

    async def tar_once() -> float:
        watch = Stopwatch()
        archive = await _tar(await ctx.ssh.get(), ctx.dataset.small_dir, count)
        elapsed = watch.elapsed()
        verify(_untar(archive, count), "tar floor")
        return elapsed

    tar_figure = await measure(figure("tar floor (1 stream)"), ctx.plan, tar_once)
    figures = [sftp_figure, cat_figure, tar_figure]
    for name, get_all in floors.items():

        async def http_once(get_all: GetAll = get_all) -> float:
            return await _rest_floor(get_all, count)

        figures.append(await measure(figure(name), ctx.plan, http_once))
    return figures


async def run(ctx: Context) -> list[Figure]:
    """Every N: the three floors, then every hpcgate path, each checked byte for byte."""
    figures: list[Figure] = []
    async with (
        ClientPerConnection(ctx.stack.http_floor_url, {}, ctx.plan.timeout) as floor,
        AiohttpClient(ctx.stack.http_floor_url, {}, ctx.plan.timeout) as aio_floor,
        AiohttpClient(ctx.stack.rest_url, ctx.stack.headers(), ctx.plan.timeout) as aio,
    ):
        fetchers = _fetchers(ctx, aio)
        floors: dict[str, GetAll] = {HTTP_FLOOR: floor.get_all, AIOHTTP_FLOOR: aio_floor.get_all}
        for count in ctx.sizes:
            figures += await _floors(ctx, floors, count)
            paths = ctx.dataset.small_paths(count)
            for name, fetch in fetchers.items():
                figure = Figure(SCENARIO, name, "s", {"n": count}, baseline=BASELINE)

                async def once(
                    fetch: Fetch = fetch, name: str = name, paths: list[str] = paths
                ) -> float:
                    return await _timed(fetch, paths, name)

                figures.append(await measure(figure, ctx.plan, once))
    return figures
