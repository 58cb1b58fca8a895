"""SFTP directories held open and judged by where their handle leads: ``ls`` without a race.

SFTP v3 has no openat: a readdir of a path resolved a moment before would
read through a directory swapped for a link in between. And OpenSSH's
sftp-server names a READDIR's entries from its ``opendir(3)`` fd, but
gives their attributes by an ``lstat`` of the handle's path *text* plus the
name: a swap during the listing would show another directory's attributes.

So a directory is listed in two opens, pipelined in one round trip under
the client's :class:`~.handles.FdModel` lock (an ``opendir`` takes an fd,
like any open):

1. ``OPENDIR real``, and a readlink of ``/proc/self/fd/N`` (N predicted as
   for file opens, :mod:`.handles`): what the fd holds must be exactly
   ``real``;
2. ``OPENDIR /proc/self/fd/N``: a second handle on the very directory fd
   N holds, whose path text reaches it through sftp-server's own fd
   (``/proc/self`` is sftp-server), never through the names that led
   there. Its own fd M is the model's next (not read back: the judgment
   rests on fd N alone, and a wrong guess only leaves the model stale,
   which the next open finds and learns again).

Its READDIR's ``lstat`` calls then go through fd N, and so does every
further request about an entry (:meth:`HeldDir.entry`: ``readlink``,
``realpath``, ``lstat`` of ``/proc/self/fd/N/NAME``). A directory swapped
after the open is never read: fd N holds the one that was judged. A
mismatch (a swap before the open, or a stale fd model) is learned again
and retried once, then refused: PATH_OUTSIDE_FILESYSTEMS if the handle
reached outside, else PATH_CHANGED. An ``OPENDIR`` has no side effect, so
a retry is harmless (a file open's exclusive create is not, hence
:mod:`.handles` searches instead).

Why asyncssh's ``_handler`` (not public API): ``SFTPClient.scandir`` opens,
reads and closes by path in one generator, so its fd cannot be judged
before the READDIR is sent, nor its close ordered under the fd model's
lock; the handler's ``opendir``/``readdir``/``close`` are the same three
requests, one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import stat as statmod
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from hpcgate.server.filesystem.confine import Confine, path_changed
from hpcgate.server.filesystem.handles import FdModel, model_of
from hpcgate.server.filesystem.parse import decode_name


def _handler(client: asyncssh.SFTPClient) -> Any:
    """The client's request layer (see the module docstring for why)."""
    return client._handler


def _fd_path(fd: int) -> bytes:
    return f"/proc/self/fd/{fd}".encode()


@dataclass(frozen=True)
class HeldDir:
    """A directory held by sftp-server's fd ``fd``, read through handle ``handle``."""

    client: asyncssh.SFTPClient
    handle: bytes  # the OPENDIR of /proc/self/fd/<fd>
    fd: int
    real: bytes  # the resolved path it was judged to be

    @property
    def path(self) -> bytes:
        """The held directory's path as sftp-server reaches it: through its own fd."""
        return _fd_path(self.fd)

    def entry(self, name: bytes) -> bytes:
        """The path of the entry ``name`` of the held directory (a last link is its own)."""
        return self.path + b"/" + name

    async def names(self) -> list[asyncssh.SFTPName]:
        """Every name in the directory (``.`` and ``..`` included), attributes by lstat."""
        handler = _handler(self.client)
        found: list[asyncssh.SFTPName] = []
        try:
            while True:
                names, at_end = await handler.readdir(self.handle)
                found.extend(names)
                if at_end:
                    break
        except asyncssh.SFTPEOFError:
            pass
        return found


async def _gather(*requests: Awaitable[Any]) -> list[Any]:
    """``requests`` pipelined (sent in order, answered in order), errors returned."""
    return list(await asyncio.gather(*requests, return_exceptions=True))


async def _close_all(client: asyncssh.SFTPClient, handles: Sequence[Any]) -> None:
    """Close whichever of ``handles`` are handles (the others were errors), pipelined."""
    handler = _handler(client)
    await _gather(*(handler.close(h) for h in handles if isinstance(h, bytes)))


def _judged(confine: Confine, shown: str, where: Any) -> BaseException:
    """The refusal of a handle that reached ``where`` instead of the place asked for."""
    if isinstance(where, bytes) and where.startswith(b"/"):
        place = decode_name(where)
        if not confine.inside(place):
            return confine.refusal(shown, place)
    return path_changed(shown, "it was opened")


async def _open_two(
    client: asyncssh.SFTPClient, model: FdModel, real: bytes
) -> tuple[bytes, bytes, int, int] | Any:
    """Step 1 and 2 of the module docstring, one round trip; the handles and fds, or a miss.

    A miss is what fd N led to instead (or the OPENDIR's error, raised):
    every handle opened is closed and the model is to be learned again.
    """
    if model.taken is None:
        await model.learn(client)
    n, m = model.following(2)
    handler = _handler(client)
    try:
        first, where, second = await _gather(
            handler.opendir(real),
            client.readlink(_fd_path(n)),
            handler.opendir(_fd_path(n)),
        )
    except BaseException:
        model.taken = None  # cancelled: the opens may have happened
        raise
    both = isinstance(first, bytes) and isinstance(second, bytes)
    if both and where == real:
        assert model.taken is not None
        model.taken.update((n, m))
        return first, second, n, m
    model.taken = None
    await _close_all(client, (first, second))
    if isinstance(first, BaseException):
        raise first
    return where


@contextlib.asynccontextmanager
async def held(
    client: asyncssh.SFTPClient, confine: Confine, real: bytes, shown: str
) -> AsyncIterator[HeldDir]:
    """The directory ``real`` (a resolved path) held open, if its handle leads exactly there.

    SFTP errors of the OPENDIR (no such directory, no read permission)
    pass through for the caller to name; a handle leading elsewhere is
    refused (module docstring).
    """
    model = model_of(client)
    async with model.lock:
        opened = await _open_two(client, model, real)
        if not isinstance(opened, tuple):  # a swap, or a stale model: learn, once more
            opened = await _open_two(client, model, real)
    if not isinstance(opened, tuple):
        raise _judged(confine, shown, opened)
    first, second, n, m = opened
    try:
        yield HeldDir(client, second, n, real)
    finally:
        async with model.lock:
            closed = await _gather(*(_handler(client).close(h) for h in (second, first)))
            if model.taken is not None:
                model.taken.difference_update((n, m))
            if any(isinstance(result, BaseException) for result in closed):
                model.taken = None  # did they reach sftp-server? Learn again.


@dataclass(frozen=True)
class Entry:
    """One directory entry read through its held parent: its lstat, and a link's target."""

    attrs: asyncssh.SFTPAttrs
    target: bytes | None  # the link's target text, None if it is not a link

    @property
    def is_link(self) -> bool:
        return statmod.S_ISLNK(self.attrs.permissions or 0)


async def held_entry(client: asyncssh.SFTPClient, real: bytes) -> Entry | None:
    """The entry ``real`` (its parent resolved, its name its own) read through its held parent.

    The parent is opened and judged as in step 1, and the entry lstat'ed
    (and readlink'ed, should it be a link) through its fd, all in one round
    trip: None if the parent's handle led elsewhere, the parent cannot be
    read, or the entry is not there.
    """
    parent, name = posixpath.split(real.rstrip(b"/"))
    if not name:  # "/" itself: no link can replace it
        return Entry(await client.lstat(real), None)
    model = model_of(client)
    handler = _handler(client)
    async with model.lock:
        if model.taken is None:
            await model.learn(client)
        (n,) = model.following(1)
        inside = _fd_path(n) + b"/" + name
        try:
            handle, where, attrs, target = await _gather(
                handler.opendir(parent or b"/"),
                client.readlink(_fd_path(n)),
                client.lstat(inside),
                client.readlink(inside),  # fails unless it is a link: harmless
            )
        except BaseException:
            model.taken = None
            raise
        held_there = isinstance(handle, bytes) and where == (parent or b"/")
        closed = await _gather(handler.close(handle)) if isinstance(handle, bytes) else []
        if not held_there or any(isinstance(c, BaseException) for c in closed):
            model.taken = None  # the fd went elsewhere, or the close is unknown
    if not held_there or not isinstance(attrs, asyncssh.SFTPAttrs):
        return None
    found = Entry(attrs, target if isinstance(target, bytes) else None)
    if found.is_link and found.target is None:
        return None  # a link whose target could not be read: it changed
    return found
