"""FirecREST's ``ops`` operations, run on the cluster as the calling user.

SFTP where it is faster (no process per operation, no output to parse),
commands only where SFTP has no equivalent or would move the file's bytes
over the wire. Measured on the loopback cluster (one asyncssh connection,
OpenSSH 9.2 sftp-server, medians of 10 to 50 runs):

==================  =============================  ==================================
operation           SFTP                           command (exec channel)
==================  =============================  ==================================
ls, 10 entries      lstat + readdir     1.9 ms     ``find -printf``         4.0 ms
ls, 5,000 entries   readdir + longname  75 ms      ``ls -l``                22 ms
                    readdir + getent    82-86 ms   ``find -printf`` names   62 ms
stat                stat                0.5 ms     ``stat -c``              3.8 ms
head / tail         open + read 64 KiB  1.5 ms     ``head`` / ``tail``      3.6 ms
chmod               setstat             0.4 ms     ``chmod``                3.4 ms
checksum, 1.3 MB    read + hash here    7.0 ms     ``sha256sum``            8.4 ms
uid -> name         (none)                         ``getent``               3.7 ms
==================  =============================  ==================================

Choices, from those numbers:

* ``ls``: SFTP, one readdir per directory. Typical listings are small and
  twice as fast over SFTP; at 5,000 entries ``ls -l`` is faster (asyncssh
  decodes every entry's attributes in Python, ~15 us each) but both stay far
  below a second, and SFTP needs no login-node process and no text parsing of
  adversarial names. Owner and group names come from the readdir longname
  (OpenSSH's sftp-server resolves them with getpwuid, as ``ls -l`` does), so
  listing costs no extra process; ``getent`` is the fallback (+7 ms). End to
  end, Ls of 5,000 entries takes ~120 ms over gRPC, ~300 ms over REST.
* ``stat``: command. SFTP v3 (all OpenSSH speaks) carries no inode, device,
  link count or ctime, and FileStat is ``os.stat_result``: ``stat -c`` is the
  only way to fill it truthfully.
* ``head``, ``tail``, ``view``: SFTP reads of just the byte range needed
  (line boundaries found by reading chunks from the right end).
* ``checksum``: command. Hashing here would pull the whole file over the
  wire; for anything but tiny files ``sha256sum`` on the cluster wins.
* ``chmod``, ``mkdir``, ``symlink``, ``rm`` of a file: SFTP. ``chown``,
  ``file``, ``rm -r``, ``tar``: commands (SFTP has no equivalent; SFTP's
  chown takes numeric ids only).
* Owner and group names of single entries (chmod, chown, mkdir, symlink
  replies) come from :class:`IdNames`: learned from listings, else one
  ``getent`` exec, kept for a few minutes.

Every path is judged where it leads, on the cluster, as the caller
(:mod:`.confine`): SFTP operations act on the ``realpath`` (pipelined with
the stat they needed anyway, so no round trip is added), commands run as
one confined shell step that checks and acts (``stat``, ``file``,
``checksum``, ``chown``, ``rm -r`` and ``tar`` are such steps).

Every SFTP request is bounded by the command timeout and the RPC's deadline
(DEADLINE_EXCEEDED past it), as the remote ``timeout`` bounds commands. SFTP
reads open only regular files: sftp-server is single-threaded, and an open()
of a FIFO would block every request of the user's SFTP channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import stat as statmod
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument, invalid_in_words
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import checked, command_error, sftp_error
from hpcgate.server.ssh import CommandResult, SSHPool

# Seconds a learned uid/gid -> name mapping is trusted.
NAME_TTL = 300.0
# Most mappings IdNames keeps (it starts afresh when full).
NAME_CACHE_SIZE = 10_000
# SFTP requests one listing keeps in flight (readdir, readlink, stat).
LS_CONCURRENCY = 32
# Bytes read per request when scanning a file for line boundaries.
SCAN_CHUNK = 64 * 1024
# head and tail print this many lines when neither bytes nor lines is given.
DEFAULT_LINES = 10
# ``stat -c`` format: the fields of FileStat, in os.stat_result's order.
STAT_FORMAT = "%f %i %d %h %u %g %s %X %Y %Z"
# tar's flag for each compression FirecREST knows; "" means gzip (its default).
TAR_COMPRESSION: dict[str, tuple[str, ...]] = {
    "none": (),
    "gzip": ("-z",),
    "bzip2": ("-j",),
    "xz": ("-J",),
    "": ("-z",),
}

IdKind = Literal["passwd", "group"]
# Runs getent for (database, id) pairs; returns its stdout.
_GETENT_SCRIPT = 'for key do getent "${key%%:*}" "${key#*:}"; done; exit 0'
# getent's lines: passwd has 7 fields, group 4.
_GETENT_KINDS: dict[int, IdKind] = {7: "passwd", 4: "group"}
T = TypeVar("T")


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One line of ``ls -l``, in FirecREST's File fields."""

    name: str
    type: str
    link_target: str | None
    user: str
    group: str
    permissions: str
    last_modified: int  # seconds since the epoch
    size: int


@dataclass(frozen=True)
class Unreadable:
    """A directory a recursive listing could not read: its relative name and why."""

    name: str
    message: str


@dataclass(frozen=True)
class Listing:
    """What ``ls`` found: the entries, and (recursive) the directories it could not read."""

    entries: list[FileEntry]
    unreadable: list[Unreadable] = field(default_factory=list)


@dataclass(frozen=True)
class FileStat:
    """A file's ``stat``, in ``os.stat_result``'s fields."""

    mode: int
    ino: int
    dev: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime: int
    mtime: int
    ctime: int


@dataclass(frozen=True)
class FileContent:
    """A part of a file's text, with its position as FirecREST reports it."""

    content: str
    content_type: Literal["lines", "bytes"]
    start_position: int
    end_position: int


# -- how operations reach the cluster --------------------------------------------


class IdNames:
    """uid/gid -> name, learned from listings or looked up with ``getent``.

    Shared by every call on one system: the user database is the system's,
    not the caller's. Entries expire after ``ttl`` seconds so renames show.
    An id unknown to the system maps to its number, as ``ls -l`` shows it.
    """

    def __init__(self, ttl: float = NAME_TTL, capacity: int = NAME_CACHE_SIZE) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._known: dict[tuple[IdKind, int], tuple[str, float]] = {}

    def learn(self, kind: IdKind, ident: int, name: str) -> None:
        """Remember that ``ident`` is called ``name`` in ``kind``."""
        if len(self._known) >= self._capacity:
            self._known.clear()
        self._known[(kind, ident)] = (name, time.monotonic() + self._ttl)

    def get(self, kind: IdKind, ident: int) -> str | None:
        """The name of ``ident`` if known and fresh."""
        hit = self._known.get((kind, ident))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    async def resolve(
        self, remote: Remote, wanted: Iterable[tuple[IdKind, int]]
    ) -> dict[tuple[IdKind, int], str]:
        """Names for ``wanted``; the unknown ones cost one ``getent`` exec together."""
        wanted = set(wanted)
        missing = sorted(key for key in wanted if self.get(*key) is None)
        if missing:
            argv = ["sh", "-c", _GETENT_SCRIPT, "sh", *(f"{k}:{i}" for k, i in missing)]
            for key, name in parse_getent(await remote.run(argv)).items():
                self.learn(*key, name)
            for key in missing:
                if self.get(*key) is None:
                    self.learn(*key, str(key[1]))
        return {key: self.get(*key) or str(key[1]) for key in wanted}


@dataclass(frozen=True)
class Remote:
    """One caller on one system: how domain functions reach the cluster."""

    pool: SSHPool
    user: str
    deadline: float | None
    command_timeout: float
    confine: Confine
    names: IdNames = field(default_factory=IdNames)

    def _budget(self) -> float:
        budget = self.command_timeout
        if self.deadline is not None:
            budget = min(budget, self.deadline - time.monotonic())
        return budget

    @contextlib.asynccontextmanager
    async def sftp(self, path: str) -> AsyncIterator[asyncssh.SFTPClient]:
        """The caller's SFTP client for one operation on ``path``.

        SFTP failures become ServiceErrors about ``path`` in the cluster's
        words; running past the budget becomes DEADLINE_EXCEEDED.
        """
        budget = self._budget()
        try:
            async with asyncio.timeout(budget):
                async with self.pool.sftp(self.user, self.deadline) as client:
                    yield client
        except asyncssh.SFTPError as error:
            raise sftp_error(error, path) from None
        except TimeoutError:
            raise ServiceError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"{path}: the SFTP operation did not finish within {max(budget, 0):g} s",
                "SFTP_TIMEOUT",
            ) from None

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> bytes:
        """stdout of ``argv`` run as the caller; its mapped error if it fails."""
        return checked(argv, await self.run_unchecked(argv, stdin))

    async def run_unchecked(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        """``argv`` run as the caller, whatever its exit status."""
        return await self.pool.run(self.user, argv, stdin=stdin, deadline=self.deadline)

    async def confined_unchecked(
        self,
        name: str,
        body: str,
        paths: Sequence[str],
        args: Sequence[str] = (),
        stdin: bytes | None = None,
    ) -> tuple[list[str], CommandResult]:
        """Run the shell step ``body`` (after :meth:`Confine.prelude`) with ``args``.

        ``name`` is the command doing the work, for messages. A refusal the
        step reports (a path of ``paths`` leads outside) is raised; any other
        outcome is returned with the argv, for the caller to judge.
        """
        if not self.confine.learned:
            async with self.sftp(paths[0]) as client:
                await self.confine.learn_roots(client)
        argv = ["sh", "-c", self.confine.script(body), name, *args]
        try:
            result = await self.run_unchecked(argv, stdin)
        except ServiceError as error:
            if error.reason == "COMMAND_TIMEOUT":  # name the command, not the shell
                error.message = error.message.replace("'sh'", repr(name), 1)
                error.args = (error.message,)
            raise
        self.confine.outcome(paths, result.exit_status, result.stderr)
        return [name, *argv[1:]], result

    async def confined(
        self,
        name: str,
        body: str,
        paths: Sequence[str],
        args: Sequence[str] = (),
        stdin: bytes | None = None,
    ) -> bytes:
        """stdout of the confined step ``body``; its mapped error if it fails."""
        argv, result = await self.confined_unchecked(name, body, paths, args, stdin)
        return checked(argv, result)


# -- pure helpers (parsing, formatting, validation) -------------------------------


def decode_name(raw: bytes | str) -> str:
    """A file name as text; bytes that are not UTF-8 are shown as ``\\xNN``."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def longname_owner(longname: bytes | str | None) -> tuple[str, str] | None:
    """User and group from an SFTP ``ls -l``-style longname, if it has them.

    OpenSSH writes ``mode nlink user group size date name``; names cannot hold
    whitespace, so the third and fourth fields are exact.
    """
    if not longname:
        return None
    fields = decode_name(longname).split(None, 4)
    if len(fields) < 5 or len(fields[0]) < 10 or not fields[1].isdigit():
        return None
    return fields[2], fields[3]


def parse_getent(output: bytes) -> dict[tuple[IdKind, int], str]:
    """(database, id) -> name from ``getent passwd`` (7 fields) and ``group`` (4) lines."""
    found: dict[tuple[IdKind, int], str] = {}
    for line in output.decode(errors="replace").splitlines():
        fields = line.split(":")
        kind = _GETENT_KINDS.get(len(fields))
        if kind is not None and fields[2].isdigit():
            found[(kind, int(fields[2]))] = fields[0]
    return found


def parse_stat(output: bytes) -> FileStat:
    """FileStat from ``stat -c STAT_FORMAT`` (mode in hex, the rest decimal)."""
    fields = output.split()
    if len(fields) != 10:
        raise ServiceError(ErrorKind.INTERNAL, f"unexpected stat output: {output!r}", "BAD_OUTPUT")
    mode, *rest = fields
    ino, dev, nlink, uid, gid, size, atime, mtime, ctime = (int(v) for v in rest)
    return FileStat(int(mode, 16), ino, dev, nlink, uid, gid, size, atime, mtime, ctime)


def parse_sha256sum(output: bytes) -> str:
    """The digest from ``sha256sum`` (a leading ``\\`` marks an escaped name)."""
    digest = output.lstrip(b"\\")[:64].decode(errors="replace")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ServiceError(
            ErrorKind.INTERNAL, f"unexpected sha256sum output: {output!r}", "BAD_OUTPUT"
        )
    return digest


def parse_mode(mode: str) -> int:
    """Permission bits from an octal string such as "755" or "2750"."""
    if not re.fullmatch(r"[0-7]{1,4}", mode):
        raise invalid_argument(
            "mode", f"must be an octal mode of 1 to 4 digits (0-7), got {mode!r}", "INVALID_MODE"
        )
    return int(mode, 8)


def owner_spec(owner: str, group: str) -> str:
    """``chown``'s OWNER[:GROUP] / :GROUP argument; at least one must be given."""
    for name, value in (("owner", owner), ("group", group)):
        if ":" in value or "\x00" in value or value != value.strip():
            raise invalid_argument(name, f"not a valid {name} name: {value!r}", "INVALID_OWNER")
    if not owner and not group:
        raise invalid_argument("owner", "give an owner, a group or both", "INVALID_OWNER")
    return f"{owner}:{group}" if group else owner


def tar_compression(compression: str) -> tuple[str, ...]:
    """tar's flag for FirecREST's compression name; INVALID_ARGUMENT otherwise."""
    flags = TAR_COMPRESSION.get(compression)
    if flags is None:
        raise invalid_argument(
            "compression",
            f"must be one of none, gzip, bzip2, xz; got {compression!r}",
            "INVALID_COMPRESSION",
        )
    return flags


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


# -- reading ------------------------------------------------------------------------


def _regular(attrs: asyncssh.SFTPAttrs, path: str) -> int:
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

    The file opened is the resolved one (see :mod:`.confine`). Fails with
    RESOURCE_EXHAUSTED when the range is longer than ``limit``.
    """
    async with remote.sftp(path) as client:
        real, attrs = await remote.confine.resolved_stat(client, path)
        size = _regular(attrs, path)
        async with client.open(real, "rb") as handle:

            async def read(offset: int, length: int) -> bytes:
                data: bytes = await handle.read(length, offset)
                return data

            start, end = await range_of(read, size)
            if end - start > limit:
                raise _too_large(path, end - start, limit)
            data = await read(start, end - start) if end > start else b""
    return data.decode("utf-8", "replace"), size


async def head(
    remote: Remote, path: str, nbytes: int | None, lines: int | None, skip: bool, limit: int
) -> FileContent:
    """``head``: the first bytes/lines of a file, or all but the last (``skip``)."""
    check_counts(nbytes, lines, skip, "skipTrailing")

    async def range_of(read: ReadAt, size: int) -> tuple[int, int]:
        return await head_range(read, size, nbytes, lines, skip)

    content, _ = await _read_range(remote, path, range_of, limit)
    count = nbytes if nbytes is not None else lines if lines is not None else DEFAULT_LINES
    return FileContent(
        content, "bytes" if nbytes is not None else "lines", 0, -count if skip else count
    )


async def tail(
    remote: Remote, path: str, nbytes: int | None, lines: int | None, skip: bool, limit: int
) -> FileContent:
    """``tail``: the last bytes/lines of a file, or all but the first (``skip``)."""
    check_counts(nbytes, lines, skip, "skipHeading")

    async def range_of(read: ReadAt, size: int) -> tuple[int, int]:
        return await tail_range(read, size, nbytes, lines, skip)

    content, _ = await _read_range(remote, path, range_of, limit)
    count = nbytes if nbytes is not None else lines if lines is not None else DEFAULT_LINES
    return FileContent(
        content, "bytes" if nbytes is not None else "lines", count if skip else -count, -1
    )


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


async def checksum(remote: Remote, path: str) -> str:
    """SHA-256 of a regular file, computed on the cluster (``sha256sum``) from a held fd."""
    async with remote.sftp(path) as client:
        # A FIFO would hang the open until the timeout.
        _regular((await remote.confine.resolved_stat(client, path))[1], path)
    body = 'exec 3<"$1" || exit 1; held 3 1; exec sha256sum <&3'
    return parse_sha256sum(await remote.confined("sha256sum", body, [path], [path]))


async def file_type(remote: Remote, path: str) -> str:
    """What ``file -b`` says about ``path`` (a link is described as a link, as file(1) does).

    With ``-E`` an unreadable or missing file is an error rather than a
    description; ``file`` prints that error on stdout, so stdout is the message.
    """
    body = 'at "$1" 1; exec file -b -E -h -- "$b"'
    argv, result = await remote.confined_unchecked("file", body, [path], [path])
    if result.exit_status != 0:
        raise command_error(argv, replace(result, stderr=result.stdout + result.stderr))
    return result.stdout.decode(errors="replace").strip()


async def stat(remote: Remote, path: str, dereference: bool) -> FileStat:
    """``os.stat_result`` of ``path`` (of the link's target with ``dereference``).

    The name is stat'ed inside its real directory without following a last
    link: with ``dereference`` that name is where every link led.
    """
    body = f'{"to" if dereference else "at"} "$1" 1; exec stat -c "$2" -- "$b"'
    return parse_stat(await remote.confined("stat", body, [path], [path, STAT_FORMAT]))


# -- listing --------------------------------------------------------------------------


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
        # Real paths of the directories listed so far (no loops through links).
        self.visited: set[bytes] = set()
        # Subdirectories that could not be read (ls -R lists the rest).
        self.unreadable: list[Unreadable] = []

    async def _guarded(self, request: Awaitable[T]) -> T:
        """``request``, with at most LS_CONCURRENCY of them in flight."""
        async with self.gate:
            return await request

    async def listing(self, path: bytes, real: bytes) -> list[FileEntry]:
        """Entries of the directory ``path`` (and below, if recursive), in ``ls -R`` order."""
        self.visited.add(real)
        return await self._named(await self._readdir(path, "", real))

    async def _readdir(self, path: bytes, prefix: str, real: bytes) -> list[_Raw]:
        names = await self._guarded(self.client.readdir(path))
        shown = sorted((n for n in names if self._shown(n.filename)), key=_filename)
        raws = [_Raw.of(prefix, name) for name in shown]
        links = [i for i, raw in enumerate(raws) if statmod.S_ISLNK(raw.mode)]
        resolved = await asyncio.gather(*(self._link(path, raws[i]) for i in links))
        for i, raw in zip(links, resolved, strict=True):
            raws[i] = raw
        if not self.recursive:
            return raws
        below = [self._below(path, real, raw) for raw in raws if statmod.S_ISDIR(raw.mode)]
        result = list(raws)
        for sub in await asyncio.gather(*below):
            result.extend(sub)
        return result

    def _shown(self, filename: bytes | str) -> bool:
        name = _as_bytes(filename)
        if name in (b".", b".."):
            return False
        return self.show_hidden or not name.startswith(b".")

    async def _link(self, path: bytes, raw: _Raw) -> _Raw:
        """A link's target (or, with dereference, the attributes of what it points to)."""
        full = path.rstrip(b"/") + b"/" + raw.base
        if self.dereference:
            # Followed only where it leads inside: an outside target's attributes
            # (or, recursively, its contents) are not the caller's to see here.
            try:
                real = await self._guarded(self.client.realpath(full))
                if self.remote.confine.inside(decode_name(real)):
                    attrs = await self._guarded(self.client.stat(real))
                    return replace(raw, attrs=attrs, owner=None, via_link=True, real=real)
            except asyncssh.SFTPError:
                pass  # a broken link is listed as itself
        target = await self._guarded(self.client.readlink(full))
        return replace(raw, target=decode_name(target))

    async def _below(self, path: bytes, real: bytes, raw: _Raw) -> list[_Raw]:
        """The listing below the directory ``raw``, unless it was listed already."""
        child = path.rstrip(b"/") + b"/" + raw.base
        if raw.via_link and raw.real is not None:
            child = child_real = raw.real
        else:
            child_real = real.rstrip(b"/") + b"/" + raw.base
        if child_real in self.visited:
            return []
        self.visited.add(child_real)
        try:
            return await self._readdir(child, raw.name + "/", child_real)
        except asyncssh.SFTPError as error:
            self.unreadable.append(Unreadable(raw.name, sftp_error(error, raw.name).message))
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
        resolved = await names.resolve(self.remote, wanted) if wanted else {}
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


async def _single_entry(remote: Remote, client: asyncssh.SFTPClient, path: str) -> FileEntry:
    """``ls -ld path``: the entry of ``path`` itself (a link is not followed)."""
    attrs = await client.lstat(path)
    target = None
    if statmod.S_ISLNK(attrs.permissions or 0):
        target = decode_name(await client.readlink(path.encode()))
    return await _owned_entry(remote, path, attrs, target, numeric=False)


async def _owned_entry(
    remote: Remote, name: str, attrs: asyncssh.SFTPAttrs, target: str | None, numeric: bool
) -> FileEntry:
    uid, gid = int(attrs.uid or 0), int(attrs.gid or 0)
    if numeric:
        return entry_from_attrs(name, attrs, str(uid), str(gid), target)
    names = await remote.names.resolve(remote, [("passwd", uid), ("group", gid)])
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
    async with remote.sftp(path) as client:
        real, attrs = await remote.confine.resolved_stat(client, path, follow=False)
        target = None
        if statmod.S_ISLNK(attrs.permissions or 0):
            try:
                followed = await client.stat(real)
            except asyncssh.SFTPError:
                followed = None  # a broken link is listed as itself
            if followed is not None and (dereference or statmod.S_ISDIR(followed.permissions or 0)):
                attrs = followed
            else:
                target = decode_name(await client.readlink(path.encode()))
        if not statmod.S_ISDIR(attrs.permissions or 0):
            return Listing([await _owned_entry(remote, path, attrs, target, numeric_uid)])
        lister = _Lister(remote, client, show_hidden, numeric_uid, recursive, dereference)
        entries = await lister.listing(real.encode(), real.encode())
        return Listing(entries, sorted(lister.unreadable, key=lambda u: u.name))


# -- changing ---------------------------------------------------------------------------


async def chmod(remote: Remote, path: str, mode: str) -> FileEntry:
    """Set the permission bits of ``path`` (of a link's target, as chmod(1) does)."""
    bits = parse_mode(mode)
    async with remote.sftp(path) as client:
        await client.chmod(await remote.confine.resolve(client, path), bits)
        return await _single_entry(remote, client, path)


async def chown(remote: Remote, path: str, owner: str, group: str) -> FileEntry:
    """``chown OWNER:GROUP`` as the caller: the cluster decides whether it may."""
    spec = owner_spec(owner, group)
    # Where the path leads, entered and changed there without following a last link.
    await remote.confined("chown", 'to "$2" 1; exec chown -h -- "$1" "$b"', [path], [spec, path])
    async with remote.sftp(path) as client:
        return await _single_entry(remote, client, path)


async def _kind(client: asyncssh.SFTPClient, path: str, follow: bool = False) -> int | None:
    """The file type bits of ``path``, or None if it does not exist (or is unreachable)."""
    try:
        attrs = await (client.stat(path) if follow else client.lstat(path))
    except asyncssh.SFTPError:
        return None
    return statmod.S_IFMT(attrs.permissions or 0)


async def _creation_failed(client: asyncssh.SFTPClient, path: str) -> ServiceError | None:
    """Why creating ``path`` failed, where SFTP v3's codes do not say it.

    sftp-server answers EEXIST with the generic FX_FAILURE and ENOTDIR with
    FX_NO_SUCH_FILE; look at the path and its parent to give mkdir(1)'s
    words. None when neither explains the failure.
    """
    if await _kind(client, path) is not None:
        return ServiceError(
            ErrorKind.ALREADY_EXISTS,
            f"{path}: File exists",
            "ALREADY_EXISTS",
            metadata={"path": path},
        )
    parent = posixpath.dirname(path)
    kind = await _kind(client, parent, follow=True)
    if kind is not None and kind != statmod.S_IFDIR:
        return ServiceError(
            ErrorKind.INVALID_ARGUMENT,
            f"{path}: Not a directory",
            "NOT_A_DIRECTORY",
            metadata={"path": path},
        )
    return None


@contextlib.asynccontextmanager
async def _creating(client: asyncssh.SFTPClient, path: str) -> AsyncIterator[None]:
    """Around an SFTP request that creates ``path``: explain FX_FAILURE and FX_NO_SUCH_FILE."""
    try:
        yield
    except (asyncssh.SFTPFailure, asyncssh.SFTPNoSuchFile) as error:
        reason = await _creation_failed(client, path)
        if reason is None:
            raise
        raise reason from error


async def _mkdir(client: asyncssh.SFTPClient, path: str, parent: bool) -> None:
    """mkdir, or ``mkdir -p`` with ``parent`` (an existing directory is then fine)."""
    if parent:
        if await _kind(client, path, follow=True) == statmod.S_IFDIR:
            return
        above = posixpath.dirname(path)
        if above != path and await _kind(client, above, follow=True) is None:
            await _mkdir(client, above, parent=True)
    async with _creating(client, path):
        try:
            await client.mkdir(path)
        except asyncssh.SFTPFailure:
            # Made meanwhile by someone else: fine for mkdir -p.
            if not parent or await _kind(client, path, follow=True) != statmod.S_IFDIR:
                raise


async def mkdir(remote: Remote, path: str, parent: bool) -> FileEntry:
    """Create a directory (and its missing parents with ``parent``)."""
    async with remote.sftp(path) as client:
        await _mkdir(client, await remote.confine.resolve_loose(client, path), parent)
        return await _single_entry(remote, client, path)


async def symlink(remote: Remote, target: str, link: str) -> FileEntry:
    """Create ``link`` pointing at ``target`` (which need not exist, but must lead inside)."""
    async with remote.sftp(link) as client:
        real_link = await remote.confine.resolve_entry(client, link)
        await remote.confine.resolve_loose(client, target)
        async with _creating(client, real_link):
            await client.symlink(target, real_link)
        return await _single_entry(remote, client, link)


async def rm(remote: Remote, path: str, roots: Sequence[str]) -> None:
    """Delete a file or link (SFTP), or a directory tree (``rm -r``).

    A configured filesystem's root (in ``roots``) is never deleted.
    """
    if path.rstrip("/") in {r.rstrip("/") or "/" for r in roots}:
        raise invalid_argument("path", f"{path!r} is a filesystem root", "PATH_IS_ROOT")
    async with remote.sftp(path) as client:
        real = await remote.confine.resolve_entry(client, path)
        attrs = await client.lstat(real)
        if not statmod.S_ISDIR(attrs.permissions or 0):
            await client.remove(real)
            return
    await remote.confined("rm", 'at "$1" 1; exec rm -r -- "$b"', [path], [path])


# -- archives --------------------------------------------------------------------------


async def _tar(
    remote: Remote,
    body: str,
    paths: Sequence[str],
    args: Sequence[str],
    stdin: bytes | None = None,
) -> None:
    """Run a confined tar step; its failure as :func:`.archive.tar_failed` says."""
    argv, result = await remote.confined_unchecked("tar", body, paths, args, stdin)
    if result.exit_status != 0:
        archive.tar_failed(argv, result)


# The compress step: the source's real parent entered and checked (and, with
# dereference, every place tar would follow to), then the archive opened and
# checked, then tar run there on the bare name. $1 source, $2 target, $3
# dereference (0/1), $4 the ERE of the places inside, $5 "tree" or "list"
# (names on stdin); the rest are tar's options.
_COMPRESS = r"""
at "$1" 1
if [ "$3" = 1 ]; then
    far=$(find -L "$b" -print0 2>/dev/null | xargs -0r realpath -z -m -- \
        | grep -z -v -m 1 -E -e "$4" | tr -d '\000')
    [ -z "$far" ] || inside "$far" 1
fi
t=$(realpath -m -- "$2") || exit 1
inside "$t" 2
[ -L "$t" ] && exit 95
exec 4>"$t" || exit 1
held 4 2
mode=$5
shift 5
if [ "$mode" = tree ]; then
    exec tar -c "$@" -f - -- "$b" >&4
fi
exec tar -c "$@" -f - --null --verbatim-files-from --no-recursion -T - >&4
"""


async def compress(
    remote: Remote,
    source: str,
    target: str,
    *,
    match_pattern: str | None,
    dereference: bool,
    compression: str,
) -> None:
    """``tar -c`` of ``source`` into ``target``; members are named from source's parent.

    With ``match_pattern`` only regular files whose absolute path matches it
    (``find -regex``, emacs syntax, whole path) are archived: ``find`` lists
    them, and tar reads the list (NUL-separated, verbatim) from its stdin.
    Source, target and (with ``dereference``) every place tar would follow
    a link to must be inside the filesystems; else nothing is written.
    """
    flags = tar_compression(compression)
    async with remote.sftp(source) as client:
        await client.lstat(source)  # a missing source is NOT_FOUND, not an empty archive
    base = posixpath.basename(source)
    follow = ["--dereference"] if dereference else []
    args = [source, target, "1" if dereference else "0", remote.confine.ere()]
    paths = [source, target]
    if not match_pattern:
        await _tar(remote, _COMPRESS, paths, [*args, "tree", *flags, *follow])
        return
    find = ["find", *(["-L"] if dereference else []), source, "-type", "f"]
    listed = await remote.run([*find, "-regex", match_pattern, "-printf", "%P\\0"])
    members = b"".join(
        (f"{base}/".encode() + rel if rel else base.encode()) + b"\0"
        for rel in listed.split(b"\0")[:-1]
    )
    await _tar(remote, _COMPRESS, paths, [*args, "list", *flags, *follow], members)


# The extraction step: archive opened and checked, target directory entered
# and checked, tar extracting there from fd 3.
_EXTRACT = """
exec 3<"$1" || exit 1
held 3 1
to "$2" 2
cd -P -- "$b" || exit 1
inside "$PWD" 2
shift 2
exec tar -x "$@" -f - <&3
"""


async def extract(remote: Remote, source: str, target: str, compression: str) -> None:
    """``tar -x`` of the archive ``source`` into the existing directory ``target``.

    tar's own listing is judged first (:mod:`.archive`): no member may land
    outside the target, and no link it makes may lead outside the
    filesystems; the places it reaches are resolved in one ``realpath -m``.
    """
    flags = tar_compression(compression)

    async def run(argv: Sequence[str], *, stdin: bytes | None = None) -> CommandResult:
        return await remote.run_unchecked(argv, stdin)

    await archive.check(run, remote.confine, source, target, flags)
    paths = [source, target]
    await _tar(remote, _EXTRACT, paths, [source, target, *flags])
