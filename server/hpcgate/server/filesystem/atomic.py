"""Writes that are never half done: a temporary file beside the target, renamed onto it.

:class:`AtomicWrite` writes into a temporary file beside the target (same
directory, so the same filesystem) and renames it onto the target only once
everything arrived and checked out; on any failure or cancellation the
temporary file is removed and the target is untouched. A temporary file a
dead server left behind is swept later (:mod:`.sweep`), by its name
(:func:`temp_name`).

Given a :class:`~.confine.Confine`, the temporary file is opened by
:func:`~.handles.verified_open`: its handle must lead to the resolved
directory asked for, so the bytes, written through that handle, land
inside. The final rename is by path and cannot carry them out: it moves
whatever entry the temporary *name* reaches now. Were a directory on the
path swapped for a link after the open, that name reaches a place where the
file written is not (it stays in the directory its handle reached), so the
rename fails or moves only what someone else put there, under a random
name, within a directory the caller may write anyway; the written bytes
never leave the filesystems.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import stat
from collections import deque
from types import TracebackType

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import sftp_error
from hpcgate.server.filesystem.handles import close, verified_open

# Longest file name (one path component) Linux filesystems take, in bytes.
NAME_MAX = 255
# Received bytes are written in blocks of this size (one pipelined SFTP
# write each); at most this many blocks are in flight while more arrive.
WRITE_BLOCK = 1024 * 1024
WRITES_IN_FLIGHT = 4


def temp_name(target: str) -> str:
    """A fresh hidden name beside ``target`` for its upload in progress.

    ``.<name>.hpcgate-<random>.part``, with the name shortened (on a UTF-8
    character boundary) so that the whole stays within :data:`NAME_MAX`.
    """
    directory, name = posixpath.split(target)
    suffix = f".hpcgate-{secrets.token_hex(6)}.part"
    room = NAME_MAX - 1 - len(suffix)
    stem = name.encode()[:room].decode(errors="ignore")
    return posixpath.join(directory, f".{stem}{suffix}")


async def _lstat(sftp: asyncssh.SFTPClient, path: str) -> asyncssh.SFTPAttrs | None:
    """The attributes of ``path`` itself, or None if it does not exist."""
    try:
        return await sftp.lstat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    except asyncssh.SFTPError as error:
        raise sftp_error(error, path) from error


def _exists(path: str) -> ServiceError:
    return sftp_error(asyncssh.SFTPFileAlreadyExists("File exists"), path)


class AtomicWrite:
    """A file written under a temporary name beside ``target`` and renamed onto it.

    Use as ``async with AtomicWrite(...) as out: await out.write(...); await
    out.commit()``. Leaving the block without :meth:`commit` (an error, a
    cancellation) removes the temporary file, shielded from cancellation so
    that the cleanup itself is not cut short.

    ``overwrite`` replaces an existing target (POSIX rename); without it an
    existing target is ALREADY_EXISTS, checked up front and again,
    atomically, at the rename (SFTP's plain rename never replaces a file).
    ``mode`` sets the permission bits; by default a replaced file keeps its
    bits and a new one gets the user's umask default. ``size``, when known,
    is checked against the free space of the target's filesystem up front.
    ``shown`` is the target's name in error messages (default: ``target``).
    """

    def __init__(
        self,
        sftp: asyncssh.SFTPClient,
        target: str,
        *,
        overwrite: bool = False,
        mode: int | None = None,
        size: int | None = None,
        shown: str | None = None,
        confine: Confine | None = None,
    ) -> None:
        self._sftp = sftp
        # With it, the temporary file's handle must lead where it was asked to.
        self._confine = confine
        self.target = target
        # The name errors give: the caller's path, not the resolved one.
        self.shown = shown or target
        self._overwrite = overwrite
        self._mode = mode
        self._size = size
        self.temp = temp_name(target)
        self._file: asyncssh.SFTPClientFile | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._offset = 0
        self._writes: deque[asyncio.Future[int]] = deque()
        self._committed = False

    async def __aenter__(self) -> AtomicWrite:
        existing = await _lstat(self._sftp, self.target)
        if existing is not None:
            if stat.S_ISDIR(existing.permissions or 0):
                raise sftp_error(asyncssh.SFTPFileIsADirectory("Is a directory"), self.shown)
            if not self._overwrite:
                raise _exists(self.shown)
        await self._check_space()
        mode = self._mode
        if mode is None and existing is not None and stat.S_ISREG(existing.permissions or 0):
            mode = stat.S_IMODE(existing.permissions or 0)
        attrs = asyncssh.SFTPAttrs(permissions=mode) if mode is not None else asyncssh.SFTPAttrs()
        try:
            if self._confine is None:
                self._file = await self._sftp.open(self.temp, "xb", attrs)
            else:
                self._file, self._fd = await verified_open(
                    self._sftp, self._confine, self.temp, self.shown, "xb", attrs
                )
            if mode is not None:
                await self._file.chmod(mode)  # open()'s mode went through the umask
        except asyncssh.SFTPError as error:
            await self._abandon()
            # The message names the target: the temporary name means nothing to the caller.
            raise sftp_error(error, self.shown) from error
        except BaseException:
            await self._abandon()  # cancelled: the open may have created the file already
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._committed:
            await self._abandon()

    async def _abandon(self) -> None:
        """Run :meth:`_discard` to its end even if the caller is cancelled meanwhile."""
        await asyncio.shield(asyncio.ensure_future(self._discard()))

    async def _check_space(self) -> None:
        """RESOURCE_EXHAUSTED now if ``size`` bytes cannot fit (best effort)."""
        if not self._size:
            return
        directory = posixpath.dirname(self.target)
        try:
            vfs = await self._sftp.statvfs(directory)
        except asyncssh.SFTPError:
            return  # no statvfs extension, or not allowed: the write will tell
        free = vfs.bavail * vfs.frsize
        if vfs.blocks and self._size > free:
            raise ServiceError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"{self.shown}: No space left on device ({self._size} bytes announced,"
                f" {free} free)",
                "NO_SPACE",
                metadata={"path": self.shown},
            )

    async def write(self, data: bytes) -> None:
        """Append ``data``; blocks are written in the background, a few at a time."""
        self._buffer += data
        if len(self._buffer) >= WRITE_BLOCK:
            await self._flush()

    async def _flush(self) -> None:
        """Send the buffer as one write; wait while too many writes are in flight."""
        assert self._file is not None
        if self._buffer:
            block = bytes(self._buffer)
            self._buffer.clear()
            self._writes.append(asyncio.ensure_future(self._file.write(block, self._offset)))
            self._offset += len(block)
        while len(self._writes) > WRITES_IN_FLIGHT:
            await self._wait_oldest()

    async def _wait_oldest(self) -> None:
        """Wait for the oldest write; it stays listed until done, so _discard sees it."""
        try:
            await self._writes[0]
        except asyncssh.SFTPError as error:
            raise sftp_error(error, self.shown) from error
        self._writes.popleft()

    async def commit(self) -> None:
        """Finish the writes, close the file and rename it onto the target."""
        assert self._file is not None
        await self._flush()
        while self._writes:
            await self._wait_oldest()
        file, self._file = self._file, None
        try:
            await self._close(file)
        except asyncssh.SFTPError as error:
            raise sftp_error(error, self.shown) from error
        try:
            if self._overwrite:
                await self._sftp.posix_rename(self.temp, self.target)
            else:
                await self._sftp.rename(self.temp, self.target)
        except asyncssh.SFTPError as error:
            raise await self._rename_error(error) from error
        self._committed = True

    async def _rename_error(self, error: asyncssh.SFTPError) -> ServiceError:
        """Why the rename failed, in the cluster's words where SFTP v3 only says "Failure"."""
        existing = await _lstat(self._sftp, self.target)
        if existing is not None and stat.S_ISDIR(existing.permissions or 0):
            return sftp_error(asyncssh.SFTPFileIsADirectory("Is a directory"), self.shown)
        if existing is not None and not self._overwrite:
            return _exists(self.shown)
        return sftp_error(error, self.shown)

    async def _discard(self) -> None:
        """Stop the writes, close and remove the temporary file; never raises."""
        while self._writes:
            pending = self._writes.popleft()
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncssh.Error, OSError):
                await pending
        file, self._file = self._file, None
        with contextlib.suppress(asyncssh.Error, OSError):
            if file is not None:
                await self._close(file)
            await self._sftp.remove(self.temp)

    async def _close(self, file: asyncssh.SFTPClientFile) -> None:
        """Close the temporary file, through the fd model if it was opened through it."""
        if self._fd is None:
            await file.close()
        else:
            await close(self._sftp, file, self._fd)
