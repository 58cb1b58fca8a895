"""File transfer over the streams: chunked, hashed, with progress callbacks.

Pure request builders and response consumers, shared by ``Client`` and
``AsyncClient``: uploads send a header, chunks and a trailer with the
SHA-256; downloads write to a temporary name, check the trailer's SHA-256
and only then rename; bulk downloads reassemble many files from one stream
of interleaved entries and check each file's digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from hpcgate.client.errors import IntegrityError
from hpcgate.v1 import filesystem_pb2

F = filesystem_pb2
CHUNK = 1024 * 1024
# progress(done_bytes, total_bytes or None)
Progress = Callable[[int, int | None], None]


def upload_requests(
    local: Path,
    system: str,
    remote: str,
    *,
    overwrite: bool,
    progress: Progress | None,
    chunk_size: int = CHUNK,
) -> Iterator[filesystem_pb2.UploadStreamRequest]:
    """The UploadStream messages for ``local``: header, chunks, SHA-256 trailer."""
    size = local.stat().st_size
    header = F.UploadStreamHeader(system_name=system, path=remote, size=size, overwrite=overwrite)
    yield F.UploadStreamRequest(header=header)
    digest = hashlib.sha256()
    done = 0
    if progress:
        progress(0, size)
    with local.open("rb") as source:
        while chunk := source.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            yield F.UploadStreamRequest(chunk=chunk)
            if progress:
                progress(done, size)
    yield F.UploadStreamRequest(trailer=F.UploadStreamTrailer(sha256=digest.hexdigest()))


class StreamWriter:
    """Writes a DownloadStream into ``local`` (via a temporary file) and checks it."""

    def __init__(self, local: Path, progress: Progress | None) -> None:
        self.local = local
        self._partial = local.with_name(f".{local.name}.partial")
        self._out: IO[bytes] = self._partial.open("wb")
        self._digest = hashlib.sha256()
        self._progress = progress
        self.size: int | None = None
        self.done = 0

    def feed(self, message: filesystem_pb2.DownloadStreamResponse) -> None:
        """Take one message of the stream."""
        kind = message.WhichOneof("payload")
        if kind == "header":
            self.size = message.header.length or message.header.size
            if self._progress:
                self._progress(0, self.size)
        elif kind == "chunk":
            self._out.write(message.chunk)
            self._digest.update(message.chunk)
            self.done += len(message.chunk)
            if self._progress:
                self._progress(self.done, self.size)
        elif kind == "trailer":
            self._out.close()
            if message.trailer.sha256 != self._digest.hexdigest():
                self._partial.unlink(missing_ok=True)
                raise IntegrityError(f"{self.local}: SHA-256 differs from the server's")
            os.replace(self._partial, self.local)

    def abort(self) -> None:
        """Drop the partial file after a failed stream."""
        self._out.close()
        self._partial.unlink(missing_ok=True)

    def finish(self) -> Path:
        """The written file; a stream that ended without its trailer is an error."""
        if not self._out.closed:
            self.abort()
            raise IntegrityError(f"{self.local}: the stream ended without its SHA-256 trailer")
        return self.local


@dataclass
class BulkResult:
    """What ``download_many`` wrote, and the files the server could not send."""

    files: list[Path] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class BulkWriter:
    """Reassembles a BulkDownload stream into files under ``into``."""

    def __init__(self, into: Path, progress: Progress | None, total: int | None = None) -> None:
        self.into = into
        self.result = BulkResult()
        self._open: dict[int, tuple[Path, IO[bytes], hashlib._Hash]] = {}
        self._progress = progress
        self._total = total
        self.done = 0

    def _target(self, header: filesystem_pb2.BulkDownloadFileHeader) -> Path:
        relative = PurePosixPath(header.relative_path or PurePosixPath(header.path).name)
        if relative.is_absolute() or ".." in relative.parts:
            raise IntegrityError(f"refusing to write outside {self.into}: {relative}")
        target = self.into.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def feed(self, response: filesystem_pb2.BulkDownloadResponse) -> None:
        """Take one message: its entries may belong to several files."""
        for entry in response.entries:
            kind = entry.WhichOneof("kind")
            if kind == "header":
                target = self._target(entry.header)
                self._open[entry.file_index] = (target, target.open("wb"), hashlib.sha256())
            elif kind == "chunk":
                _, out, digest = self._open[entry.file_index]
                out.write(entry.chunk)
                digest.update(entry.chunk)
                self.done += len(entry.chunk)
                if self._progress:
                    self._progress(self.done, self._total)
            elif kind == "end":
                target, out, digest = self._open.pop(entry.file_index)
                out.close()
                if digest.hexdigest() != entry.end.sha256:
                    raise IntegrityError(f"{target}: SHA-256 differs from the server's")
                self.result.files.append(target)
            elif kind == "error":
                self.result.errors[entry.error.path] = entry.error.message
