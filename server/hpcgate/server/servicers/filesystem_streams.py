"""Filesystem RPCs that move file contents: small download/upload, streams, bulk.

The Filesystem servicer inherits these methods. Each one validates the
request, calls one domain function of :mod:`hpcgate.server.filesystem.content`
or :mod:`hpcgate.server.filesystem.bulk` over the caller's pooled SSH
connection, and maps the result to messages.
"""

from __future__ import annotations

import asyncio
import posixpath
from asyncio import Task
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from google.api import httpbody_pb2

from hpcgate.server.errors import ServiceError, invalid_argument
from hpcgate.server.filesystem import bulk, content
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.errors import grpc_code, rich_status
from hpcgate.server.runtime import Runtime
from hpcgate.server.servicers.call import Call, begin
from hpcgate.server.servicers.convert import timestamp
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc

OCTET_STREAM = "application/octet-stream"
# Files in one DownloadMany call at most (the edge gathers up to this many),
# and file bytes in one of its replies at most (unless one file is larger).
MAX_DOWNLOAD_MANY = 1000
REPLY_BYTES = 1024 * 1024
T = TypeVar("T")


async def _download(call: Call, path_text: str) -> httpbody_pb2.HttpBody:
    """One file's bytes for Download (and each file of DownloadMany), within the size limit."""
    path = call.path("path", path_text)
    limit = call.config.data_operation.max_ops_file_size
    confine = call.confine({path: "path"})
    data = await call.system.reads.download(call.user, path, call.deadline, confine, limit)
    return httpbody_pb2.HttpBody(content_type=OCTET_STREAM, data=data)


def _bulk_entry(event: bulk.BulkEvent) -> filesystem_pb2.BulkDownloadEntry:
    entry = filesystem_pb2.BulkDownloadEntry(file_index=event.index)
    if isinstance(event, bulk.BulkChunk):
        entry.chunk = event.data
    elif isinstance(event, bulk.BulkHeader):
        entry.header.CopyFrom(
            filesystem_pb2.BulkDownloadFileHeader(
                path=event.path,
                relative_path=event.relative_path,
                size=event.size,
                mode=event.mode,
                mtime=timestamp(event.mtime),
            )
        )
    elif isinstance(event, bulk.BulkEnd):
        entry.end.sha256 = event.sha256
    else:
        entry.error.CopyFrom(
            filesystem_pb2.BulkDownloadFileError(
                path=event.path, code=grpc_code(event.code).value[0], message=event.message
            )
        )
    return entry


async def _as_they_land(tasks: list[Task[T]]) -> AsyncIterator[list[T]]:
    """The results of ``tasks``, in lists of those that finished since the last list."""
    landed: list[Task[T]] = []
    wake = asyncio.Event()

    def land(task: Task[T]) -> None:
        landed.append(task)
        wake.set()

    for task in tasks:
        task.add_done_callback(land)
    left = len(tasks)
    while left:
        await wake.wait()
        wake.clear()
        done = landed.copy()
        landed.clear()
        left -= len(done)
        yield [task.result() for task in done]


def _packed(
    answers: list[filesystem_pb2.DownloadManyResponse], per_reply: int
) -> Iterator[filesystem_pb2.DownloadManyResponse]:
    """``answers`` as DownloadMany's replies: each alone (``per_reply`` 1), or
    together in ``files``, ``per_reply`` and :data:`REPLY_BYTES` at most (a
    larger file alone)."""
    if per_reply == 1:
        yield from answers
        return
    files: list[filesystem_pb2.DownloadManyResponse] = []
    size = 0
    for answer in answers:
        weight = len(answer.body.data)
        if files and (len(files) >= per_reply or size + weight > REPLY_BYTES):
            yield filesystem_pb2.DownloadManyResponse(files=files)
            files, size = [], 0
        files.append(answer)
        size += weight
    if files:
        yield filesystem_pb2.DownloadManyResponse(files=files)


async def _upload_parts(
    requests: AsyncIterator[filesystem_pb2.UploadStreamRequest],
) -> AsyncIterator[bytes | content.Digest]:
    """The data chunks and the trailer's digest of an UploadStream, after its header."""
    async for message in requests:
        kind = message.WhichOneof("payload")
        if kind == "chunk":
            yield message.chunk
        elif kind == "trailer":
            yield content.Digest(message.trailer.sha256)
        else:
            raise invalid_argument(
                "header", "only the first message may carry a header", "UPLOAD_MALFORMED"
            )


class FilesystemStreams(filesystem_pb2_grpc.FilesystemServicer):
    """Download, Upload, DownloadStream, UploadStream and BulkDownload."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def Download(
        self, request: filesystem_pb2.DownloadRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The raw bytes of a file up to ``max_ops_file_size``; larger is RESOURCE_EXHAUSTED."""
        call = begin(self._runtime, request.system_name, context)
        return await _download(call, request.path)

    async def DownloadMany(
        self, request: filesystem_pb2.DownloadManyRequest, context: Context
    ) -> AsyncIterator[filesystem_pb2.DownloadManyResponse]:
        """Download's answer for each of ``paths``, as each is read.

        The files are read together, each by Download's own code (so small
        files of one call ride in the user's read batches); a file's failure
        is its answer's ``error``, and the other files go on. The answers
        that landed since the last reply go out together, up to
        ``max_files_per_reply`` to a reply (:func:`_packed`).
        """
        call = begin(self._runtime, request.system_name, context)
        if len(request.paths) > MAX_DOWNLOAD_MANY:
            raise invalid_argument("paths", f"at most {MAX_DOWNLOAD_MANY} files in one call")

        async def one(index: int, path: str) -> filesystem_pb2.DownloadManyResponse:
            try:
                body = await _download(call, path)
            except ServiceError as error:
                return filesystem_pb2.DownloadManyResponse(index=index, error=rich_status(error))
            return filesystem_pb2.DownloadManyResponse(index=index, body=body)

        reads = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(request.paths)]
        per_reply = max(1, request.max_files_per_reply)
        try:
            async for answers in _as_they_land(reads):
                for reply in _packed(answers, per_reply):
                    yield reply
        finally:
            for read in reads:  # the call ended early (cancelled): stop the reads left
                read.cancel()

    async def Upload(
        self, request: filesystem_pb2.UploadRequest, context: Context
    ) -> filesystem_pb2.UploadResponse:
        """Write the uploaded file into directory ``path``, replacing a file of that name."""
        call = begin(self._runtime, request.system_name, context)
        config = call.system.config
        directory = call.path("path", request.path)
        name = content.check_filename("file.filename", request.file.filename)
        target = call.path("path", posixpath.join(directory, name))
        limit = config.data_operation.max_ops_file_size
        async with call.system.pool.sftp(call.user, call.deadline) as sftp:
            confine = call.confine({target: "path"})
            await content.write_small(sftp, confine, target, request.file.content, limit)
        return filesystem_pb2.UploadResponse()

    async def DownloadStream(
        self, request: filesystem_pb2.DownloadStreamRequest, context: Context
    ) -> AsyncIterator[filesystem_pb2.DownloadStreamResponse]:
        """Header, data chunks, trailer with the SHA-256 of the data sent."""
        call = begin(self._runtime, request.system_name, context)
        path = call.path("path", request.path)
        if request.offset < 0:
            raise invalid_argument("offset", "must not be negative")
        length = request.length if request.HasField("length") else None
        if length is not None and length < 0:
            raise invalid_argument("length", "must not be negative")
        chunk = content.chunk_size(request.chunk_size)
        confine = call.confine({path: "path"})
        span = (request.offset, length)
        items = call.system.reads.stream(call.user, path, call.deadline, confine, span, chunk)
        async for item in items:
            if isinstance(item, bytes):
                yield filesystem_pb2.DownloadStreamResponse(chunk=item)
            elif isinstance(item, content.StreamHeader):
                header = filesystem_pb2.DownloadStreamHeader(
                    size=item.info.size,
                    mode=item.info.mode,
                    mtime=timestamp(item.info.mtime),
                    offset=item.offset,
                    length=item.length,
                )
                yield filesystem_pb2.DownloadStreamResponse(header=header)
            else:
                trailer = filesystem_pb2.DownloadStreamTrailer(sha256=item.sha256, size=item.size)
                yield filesystem_pb2.DownloadStreamResponse(trailer=trailer)

    async def UploadStream(
        self,
        request_iterator: AsyncIterator[filesystem_pb2.UploadStreamRequest],
        context: Context,
    ) -> filesystem_pb2.UploadStreamResponse:
        """Write the streamed file beside its target; rename it there if size and digest match."""
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise invalid_argument(
                "header", "the first message must carry the header", "UPLOAD_MALFORMED"
            )
        header = first.header
        call = begin(self._runtime, header.system_name, context)
        path = call.path("header.path", header.path)
        size = header.size if header.HasField("size") else None
        if size is not None and size < 0:
            raise invalid_argument("header.size", "must not be negative")
        mode = header.mode if header.HasField("mode") else None
        if mode is not None and mode > 0o7777:
            raise invalid_argument("header.mode", "only permission bits (at most 0o7777)")
        async with call.system.pool.sftp(call.user, call.deadline) as sftp:
            written = await content.stream_write(
                sftp,
                call.confine({path: "header.path"}),
                path,
                _upload_parts(request_iterator),
                size=size,
                overwrite=header.overwrite,
                mode=mode,
            )
        return filesystem_pb2.UploadStreamResponse(
            path=written.path, size=written.size, sha256=written.sha256
        )

    async def BulkDownload(
        self, request: filesystem_pb2.BulkDownloadRequest, context: Context
    ) -> AsyncIterator[filesystem_pb2.BulkDownloadResponse]:
        """Many files in one stream, relayed from one remote tar; unreadable ones as errors."""
        call = begin(self._runtime, request.system_name, context)
        selection: bulk.NamedFiles | bulk.Tree
        kind = request.WhichOneof("selection")
        if kind == "files":
            selection = bulk.NamedFiles(
                [call.path(f"files.paths[{i}]", path) for i, path in enumerate(request.files.paths)]
            )
        elif kind == "tree":
            tree = request.tree
            selection = bulk.Tree(
                call.path("tree.root", tree.root),
                recursive=tree.recursive,
                glob=tree.glob,
                show_hidden=tree.show_hidden,
            )
        else:
            raise invalid_argument("selection", "give either files or tree")
        chunk = content.chunk_size(request.chunk_size)
        if isinstance(selection, bulk.Tree):
            fields = {selection.root: "tree.root"}
        else:
            fields = {path: f"files.paths[{i}]" for i, path in enumerate(selection.paths)}
        confine = call.confine(fields)
        batches = bulk.bulk_download(
            call.system.pool, call.user, call.deadline, selection, chunk, confine
        )
        async for batch in batches:
            yield filesystem_pb2.BulkDownloadResponse(entries=[_bulk_entry(e) for e in batch])
