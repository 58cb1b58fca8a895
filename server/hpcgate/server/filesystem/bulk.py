"""Many files in one stream: one remote ``tar`` relayed file by file.

Fetching 1,000 small files one SFTP open/read/close at a time costs three
round trips per file (0.75 s on loopback); one ``tar`` process streaming them
all over a single exec channel costs 0.024 s. So a bulk download runs, as the
calling user::

    tar -c -f - --format=gnu --no-recursion --absolute-names --dereference \
        --hard-dereference --quoting-style=c --null --verbatim-files-from --files-from=-

with the file names on stdin, NUL-separated (no name ever reaches a command
line, so no quoting can go wrong and there is no path argument to put ``--``
before), and relays the archive as it arrives: each member becomes a header,
data chunks and an end with its SHA-256, many small files batched into one
message. A file tar cannot read (missing, no permission) is absent from the
archive and named on tar's stderr (C-quoted, so any name parses back); it
gets an error entry and the rest still arrives.

For a directory tree the file list comes from an SFTP walk first (one
``readdir`` per directory, directories of a level listed concurrently), so
that ``recursive``, ``show_hidden`` and ``glob`` are decided exactly here
and excluded files never travel.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fnmatch
import hashlib
import posixpath
import re
import shlex
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem import held
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import command_error, sftp_error
from hpcgate.server.filesystem.tarstream import DIRECTORY, Member, TarReader
from hpcgate.server.ssh import CommandResult, SSHPool, retry_channel_open
from hpcgate.server.ssh.deadlines import KILL_AFTER

# Most files one call may select.
MAX_FILES = 100_000
# Remote time limit of the tar when the call has no deadline (seconds); a
# call that goes away stops the tar at once anyway.
DEFAULT_TIME_LIMIT = 3600.0
# Bytes asked of the channel per read: a read returns whatever has arrived,
# up to this, so a fast tar yields large reads and large messages.
READ_SIZE = 4 * 1024 * 1024
# Directories listed concurrently during a tree walk.
WALK_CONCURRENCY = 32
# Seconds to wait for the channel to close after the tar.
CLOSE_GRACE = 5.0
# tar's exit statuses: fine, some files changed while read, some files failed.
_TAR_OK = (0, 1, 2)
# Exit statuses of `timeout`: the command timed out (TERM), or needed KILL.
_TIMED_OUT = (124, 128 + 9)
# `tar: "NAME": MESSAGE` with NAME in C quoting.
_DIAGNOSTIC = re.compile(rb'^tar: "((?:[^"\\]|\\.)*)": (.*)$')
# The names arrive on stdin. One `realpath -m` resolves them all, then their
# real directories are held and the files named through them (:mod:`.held`);
# tar's names come first on stdout, one per asked name ("" for one leading
# outside, which tar is not given), then the archive. The fd budget is the
# hard limit (a recursive tree holds one fd per directory). No round trip is
# added, and no directory swapped for a link leads tar outside.
_CONFINED_TAR = """
ulimit -n "$(ulimit -Hn)" 2>/dev/null
export inside=$1 held_max=$(($(ulimit -n) - 64))
HOLD
hold xargs -0r realpath -z -m --
printf '%s\\0' "${names[@]}"
if [ "$outside" = 0 ]; then
    printf '%s\\0' "${names[@]}" | LC_ALL=C TAR
else
    printf '%s\\0' "${names[@]}" | LC_ALL=C grep -z . | LC_ALL=C TAR
fi
"""
OUTSIDE_WORDS = "leads outside the configured filesystems"


@dataclass(frozen=True)
class NamedFiles:
    """Selection: these files (absolute, already checked paths), in this order."""

    paths: Sequence[str]


@dataclass(frozen=True)
class Tree:
    """Selection: the regular files of a directory tree (links are not followed)."""

    root: str
    recursive: bool = False
    glob: str = ""
    show_hidden: bool = False


@dataclass(frozen=True)
class BulkHeader:
    """A file starts; exactly ``size`` data bytes follow in chunks."""

    index: int
    path: str
    relative_path: str
    size: int
    mode: int
    mtime: float


@dataclass(frozen=True)
class BulkChunk:
    """Consecutive bytes of the current file."""

    index: int
    data: bytes


@dataclass(frozen=True)
class BulkEnd:
    """The current file was sent completely."""

    index: int
    sha256: str


@dataclass(frozen=True)
class BulkError:
    """A file that could not be sent (partial data of it, if any, is void)."""

    index: int
    path: str
    code: ErrorKind
    message: str


BulkEvent = BulkHeader | BulkChunk | BulkEnd | BulkError


@dataclass(frozen=True)
class Target:
    index: int
    path: str
    relative_path: str


def _too_many(count: str) -> ServiceError:
    return ServiceError(
        ErrorKind.RESOURCE_EXHAUSTED,
        f"{count} files selected; at most {MAX_FILES} per call (narrow the selection)",
        "TOO_MANY_FILES",
    )


def _error(index: int, path: str, error: ServiceError) -> BulkError:
    return BulkError(index, path, error.code, error.message)


async def bulk_download(
    pool: SSHPool,
    user: str,
    deadline: float | None,
    selection: NamedFiles | Tree,
    chunk: int,
    confine: Confine,
) -> AsyncIterator[list[BulkEvent]]:
    """Stream the selected files as ``user``, in batches meant for one message each.

    A batch carries about ``chunk`` data bytes (many small files, or one
    chunk of a large one); the events of one file are contiguous. Files that
    cannot be read become :class:`BulkError` events, as do those leading
    outside the filesystems (``confine``); only a failure of the whole call
    (unreadable or outside root, tar not runnable, time limit) raises.
    """
    if isinstance(selection, NamedFiles):
        if len(selection.paths) > MAX_FILES:
            raise _too_many(str(len(selection.paths)))
        targets = [Target(i, p, posixpath.basename(p)) for i, p in enumerate(selection.paths)]
        unlisted: list[BulkError] = []
        if not confine.learned:
            async with pool.sftp(user, deadline) as sftp:
                await confine.learn_roots(sftp)
    else:
        async with pool.sftp(user, deadline) as sftp:
            await confine.resolve(sftp, selection.root)
            targets, unlisted = await _walk(sftp, selection)
    if targets:
        async with pool.session(user, deadline) as conn:
            limit = _time_limit(deadline)
            async for batch in _relay_tar(conn, targets, chunk, limit, confine):
                yield batch
    if unlisted:
        last: list[BulkEvent] = [*unlisted]
        yield last


def _time_limit(deadline: float | None) -> float:
    if deadline is None:
        return DEFAULT_TIME_LIMIT
    return max(deadline - time.monotonic(), 0.05)


# -- the tree walk -----------------------------------------------------------


async def _walk(sftp: asyncssh.SFTPClient, tree: Tree) -> tuple[list[Target], list[BulkError]]:
    """The regular files under ``tree.root``, and the subdirectories that could not be listed.

    Files are numbered in the order of their relative paths, the failed
    directories after them (they come last in the stream).
    """
    files: list[tuple[str, str]] = []
    failed: list[tuple[str, ServiceError]] = []
    level = [(tree.root, "")]
    root = True
    while level:
        subdirs: list[tuple[str, str]] = []
        for start in range(0, len(level), WALK_CONCURRENCY):
            part = level[start : start + WALK_CONCURRENCY]
            listings = await asyncio.gather(
                *(_listdir(sftp, path) for path, _ in part), return_exceptions=True
            )
            for (path, relative), listing in zip(part, listings, strict=True):
                if isinstance(listing, ServiceError) and not root:
                    failed.append((path, listing))
                    continue
                if isinstance(listing, BaseException):
                    raise listing
                for name, mode in listing:
                    if name.startswith(".") and not tree.show_hidden:
                        continue
                    child, child_relative = posixpath.join(path, name), relative + name
                    if stat.S_ISDIR(mode):
                        if tree.recursive:
                            subdirs.append((child, child_relative + "/"))
                    elif stat.S_ISREG(mode) and (
                        not tree.glob or fnmatch.fnmatchcase(child_relative, tree.glob)
                    ):
                        files.append((child, child_relative))
                        if len(files) > MAX_FILES:
                            raise _too_many(f"more than {MAX_FILES}")
        level, root = subdirs, False
    files.sort(key=lambda item: item[1])
    targets = [Target(i, path, relative) for i, (path, relative) in enumerate(files)]
    errors = [_error(len(files) + i, path, error) for i, (path, error) in enumerate(sorted(failed))]
    return targets, errors


async def _listdir(sftp: asyncssh.SFTPClient, path: str) -> list[tuple[str, int]]:
    """(name, st_mode of the entry itself) for each entry of directory ``path``."""
    try:
        names = await sftp.readdir(path)
    except asyncssh.SFTPError as error:
        raise sftp_error(error, path) from error
    entries = []
    for entry in names:
        name = entry.filename
        if isinstance(name, bytes):  # pragma: no cover - str with the default encoding
            name = name.decode(errors="surrogateescape")
        if name not in (".", ".."):
            entries.append((name, entry.attrs.permissions or 0))
    return entries


# -- the tar relay -----------------------------------------------------------


def confined_tar(confine: Confine) -> str:
    """The bash script running the bulk tar over those stdin names that lead inside."""
    # tar first: a root's name might hold "TAR", tar's argv never "HOLD".
    body = _CONFINED_TAR.replace("TAR", shlex.join(held.HELD_TAR_ARGV))
    return body.replace("HOLD", held.hold_function(confine.case_pattern()))


async def _relay_tar(
    conn: asyncssh.SSHClientConnection,
    targets: list[Target],
    chunk: int,
    limit: float,
    confine: Confine,
) -> AsyncIterator[list[BulkEvent]]:
    """Run tar over ``targets`` on ``conn`` and relay its archive as event batches."""
    names = b"".join(t.path.encode() + b"\0" for t in targets)
    script = ["bash", "-c", confined_tar(confine), "bash", confine.ere()]
    line = shlex.join(["timeout", f"--kill-after={KILL_AFTER}", f"{limit:.3f}", *script])
    started = time.monotonic()
    process = await retry_channel_open(conn, lambda: conn.create_process(line, encoding=None))
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        process.stdin.write(names)
        process.stdin.write_eof()
        named = held.HeldNames(len(targets))
        relay: TarRelay | None = None
        while data := await process.stdout.read(READ_SIZE):
            archive = named.feed(data)
            if named.names is None:
                continue
            if relay is None:
                relay = TarRelay(targets, chunk, named.names)
            relay.feed(archive)
            for batch in relay.take():
                yield batch
        await process.wait_closed()
        diagnostics = await stderr
        status = process.returncode
        if status in _TIMED_OUT and time.monotonic() - started >= limit:
            raise ServiceError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"tar did not finish within {limit:g} s",
                "COMMAND_TIMEOUT",
            )
        if status not in _TAR_OK:
            raise command_error(
                ["tar"], CommandResult(status if status is not None else -1, b"", diagnostics)
            )
        if relay is None:
            raise ServiceError(
                ErrorKind.INTERNAL, "tar's step ended before it named its files", "TAR_TRUNCATED"
            )
        relay.finish(_file_errors(diagnostics))
        for batch in relay.take():
            yield batch
    finally:
        stderr.cancel()
        await _close(process)


async def _close(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Stop the tar if it still runs (the caller went away) and close its channel."""
    if process.returncode is None:
        with contextlib.suppress(asyncssh.Error, OSError):
            process.terminate()
    process.close()
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        async with asyncio.timeout(CLOSE_GRACE):
            await process.wait_closed()


def _file_errors(stderr: bytes) -> dict[str, str]:
    """tar's complaint per file name, from its stderr (``tar: "NAME": MESSAGE``).

    A file in a directory the step could not hold gets why it could not
    (:func:`.held.unheld`), not tar's "Not a directory" of the fd left
    there.
    """
    reasons = held.unheld(stderr.decode(errors="replace"))
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        match = _DIAGNOSTIC.match(line)
        if match is None:
            continue
        raw, _ = codecs.escape_decode(match.group(1))
        name = raw.decode(errors="surrogateescape")
        message = match.group(2).decode(errors="replace")
        why = held.why_unheld(name, reasons)
        if why is not None:
            message = f"Cannot stat: {why}"
        found.setdefault(name, f"{name}: {message}")
    return found


class _Batcher:
    """Groups events into batches (one message each) of at most ``budget`` data bytes."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._sealed: list[list[BulkEvent]] = []
        self._events: list[BulkEvent] = []
        self._bytes = 0

    def add(self, event: BulkEvent) -> None:
        self._events.append(event)

    def data(self, index: int, data: memoryview) -> None:
        """Add ``data`` as chunks, cut so that no batch exceeds the budget."""
        while data:
            piece = data[: self._budget - self._bytes]
            self._events.append(BulkChunk(index, bytes(piece)))
            self._bytes += len(piece)
            data = data[len(piece) :]
            if self._bytes >= self._budget:
                self._seal()

    def _seal(self) -> None:
        self._sealed.append(self._events)
        self._events, self._bytes = [], 0

    def take(self) -> list[list[BulkEvent]]:
        """Every batch so far; the last one may be short (nothing waits for more data)."""
        if self._events:
            self._seal()
        batches, self._sealed = self._sealed, []
        return batches


class TarRelay:
    """Turns a tar stream, fed in arbitrary pieces, into event batches for ``targets``.

    The stream is read by :class:`.tarstream.TarReader`; this is its sink.
    A member that is not one of the targets is skipped (tar sends only what
    it was given); a target that is not a regular file becomes an error.
    """

    def __init__(
        self, targets: Iterable[Target], chunk: int, names: Sequence[str] | None = None
    ) -> None:
        """``names``: what tar was given for each target (default its path; "" if left out
        as outside the filesystems)."""
        listed = list(targets)
        self._pending: dict[str, deque[Target]] = {}
        self._outside: list[Target] = []
        for target, name in zip(listed, names or [t.path for t in listed], strict=True):
            if name:
                self._pending.setdefault(name, deque()).append(target)
            else:
                self._outside.append(target)
        self._batcher = _Batcher(chunk)
        self._reader = TarReader(self)
        # The regular file being relayed, and the digest of its data so far.
        self._current: Target | None = None
        self._digest = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        """Consume the next piece of the archive."""
        self._reader.feed(data)

    def take(self) -> list[list[BulkEvent]]:
        """The batches of events produced so far."""
        return self._batcher.take()

    def start(self, member: Member) -> bool:
        queue = self._pending.get(member.name)
        if not queue:
            return False
        target = queue.popleft()
        if member.regular:
            self._current = target
            self._digest = hashlib.sha256()
            mode = stat.S_IFREG | stat.S_IMODE(member.mode)
            self._batcher.add(
                BulkHeader(
                    target.index, target.path, target.relative_path, member.size, mode, member.mtime
                )
            )
            return True
        words = "Is a directory" if member.type == DIRECTORY else "not a regular file"
        self._batcher.add(
            BulkError(target.index, target.path, _code(words), f"{target.path}: {words}")
        )
        return False

    def data(self, piece: memoryview) -> None:
        assert self._current is not None
        self._digest.update(piece)
        self._batcher.data(self._current.index, piece)

    def end(self) -> None:
        assert self._current is not None
        self._batcher.add(BulkEnd(self._current.index, self._digest.hexdigest()))
        self._current = None

    def finish(self, diagnostics: dict[str, str]) -> None:
        """The archive ended: report every target tar did not send, with tar's reason."""
        if self._current is not None or self._reader.truncated:
            raise ServiceError(
                ErrorKind.INTERNAL,
                "tar's archive ended in the middle of a file",
                "TAR_TRUNCATED",
            )
        missing = sorted(
            ((target, name) for name, queue in self._pending.items() for target in queue),
            key=lambda pair: pair[0].index,
        )
        failures = [(t, f"{t.path}: {OUTSIDE_WORDS}") for t in self._outside]
        for target, name in missing:
            said = diagnostics.get(name)
            # tar names what it was given: say it of the asked path.
            words = said.removeprefix(f"{name}: ") if said else "not sent by tar"
            failures.append((target, f"{target.path}: {words}"))
        for target, message in sorted(failures, key=lambda pair: pair[0].index):
            self._batcher.add(BulkError(target.index, target.path, _code(message), message))
        self._pending.clear()
        self._outside.clear()


def _code(message: str) -> ErrorKind:
    """The status code of a per-file failure, from the cluster's words."""
    if message.endswith(OUTSIDE_WORDS):
        return ErrorKind.INVALID_ARGUMENT
    return command_error(["tar"], CommandResult(2, b"", message.encode())).code
