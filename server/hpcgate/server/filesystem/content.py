"""File contents to and from the cluster over SFTP, as the calling user.

SFTP moves bytes without a process per request, and asyncssh pipelines a
large read or write into parallel requests of the server's block size, so
every transfer here goes through the user's pooled SFTP channel:

* :func:`read_small` and :func:`write_small` serve FirecREST's ``ops``
  download and upload, bounded by ``max_ops_file_size``;
* :func:`stream_read` and :func:`stream_write` serve the gRPC streams, of
  any size, with an end-to-end SHA-256.

Nothing is ever half-written: uploads go through :class:`.atomic.AtomicWrite`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import stat
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.filesystem.atomic import NAME_MAX, AtomicWrite
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import sftp_error
from hpcgate.server.filesystem.handles import opened, read_block

# Data chunk of a stream when the client does not choose, and the bounds of
# a client's choice: chunks stay far below gRPC's 4 MiB message limit.
DEFAULT_CHUNK = 256 * 1024
MIN_CHUNK = 1024
MAX_CHUNK = 1024 * 1024
# Bytes asked of SFTP per read while streaming. asyncssh splits one read into
# parallel requests of the server's block size (255 KiB for OpenSSH), and the
# next window is requested while the current one is sent: the channel stays
# busy instead of paying a round trip per chunk.
READ_WINDOW = 2 * 1024 * 1024


@dataclass(frozen=True)
class FileInfo:
    """What a stream tells about its file up front."""

    # Size in bytes.
    size: int
    # st_mode: type and permission bits.
    mode: int
    # Time of last modification, seconds since the epoch.
    mtime: float


@dataclass(frozen=True)
class StreamHeader:
    """First item of :func:`stream_read`: the file, and the range that follows."""

    info: FileInfo
    offset: int
    length: int


@dataclass(frozen=True)
class StreamTrailer:
    """Last item of :func:`stream_read`: digest and count of the bytes sent."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Digest:
    """The client's SHA-256 (hex) of the bytes it sent: the end of an upload."""

    sha256: str


@dataclass(frozen=True)
class Written:
    """A committed upload."""

    path: str
    size: int
    sha256: str


# What a download stream yields: one header, data chunks, one trailer.
StreamItem = StreamHeader | bytes | StreamTrailer


def chunk_size(requested: int) -> int:
    """The data chunk size for a client's preference (0: the server's choice)."""
    if requested <= 0:
        return DEFAULT_CHUNK
    return max(MIN_CHUNK, min(requested, MAX_CHUNK))


def check_filename(field: str, name: str) -> str:
    """``name`` if it is one plain path component; INVALID_ARGUMENT naming ``field`` if not.

    Everything else is allowed (quotes, newlines, ``$(...)``, a leading
    ``-``, ...): names travel over SFTP as data, never through a shell.
    """
    if not name:
        raise invalid_argument(field, "must not be empty", "FILENAME_INVALID")
    if "\x00" in name:
        raise invalid_argument(field, "must not contain NUL", "FILENAME_INVALID")
    if "/" in name:
        raise invalid_argument(field, f"must not contain '/', got {name!r}", "FILENAME_INVALID")
    if name in (".", ".."):
        raise invalid_argument(field, f"must not be {name!r}", "FILENAME_INVALID")
    if len(name.encode()) > NAME_MAX:
        raise invalid_argument(field, f"longer than {NAME_MAX} bytes", "FILENAME_INVALID")
    return name


def _too_large(what: str, path: str, size: int, limit: int) -> ServiceError:
    """FirecREST's 413 for a direct ``what`` ("download", "upload") over the limit.

    The message is FirecREST's own; the figures go in the details.
    """
    return ServiceError(
        ErrorKind.RESOURCE_EXHAUSTED,
        f"File to {what} is too large.",
        "FILE_TOO_LARGE",
        metadata={"path": path, "size": str(size), "limit": str(limit)},
    )


def _data_loss(message: str, reason: str) -> ServiceError:
    return ServiceError(ErrorKind.DATA_LOSS, message, reason)


async def _stat_regular(
    sftp: asyncssh.SFTPClient, confine: Confine, path: str
) -> tuple[str, asyncssh.SFTPAttrs]:
    """Where ``path`` leads (which must be inside) and its attributes (a regular file's).

    Checked before opening: opening a FIFO would block the user's whole SFTP
    channel until a writer appears. The caller opens the resolved path and
    checks where the handle leads (:func:`.handles.opened`).
    """
    real, attrs = await confine.resolved_stat(sftp, path)
    mode = attrs.permissions or 0
    if stat.S_ISDIR(mode):
        raise sftp_error(asyncssh.SFTPFileIsADirectory("Is a directory"), path)
    if not stat.S_ISREG(mode):
        raise ServiceError(
            ErrorKind.INVALID_ARGUMENT,
            f"{path}: not a regular file",
            "NOT_A_REGULAR_FILE",
            metadata={"path": path},
        )
    return real, attrs


def _info(attrs: asyncssh.SFTPAttrs) -> FileInfo:
    mtime = float(attrs.mtime or 0) + (attrs.mtime_ns or 0) / 1e9
    return FileInfo(attrs.size or 0, attrs.permissions or 0, mtime)


def _one_request(sftp: asyncssh.SFTPClient, count: int) -> bool:
    """Whether ``count`` bytes fit in one read request of this server."""
    return count <= sftp.limits.max_read_len


async def read_small(sftp: asyncssh.SFTPClient, confine: Confine, path: str, limit: int) -> bytes:
    """The content of the regular file ``path``, at most ``limit`` bytes.

    A larger file is RESOURCE_EXHAUSTED. As in :func:`stream_read`, the size
    is fixed by the check: a file that grows meanwhile is read as it was
    measured, one that shrinks ends early. So a small file costs three
    round trips: realpath and stat, open and the check of its handle, one
    read and the close (:func:`.handles.read_block`); reading "up to the
    limit" instead would ask for ``limit`` bytes, which asyncssh splits into
    parallel requests of the server's block size, twenty and more for the
    default limit, nearly all of them past the end of the file.
    """
    real, attrs = await _stat_regular(sftp, confine, path)
    size = attrs.size or 0
    if size > limit:
        raise _too_large("download", path, size, limit)
    try:
        return b"".join([block async for block in _blocks(sftp, confine, real, path, 0, size)])
    except asyncssh.SFTPError as error:
        raise sftp_error(error, path) from error


async def write_small(
    sftp: asyncssh.SFTPClient, confine: Confine, target: str, content: bytes, limit: int
) -> None:
    """Write ``content`` to ``target`` atomically, replacing an existing file (as FirecREST).

    The file is written in the real directory of ``target``, which must be inside.
    """
    if len(content) > limit:
        raise _too_large("upload", target, len(content), limit)
    real = await confine.resolve_entry(sftp, target)
    async with AtomicWrite(sftp, real, overwrite=True, shown=target, confine=confine) as out:
        await out.write(content)
        await out.commit()


async def _windows(file: asyncssh.SFTPClientFile, offset: int, count: int) -> AsyncIterator[bytes]:
    """Up to ``count`` bytes from ``offset`` in blocks, the next one in flight while one is used.

    Stops early at end of file (the file shrank since it was measured). The
    read-ahead is a task, so it is only made when another block follows: a
    small file, read in one block, costs no task.
    """
    end = offset + count

    def read(position: int) -> Awaitable[bytes]:
        return file.read(min(READ_WINDOW, end - position), position)

    pending: asyncio.Future[bytes] | None = None
    try:
        while offset < end:
            block = await (pending if pending is not None else read(offset))
            pending = None
            if not block:
                return
            offset += len(block)
            if offset < end:
                pending = asyncio.ensure_future(read(offset))
            yield block
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncssh.Error, OSError):
                await pending


def _range(info: FileInfo, path: str, offset: int, length: int | None) -> int:
    """How many bytes a stream of ``path`` from ``offset`` sends; OUT_OF_RANGE past its end."""
    if offset > info.size:
        raise ServiceError(
            ErrorKind.OUT_OF_RANGE,
            f"offset: {offset} is beyond the end of {path} ({info.size} bytes)",
            "OFFSET_OUT_OF_RANGE",
            fields={"offset": f"beyond the end of the file ({info.size} bytes)"},
        )
    return info.size - offset if length is None else min(length, info.size - offset)


async def stream_read(
    sftp: asyncssh.SFTPClient,
    confine: Confine,
    path: str,
    offset: int,
    length: int | None,
    chunk: int,
) -> AsyncIterator[StreamItem]:
    """Stream ``length`` bytes (default: to the end) of ``path`` from ``offset``.

    Yields one :class:`StreamHeader`, data chunks of at most ``chunk``
    bytes, and one :class:`StreamTrailer` with the SHA-256 of the data.
    The length is fixed when the stream starts: a file that grows meanwhile
    is sent as it was measured, one that shrinks ends early (the trailer's
    size says how much was sent).
    """
    real, attrs = await _stat_regular(sftp, confine, path)
    info = _info(attrs)
    count = _range(info, path, offset, length)
    yield StreamHeader(info, offset, count)
    digest = hashlib.sha256()
    sent = 0
    try:
        async for block in _blocks(sftp, confine, real, path, offset, count):
            digest.update(block)
            for start in range(0, len(block), chunk):
                piece = block[start : start + chunk]
                sent += len(piece)
                yield piece
    except asyncssh.SFTPError as error:
        raise sftp_error(error, path) from error
    yield StreamTrailer(digest.hexdigest(), sent)


async def _blocks(
    sftp: asyncssh.SFTPClient, confine: Confine, real: str, path: str, offset: int, count: int
) -> AsyncIterator[bytes]:
    """``count`` bytes of ``real`` from ``offset``, opened and checked.

    What one request holds is one plain read with the close pipelined behind
    it (asyncssh's parallel reader would wrap even a single request in a task
    and ``asyncio.wait``, which for many small files costs more CPU than the
    request). Beyond that, windows read one ahead, each pipelined by
    asyncssh's parallel reader (``block_size=-1``) in the server's block size.
    """
    if _one_request(sftp, count):
        yield await read_block(sftp, confine, real, path, offset, count)
        return
    async with opened(sftp, confine, real, path, block_size=-1) as file:
        async for block in _windows(file, offset, count):
            yield block


def stream_held(
    info: FileInfo, data: bytes, path: str, offset: int, length: int | None, chunk: int
) -> Iterator[StreamItem]:
    """The items of :func:`stream_read` for a file already read whole (``data``)."""
    count = _range(info, path, offset, length)
    yield StreamHeader(info, offset, count)
    sent = data[offset : offset + count]
    for start in range(0, len(sent), chunk):
        yield sent[start : start + chunk]
    yield StreamTrailer(hashlib.sha256(sent).hexdigest(), len(sent))


async def stream_write(
    sftp: asyncssh.SFTPClient,
    confine: Confine,
    target: str,
    parts: AsyncIterator[bytes | Digest],
    *,
    size: int | None = None,
    overwrite: bool = False,
    mode: int | None = None,
) -> Written:
    """Write the data ``parts`` to ``target``; commit only if they match the final :class:`Digest`.

    ``parts`` is the client's stream: data, then exactly one Digest. A
    digest or size mismatch is DATA_LOSS, a stream without a digest (or with
    data after it) INVALID_ARGUMENT; in every such case, as on cancellation,
    no file is left behind.
    """
    digest = hashlib.sha256()
    received = 0
    claimed: str | None = None
    real = await confine.resolve_entry(sftp, target)
    async with AtomicWrite(
        sftp, real, overwrite=overwrite, mode=mode, size=size, shown=target, confine=confine
    ) as out:
        async for part in parts:
            if claimed is not None:
                raise invalid_argument("trailer", "must be the last message", "UPLOAD_MALFORMED")
            if isinstance(part, Digest):
                claimed = part.sha256.lower()
                continue
            received += len(part)
            if size is not None and received > size:
                raise _data_loss(
                    f"{target}: more bytes arrived than the announced size of {size}",
                    "SIZE_MISMATCH",
                )
            digest.update(part)
            await out.write(part)
        if claimed is None:
            raise invalid_argument(
                "trailer", "the stream ended without a trailer", "UPLOAD_INCOMPLETE"
            )
        if size is not None and received != size:
            raise _data_loss(
                f"{target}: {received} bytes arrived, {size} were announced", "SIZE_MISMATCH"
            )
        actual = digest.hexdigest()
        if claimed != actual:
            raise _data_loss(
                f"{target}: SHA-256 mismatch: the client sent {claimed!r}, the server"
                f" received data with {actual!r}; nothing was written",
                "DIGEST_MISMATCH",
            )
        await out.commit()
    return Written(target, received, actual)
