"""Byte ranges of a file's text: ``head``, ``tail`` and ``view`` over SFTP.

Only the bytes needed are read: line boundaries are found by reading
chunks from the start (or from the right end), and then the range itself
is read once. The cuts are pure (given a ``read`` function), so they are
checked against GNU ``head`` and ``tail`` in the unit tests.
"""

from __future__ import annotations

import stat as statmod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument, invalid_in_words
from hpcgate.server.filesystem.handles import opened
from hpcgate.server.filesystem.remote import Remote

# Bytes read per request when scanning a file for line boundaries.
SCAN_CHUNK = 64 * 1024
# head and tail print this many lines when neither bytes nor lines is given.
DEFAULT_LINES = 10


@dataclass(frozen=True)
class FileContent:
    """A part of a file's text, with its position as FirecREST reports it."""

    content: str
    content_type: Literal["lines", "bytes"]
    start_position: int
    end_position: int


# Reads ``length`` bytes at ``offset`` (fewer at the end of the file).
ReadAt = Callable[[int, int], Awaitable[bytes]]


async def forward_cut(read: ReadAt, size: int, lines: int) -> int:
    """Offset just past the ``lines``-th newline (``size`` if there are fewer)."""
    if lines <= 0:
        return 0
    offset, seen = 0, 0
    while offset < size:
        chunk = await read(offset, min(SCAN_CHUNK, size - offset))
        if not chunk:
            break
        start = 0
        while (found := chunk.find(b"\n", start)) >= 0:
            seen += 1
            if seen == lines:
                return offset + found + 1
            start = found + 1
        offset += len(chunk)
    return size


async def backward_cut(read: ReadAt, size: int, lines: int) -> int:
    """Offset where the last ``lines`` lines start (0 if there are fewer).

    As in ``tail``, a newline that ends the file ends the last line rather
    than starting an empty one.
    """
    if lines <= 0:
        return size
    end = size
    if size and await read(size - 1, 1) == b"\n":
        end -= 1
    seen = 0
    while end > 0:
        start = max(0, end - SCAN_CHUNK)
        chunk = await read(start, end - start)
        position = len(chunk)
        while (found := chunk.rfind(b"\n", 0, position)) >= 0:
            seen += 1
            if seen == lines:
                return start + found + 1
            position = found
        end = start
    return 0


async def head_range(
    read: ReadAt, size: int, nbytes: int | None, lines: int | None, skip: bool
) -> tuple[int, int]:
    """The byte range ``head`` prints: the first N bytes/lines, or all but the last N."""
    if nbytes is not None:
        return 0, max(0, size - nbytes) if skip else min(nbytes, size)
    count = DEFAULT_LINES if lines is None else lines
    if skip:
        return 0, await backward_cut(read, size, count)
    return 0, await forward_cut(read, size, count)


async def tail_range(
    read: ReadAt, size: int, nbytes: int | None, lines: int | None, skip: bool
) -> tuple[int, int]:
    """The byte range ``tail`` prints: the last N bytes/lines, or from the N-th on (``skip``).

    With ``skip`` it is ``tail --bytes=+N`` / ``--lines=+N``, as FirecREST runs
    it: output starts at byte or line N, counted from 1 (so 0 and 1 are the
    whole file).
    """
    if nbytes is not None:
        return (min(max(nbytes - 1, 0), size) if skip else max(0, size - nbytes)), size
    count = DEFAULT_LINES if lines is None else lines
    if skip:
        return await forward_cut(read, size, max(count - 1, 0)), size
    return await backward_cut(read, size, count), size


def check_counts(nbytes: int | None, lines: int | None, skip: bool, skip_field: str) -> None:
    if nbytes is not None and lines is not None:
        # FirecREST's words, which name the fields themselves (so no "bytes: " before them).
        raise invalid_in_words("bytes", "Only one of `bytes` or `lines` can be specified.")
    for name, value in (("bytes", nbytes), ("lines", lines)):
        if value is not None and value < 0:
            raise invalid_argument(name, f"must not be negative, got {value}")
    if skip and nbytes is None and lines is None:
        raise invalid_argument(skip_field, "needs `bytes` or `lines`")


def _too_large(path: str, length: int, limit: int) -> ServiceError:
    return ServiceError(
        ErrorKind.RESOURCE_EXHAUSTED,
        f"{path}: the requested content is {length} bytes, more than the limit of {limit}",
        "FILE_TOO_LARGE",
        metadata={"path": path, "limit": str(limit)},
    )


def regular_size(attrs: asyncssh.SFTPAttrs, path: str) -> int:
    """The size of a regular file with ``attrs``; else an error about ``path``."""
    mode = attrs.permissions or 0
    if statmod.S_ISDIR(mode):
        raise ServiceError(ErrorKind.INVALID_ARGUMENT, f"{path}: Is a directory", "IS_A_DIRECTORY")
    if not statmod.S_ISREG(mode):
        raise ServiceError(
            ErrorKind.INVALID_ARGUMENT,
            f"{path}: not a regular file",
            "NOT_A_REGULAR_FILE",
        )
    return int(attrs.size or 0)


RangeOf = Callable[[ReadAt, int], Awaitable[tuple[int, int]]]


async def _read_range(remote: Remote, path: str, range_of: RangeOf, limit: int) -> tuple[str, int]:
    """The text of the byte range ``range_of`` picks in ``path`` (and the file size).

    The file opened is the resolved one, checked by its handle (see
    :mod:`.handles`). Fails with
    RESOURCE_EXHAUSTED when the range is longer than ``limit``.
    """
    async with remote.sftp(path) as client:
        real, attrs = await remote.confine.resolved_stat(client, path)
        size = regular_size(attrs, path)
        async with opened(client, remote.confine, real, path) as handle:

            async def read(offset: int, length: int) -> bytes:
                data: bytes = await handle.read(length, offset)
                return data

            start, end = await range_of(read, size)
            if end - start > limit:
                raise _too_large(path, end - start, limit)
            data = await read(start, end - start) if end > start else b""
    return data.decode("utf-8", "replace"), size


def _counted(nbytes: int | None, lines: int | None) -> tuple[Literal["lines", "bytes"], int]:
    """What head/tail counted and how many: bytes if asked, else lines (default 10)."""
    if nbytes is not None:
        return "bytes", nbytes
    return "lines", lines if lines is not None else DEFAULT_LINES


async def head(
    remote: Remote, path: str, nbytes: int | None, lines: int | None, skip: bool, limit: int
) -> FileContent:
    """``head``: the first bytes/lines of a file, or all but the last (``skip``)."""
    check_counts(nbytes, lines, skip, "skipTrailing")

    async def range_of(read: ReadAt, size: int) -> tuple[int, int]:
        return await head_range(read, size, nbytes, lines, skip)

    content, _ = await _read_range(remote, path, range_of, limit)
    unit, count = _counted(nbytes, lines)
    return FileContent(content, unit, 0, -count if skip else count)


async def tail(
    remote: Remote, path: str, nbytes: int | None, lines: int | None, skip: bool, limit: int
) -> FileContent:
    """``tail``: the last bytes/lines of a file, or all but the first (``skip``)."""
    check_counts(nbytes, lines, skip, "skipHeading")

    async def range_of(read: ReadAt, size: int) -> tuple[int, int]:
        return await tail_range(read, size, nbytes, lines, skip)

    content, _ = await _read_range(remote, path, range_of, limit)
    unit, count = _counted(nbytes, lines)
    return FileContent(content, unit, count if skip else -count, -1)


async def view(remote: Remote, path: str, offset: int | None, size: int | None, limit: int) -> str:
    """Up to ``size`` bytes (at most ``limit``) from ``offset`` on, as text.

    Without ``size``, the rest of the file, which must be at most ``limit``
    bytes (else RESOURCE_EXHAUSTED, as FirecREST's 413): a silently cut
    view would look like the whole file.
    """
    offset = 0 if offset is None else offset
    # FirecREST's words, which clients match on.
    if offset < 0:
        words = "`offset` value must be an integer value equal or greater than 0"
        raise invalid_in_words("offset", words)
    if size is not None and size <= 0:
        raise invalid_in_words("size", "`size` value must be an integer value greater than 0")
    if size is not None and size > limit:
        raise invalid_in_words("size", f"`size` value must be less than {limit} bytes")

    async def range_of(read: ReadAt, file_size: int) -> tuple[int, int]:
        start = min(offset, file_size)
        return start, file_size if size is None else min(file_size, start + size)

    content, _ = await _read_range(remote, path, range_of, limit)
    return content
