"""SFTP opens checked by where the handle leads, not by where the path led a moment before.

A read or upload resolves its path (``realpath``), checks it is inside,
then opens the resolved path; a directory on it swapped for a link in
between would make the open land elsewhere. So after the open, the file
the *handle* reached is named: sftp-server runs as the user, and an SFTP
``readlink`` of ``/proc/self/fd/N`` (answered by sftp-server itself, so
"self" is sftp-server) names what its fd N leads to, whatever path text led
there. The open is accepted only if that is exactly the resolved path it
was asked for; anything else is closed and refused.

Which fd the open gets is known before it is sent: Linux gives the lowest
free one. Per SFTP client an :class:`FdModel` keeps the fds sftp-server has
open (learned by one pipelined batch of readlinks of ``/proc/self/fd/0..K``)
and a lock held across each open's and each close's round trip (reads and
writes stay concurrent). So the readlink is pipelined right behind the open:
asyncssh writes a request the moment its coroutine first runs (no await
before ``send_packet``), ``gather`` runs its coroutines in order, and
sftp-server answers requests in order: no round trip is added.

Listings open directories through the same model and lock
(:mod:`.helddir`). A stale model (an fd opened behind its back, or a close
that failed) shows as a readlink
naming something other than the file: then the model is learned again and
the fds new since the open was sent are searched for the file. Demanding
equality with the resolved path (not merely "inside") is what makes a
stale model safe: an fd of another open never names the very file asked
for, since fds held before the open are excluded, every regular-file open
goes through here, and a listing opens directories only. A handle that
reached elsewhere is closed and refused: PATH_OUTSIDE_FILESYSTEMS if the
place it reached is outside, else PATH_CHANGED.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncssh

from hpcgate.server.filesystem.confine import Confine, path_changed

# How many fds one learning looks at (in one round trip); sftp-server itself
# holds 3 to 5, and each open handle one more.
_PROBE = 64


@dataclass
class FdModel:
    """The fds one sftp-server holds open, as far as this process knows."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    taken: set[int] | None = None

    async def learn(self, client: asyncssh.SFTPClient) -> dict[int, str]:
        """Which of fds 0..K sftp-server has open, and where each leads: one round trip."""
        found = await asyncio.gather(
            *(client.readlink(f"/proc/self/fd/{n}") for n in range(_PROBE)),
            return_exceptions=True,
        )
        targets = {n: where for n, where in enumerate(found) if isinstance(where, str)}
        self.taken = set(targets)
        return targets

    def next(self) -> int:
        """The fd the next open will get: the lowest free one."""
        return self.following(1)[0]

    def following(self, count: int) -> list[int]:
        """The fds the next ``count`` opens will get, in order: the lowest free ones."""
        assert self.taken is not None
        return sorted(set(range(len(self.taken) + count)) - self.taken)[:count]


_MODELS: weakref.WeakKeyDictionary[asyncssh.SFTPClient, FdModel] = weakref.WeakKeyDictionary()


def model_of(client: asyncssh.SFTPClient) -> FdModel:
    """The fd model of ``client``'s sftp-server (made on first use)."""
    model = _MODELS.get(client)
    if model is None:
        model = _MODELS[client] = FdModel()
    return model


async def _close(model: FdModel, file: asyncssh.SFTPClientFile, fd: int) -> None:
    """Close ``file`` (on ``fd``) in the model's order, so the next open's fd stays known."""
    async with model.lock:
        try:
            await file.close()
        except BaseException:
            model.taken = None  # did the close reach sftp-server? Learn again.
            raise
        if model.taken is not None:
            model.taken.discard(fd)


async def _open_held(
    client: asyncssh.SFTPClient,
    model: FdModel,
    real: str,
    mode: str,
    attrs: asyncssh.SFTPAttrs,
    block_size: int,
) -> tuple[asyncssh.SFTPClientFile, int | None, str | BaseException]:
    """Open ``real``, the readlink of its predicted fd pipelined behind it.

    Returns the file, its fd (None if no fd leads to ``real``) and what the
    predicted fd led to. On a miss the model is learned again and the fds
    new since the open was sent are searched for ``real``: a stale model
    costs a round trip, never a refusal (and a reopen would not do: an
    exclusive create cannot be repeated).
    """
    async with model.lock:
        if model.taken is None:
            await model.learn(client)
        assert model.taken is not None
        before = set(model.taken)
        fd = model.next()
        try:
            file, where = await asyncio.gather(
                client.open(real, mode, attrs, block_size=block_size),
                client.readlink(f"/proc/self/fd/{fd}"),
                return_exceptions=True,
            )
        except BaseException:
            model.taken = None  # cancelled: the open may have happened
            raise
        if isinstance(file, BaseException):
            raise file
        if where == real:
            model.taken.add(fd)
            return file, fd, where
        try:
            targets = await model.learn(client)
        except BaseException:
            model.taken = None
            raise
        found = [n for n, target in targets.items() if n not in before and target == real]
        return file, (found[0] if found else None), where


@contextlib.asynccontextmanager
async def opened(
    client: asyncssh.SFTPClient,
    confine: Confine,
    real: str,
    shown: str,
    mode: str = "rb",
    attrs: asyncssh.SFTPAttrs | None = None,
    block_size: int = -1,
) -> AsyncIterator[asyncssh.SFTPClientFile]:
    """``real`` (a resolved path, inside) opened, if the handle leads exactly there.

    A handle leading outside is PATH_OUTSIDE_FILESYSTEMS for ``shown``, one
    leading elsewhere inside PATH_CHANGED; either is closed first. SFTP errors of the open pass
    through for the caller to name.
    """
    file, fd = await verified_open(client, confine, real, shown, mode, attrs, block_size)
    try:
        yield file
    finally:
        await _close(model_of(client), file, fd)


async def verified_open(
    client: asyncssh.SFTPClient,
    confine: Confine,
    real: str,
    shown: str,
    mode: str = "rb",
    attrs: asyncssh.SFTPAttrs | None = None,
    block_size: int = -1,
) -> tuple[asyncssh.SFTPClientFile, int]:
    """:func:`opened` for a handle held longer: the file and its fd, for :func:`close`."""
    model = model_of(client)
    file, fd, where = await _open_held(
        client, model, real, mode, attrs or asyncssh.SFTPAttrs(), block_size
    )
    if fd is not None:
        return file, fd
    # No fd leads to the file asked for: the handle reached another place.
    with contextlib.suppress(asyncssh.Error, OSError):
        await file.close()
    model.taken = None  # its fd is unknown; learn again on the next open
    if isinstance(where, str) and where.startswith("/") and not confine.inside(where):
        raise confine.refusal(shown, where)
    raise path_changed(shown, "it was opened")


async def close(client: asyncssh.SFTPClient, file: asyncssh.SFTPClientFile, fd: int) -> None:
    """Close a file of :func:`verified_open`, keeping the client's fd model true."""
    await _close(model_of(client), file, fd)


async def read_block(
    client: asyncssh.SFTPClient, confine: Confine, real: str, shown: str, offset: int, size: int
) -> bytes:
    """``size`` bytes from ``offset`` of the regular file ``real``: open, one read, close.

    For ranges read in one request (``size`` at most the server's largest
    read). The open is checked as :func:`opened` checks it; then the read
    and the close go out together and sftp-server answers them in order
    (the read first: ``gather`` runs its tasks in order, and asyncssh
    writes a request the moment its coroutine first runs). So a small file
    costs two round trips after its stat instead of three: the close no
    longer waits for the data. A file that shrank since ``size`` was
    measured comes back short, as from :func:`.content.stream_read`.
    """
    file, fd = await verified_open(client, confine, real, shown, block_size=0)
    if size <= 0:
        await _close(model_of(client), file, fd)
        return b""
    data, closed = await asyncio.gather(
        file.read(size, offset), _close(model_of(client), file, fd), return_exceptions=True
    )
    if isinstance(closed, BaseException):
        raise closed
    if isinstance(data, BaseException):
        raise data
    assert isinstance(data, bytes)
    return data
