"""``ls -l``: a big directory by ``find`` on the cluster, everything else over SFTP.

A directory of more than one block (:data:`FIND_FROM_SIZE`), listed plainly
(hidden or not, numeric or not), comes from one confined ``find -printf``
step (:mod:`.findlisting`): 5x faster than SFTP readdir from 1,000 entries
up, and confined in the same step. Small directories (most listings: twice
as fast over SFTP, and no process on the login node), recursive and
dereferencing listings, and paths that are not directories are listed over
SFTP: one readdir per directory, each directory held by its handle while
read (:mod:`.helddir`), owner names from the longnames; links are read
through the held directory, and followed with ``dereference`` only where
they lead inside the filesystems.
"""

from __future__ import annotations

import asyncio
import posixpath
import stat as statmod
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import asyncssh

from hpcgate.server.errors import ServiceError
from hpcgate.server.filesystem import findlisting, helddir
from hpcgate.server.filesystem.confine import path_changed
from hpcgate.server.filesystem.entries import FileEntry, Listing, Unreadable
from hpcgate.server.filesystem.errors import sftp_error
from hpcgate.server.filesystem.names import longname_owner
from hpcgate.server.filesystem.parse import IdKind, decode_name
from hpcgate.server.filesystem.remote import Remote

# SFTP requests one listing keeps in flight (readdir, readlink, stat).
LS_CONCURRENCY = 32
# Directories one listing holds open at once (two sftp-server fds each, see
# :mod:`.helddir`), well within the fds the fd model learns (handles._PROBE).
DIRS_HELD = 8
# A directory bigger than this (st_size, bytes) is listed by find, a smaller one
# over SFTP: one block holds ~100-200 entries on ext4 and ldiskfs (Lustre), the
# size below which SFTP's fewer steps win (package docstring). Zero cost to
# know: the lstat is made anyway. A filesystem reporting sizes otherwise
# (tmpfs, btrfs: bytes of names) only moves where the switch falls.
FIND_FROM_SIZE = 4096
T = TypeVar("T")


def entry_from_attrs(
    name: str,
    attrs: asyncssh.SFTPAttrs,
    user: str,
    group: str,
    link_target: str | None = None,
) -> FileEntry:
    """A listing entry from SFTP attributes (``permissions`` holds st_mode)."""
    mode = statmod.filemode(attrs.permissions or 0)
    return FileEntry(
        name=name,
        type=mode[0],
        link_target=link_target if mode[0] == "l" else None,
        user=user,
        group=group,
        permissions=mode[1:],
        last_modified=int(attrs.mtime or 0),
        size=int(attrs.size or 0),
    )


class _Lister:
    """One ``ls``: a readdir per directory, names from longnames, links resolved.

    Paths are bytes from the readdir on, so that names which are not UTF-8
    still reach the right file; only the entries' names are decoded.
    """

    def __init__(
        self,
        remote: Remote,
        client: asyncssh.SFTPClient,
        show_hidden: bool,
        numeric_uid: bool,
        recursive: bool,
        dereference: bool,
    ) -> None:
        self.remote = remote
        self.client = client
        self.show_hidden = show_hidden
        self.numeric_uid = numeric_uid
        self.recursive = recursive
        self.dereference = dereference
        self.gate = asyncio.Semaphore(LS_CONCURRENCY)
        self.dirs = asyncio.Semaphore(DIRS_HELD)
        self.top = "/"  # the listed directory as asked for (in refusals below it)
        # Real paths of the directories listed so far (no loops through links).
        self.visited: set[bytes] = set()
        # Subdirectories that could not be read (ls -R lists the rest).
        self.unreadable: list[Unreadable] = []

    async def _guarded(self, request: Awaitable[T]) -> T:
        """``request``, with at most LS_CONCURRENCY of them in flight."""
        async with self.gate:
            return await request

    async def listing(self, real: bytes, shown: str) -> list[FileEntry]:
        """Entries of the directory ``real`` (and below, if recursive), in ``ls -R`` order."""
        self.visited.add(real)
        self.top = shown.rstrip("/") or "/"
        return await self._named(await self._readdir(real, "", shown))

    async def _readdir(self, real: bytes, prefix: str, shown: str) -> list[_Raw]:
        """The entries of the resolved directory ``real``, read and resolved while held."""
        async with self.dirs, helddir.held(self.client, self.remote.confine, real, shown) as held:
            names = await self._guarded(held.names())
            listed = sorted((n for n in names if self._shown(n.filename)), key=_filename)
            raws = [_Raw.of(prefix, name) for name in listed]
            links = [i for i, raw in enumerate(raws) if statmod.S_ISLNK(raw.mode)]
            resolved = await asyncio.gather(*(self._link(held, raws[i]) for i in links))
        for i, raw in zip(links, resolved, strict=True):
            raws[i] = raw
        if not self.recursive:
            return raws
        below = [self._below(real, raw) for raw in raws if statmod.S_ISDIR(raw.mode)]
        result = list(raws)
        for sub in await asyncio.gather(*below):
            result.extend(sub)
        return result

    def _shown(self, filename: bytes | str) -> bool:
        name = _as_bytes(filename)
        if name in (b".", b".."):
            return False
        return self.show_hidden or not name.startswith(b".")

    async def _link(self, held: helddir.HeldDir, raw: _Raw) -> _Raw:
        """A link's target (or, with dereference, the attributes of what it points to).

        The link is read through the held directory, whatever its path
        leads to meanwhile.
        """
        full = held.entry(raw.base)
        try:
            target = await self._guarded(self.client.readlink(full))
        except asyncssh.SFTPError:
            # No longer a link (replaced since the readdir): listed with no
            # target, as ``ls -l`` does after "cannot read symbolic link".
            return replace(raw, target="")
        if self.dereference:
            followed = await self._followed(held, full, target)
            if followed is not None:
                real, attrs = followed
                return replace(raw, attrs=attrs, owner=None, via_link=True, real=real)
        return replace(raw, target=decode_name(target))

    async def _followed(
        self, held: helddir.HeldDir, full: bytes, target: bytes
    ) -> tuple[bytes, asyncssh.SFTPAttrs] | None:
        """Where the link ``full`` (to ``target``) leads and what is there, if inside and held.

        Followed only where it leads inside: an outside target's attributes
        (or, recursively, its contents) are not the caller's to see here.
        A sibling (the common case) is read through the held directory's
        fd, whatever its path is meanwhile; any other target through its
        own held parent (:func:`helddir.held_entry`). A target that cannot
        be held so, or is broken, is listed as the link (None).
        """
        try:
            if b"/" not in target and target not in (b".", b".."):
                attrs = await self._guarded(self.client.lstat(held.entry(target)))
                if not statmod.S_ISLNK(attrs.permissions or 0):
                    return held.real.rstrip(b"/") + b"/" + target, attrs
            real = await self._guarded(self.client.realpath(full))
            if not self.remote.confine.inside(decode_name(real)):
                return None
            found = await self._guarded(helddir.held_entry(self.client, real))
        except asyncssh.SFTPError:
            return None
        if found is None or found.is_link:  # a link now: it changed since the realpath
            return None
        return real, found.attrs

    async def _below(self, real: bytes, raw: _Raw) -> list[_Raw]:
        """The listing below the directory ``raw``, unless it was listed already."""
        if raw.via_link and raw.real is not None:
            child_real = raw.real
        else:
            child_real = real.rstrip(b"/") + b"/" + raw.base
        if child_real in self.visited:
            return []
        self.visited.add(child_real)
        try:
            shown = posixpath.join(self.top, raw.name)
            return await self._readdir(child_real, raw.name + "/", shown)
        except asyncssh.SFTPError as error:
            self.unreadable.append(Unreadable(raw.name, sftp_error(error, raw.name).message))
        except ServiceError as error:  # it changed since its parent was read
            self.unreadable.append(Unreadable(raw.name, error.message))
        return []

    async def _named(self, raws: list[_Raw]) -> list[FileEntry]:
        """Entries with owner names: from longnames, the cache, or one getent."""
        names = self.remote.names
        wanted: set[tuple[IdKind, int]] = set()
        for raw in raws:
            if raw.owner is not None:
                names.learn("passwd", raw.uid, raw.owner[0])
                names.learn("group", raw.gid, raw.owner[1])
            elif not self.numeric_uid:
                wanted.update({("passwd", raw.uid), ("group", raw.gid)})
        resolved = await names.resolve(self.remote.run, wanted) if wanted else {}
        entries = []
        for raw in raws:
            if self.numeric_uid:
                user, group = str(raw.uid), str(raw.gid)
            elif raw.owner is not None:
                user, group = raw.owner
            else:
                user, group = resolved[("passwd", raw.uid)], resolved[("group", raw.gid)]
            entries.append(entry_from_attrs(raw.name, raw.attrs, user, group, raw.target))
        return entries


def _as_bytes(name: bytes | str) -> bytes:
    return name.encode() if isinstance(name, str) else name


def _filename(name: asyncssh.SFTPName) -> bytes:
    """Sort key: the raw name (``ls`` order in the C locale)."""
    return _as_bytes(name.filename)


@dataclass(frozen=True)
class _Raw:
    """A listed name, before its owner is named."""

    name: str  # relative to the listed directory, decoded
    base: bytes  # the name in its directory, as the server sent it
    attrs: asyncssh.SFTPAttrs
    owner: tuple[str, str] | None  # from the longname
    target: str | None = None
    via_link: bool = False  # attrs are the link target's (dereference)
    real: bytes | None = None  # where a followed link leads

    @classmethod
    def of(cls, prefix: str, name: asyncssh.SFTPName) -> _Raw:
        base = _as_bytes(name.filename)
        return cls(prefix + decode_name(base), base, name.attrs, longname_owner(name.longname))

    @property
    def mode(self) -> int:
        return self.attrs.permissions or 0

    @property
    def uid(self) -> int:
        return self.attrs.uid or 0

    @property
    def gid(self) -> int:
        return self.attrs.gid or 0


async def single_entry(remote: Remote, client: asyncssh.SFTPClient, path: str) -> FileEntry:
    """``ls -ld path``: the entry of ``path`` itself (a link is not followed).

    Read through its resolved, held parent (:func:`helddir.held_entry`),
    not by path text: a directory on the path swapped for a link after the
    act shows PATH_CHANGED, never an outside entry.
    """
    place = await remote.confine.resolve_entry(client, path)
    found = await helddir.held_entry(client, place.encode())
    if found is None:
        raise path_changed(path, "it was listed")
    target = None if found.target is None else decode_name(found.target)
    return await _owned_entry(remote, path, found.attrs, target, numeric=False)


async def _owned_entry(
    remote: Remote, name: str, attrs: asyncssh.SFTPAttrs, target: str | None, numeric: bool
) -> FileEntry:
    uid, gid = int(attrs.uid or 0), int(attrs.gid or 0)
    if numeric:
        return entry_from_attrs(name, attrs, str(uid), str(gid), target)
    names = await remote.names.resolve(remote.run, [("passwd", uid), ("group", gid)])
    return entry_from_attrs(name, attrs, names[("passwd", uid)], names[("group", gid)], target)


async def ls(
    remote: Remote,
    path: str,
    *,
    show_hidden: bool = False,
    numeric_uid: bool = False,
    recursive: bool = False,
    dereference: bool = False,
) -> Listing:
    """``ls -l`` of ``path``: a directory's entries (sorted by name), or the file itself.

    A link to a directory given as ``path`` is listed as the directory. In a
    recursive listing names are relative to ``path`` ("sub/file"), and
    directories are listed after their parent's entries, as ``ls -R`` does;
    a subdirectory that cannot be read is listed as an entry and reported
    in :attr:`Listing.unreadable`, and the rest of the tree still listed.
    """
    flags = (show_hidden, numeric_uid, recursive, dereference)
    async with remote.sftp(path) as client:
        real, attrs, target = await _looked_up(remote, client, path, dereference)
        if not statmod.S_ISDIR(attrs.permissions or 0):
            attrs, target = await _held_again(remote, client, path, real, target)
            return Listing([await _owned_entry(remote, path, attrs, target, numeric_uid)])
        if recursive or dereference or (attrs.size or 0) <= FIND_FROM_SIZE:
            return await _read(remote, client, real, path, *flags)
    found = await findlisting.listed(remote, path, show_hidden, numeric_uid)
    if found is not None:
        return found
    async with remote.sftp(path) as client:  # it changed meanwhile: SFTP says how
        return await _read(remote, client, real, path, *flags)


async def _looked_up(
    remote: Remote, client: asyncssh.SFTPClient, path: str, dereference: bool
) -> tuple[str, asyncssh.SFTPAttrs, str | None]:
    """Where ``path`` leads, what to list there, and its link target if listed as a link.

    A link to a directory is the directory (with ``dereference``, a link
    to anything is what it leads to); any other link, and a broken one, is
    the link itself, with its target.
    """
    real, attrs = await remote.confine.resolved_stat(client, path, follow=False)
    if not statmod.S_ISLNK(attrs.permissions or 0):
        return real, attrs, None
    try:
        followed = await client.stat(real)
    except asyncssh.SFTPError:
        followed = None  # a broken link is listed as itself
    if followed is not None and (dereference or statmod.S_ISDIR(followed.permissions or 0)):
        return real, followed, None
    return real, attrs, decode_name(await client.readlink(path.encode()))


async def _held_again(
    remote: Remote, client: asyncssh.SFTPClient, path: str, real: str, target: str | None
) -> tuple[asyncssh.SFTPAttrs, str | None]:
    """The entry to list for the non-directory ``path``, read again through its held parent.

    :func:`_looked_up` read it by path text, pipelined beside the
    realpath: a directory on the path swapped in between would show an
    outside entry's attributes. So the entry it found (``real``, or with a
    ``target`` the link itself) is read once more through its judged
    parent's fd (:func:`helddir.held_entry`); if it is gone or has become
    (or stopped being) a link, the path changed: PATH_CHANGED.
    """
    place = await remote.confine.resolve_entry(client, path) if target is not None else real
    found = await helddir.held_entry(client, place.encode())
    if found is None or found.is_link != (target is not None):
        raise path_changed(path, "it was listed")
    if found.target is None:
        return found.attrs, None
    return found.attrs, decode_name(found.target)


async def _read(
    remote: Remote,
    client: asyncssh.SFTPClient,
    real: str,
    shown: str,
    show_hidden: bool,
    numeric_uid: bool,
    recursive: bool,
    dereference: bool,
) -> Listing:
    """The listing of the directory ``real`` (asked as ``shown``) over SFTP: :class:`_Lister`."""
    lister = _Lister(remote, client, show_hidden, numeric_uid, recursive, dereference)
    entries = await lister.listing(real.encode(), shown)
    return Listing(entries, sorted(lister.unreadable, key=lambda u: u.name))
