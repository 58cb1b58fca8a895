"""Concurrent reads of small files by one user, gathered into one remote ``tar``.

Why: an SFTP read of a small file is four requests (stat, open, read,
close), each encrypted, framed and decoded by asyncssh in this process. With
1,000 downloads in flight that is ~0.5 s of this process's CPU for the SSH
side alone, while one remote ``tar`` of the same 1,000 files takes 12 ms
(``make bench``: SFTP floor against tar floor). FirecREST clients fetch many
small files as many concurrent single-file requests, so under load the
server batches them itself:

* A read goes straight to SFTP while its user stays within a burst and a
  rate of direct reads (``data_operation.direct_read_burst`` and
  ``direct_read_rate``, a token bucket) and nothing is queued: a lone
  download, or a handful, keeps SFTP's latency (1.4 ms, against ~4.5 ms for
  starting the batch's processes). So does a lone read whatever the bucket
  says: downloads one after another never wait for a batch of one. How
  many reads are in flight is no measure of load: gRPC queues arriving calls before they reach the
  servicer, so a server saturated by 1,000 concurrent downloads still sees
  only a few in flight at a time.
* Beyond that it queues. A batch takes the queued paths (up to
  :data:`MAX_BATCH_FILES`), and a user has at most :data:`MAX_BATCHES` at
  once; while they run the queue grows, so batches grow with the load and no
  timer ever delays a read.
* A batch runs, as the user, one ``realpath -m`` of its paths, holds their
  real directories and names each file through its held directory
  (:mod:`.held`: no directory swapped for a link can lead tar outside), then
  ``find -P <names> -maxdepth 0 -type f -size -<N>c -print0 | tar ...
  --files-from=-`` (the bulk download's tar, see
  :mod:`hpcgate.server.filesystem.tarstream`, without ``--dereference``):
  only regular files (links were followed by realpath) of at most the batch
  size limit are archived, so a FIFO is never opened and a large file never
  rides along. Paths reach the shell only as positional parameters.
* Whatever a batch does not bring back (missing, unreadable, a directory, too
  large, or a batch that failed) is read the ordinary way, so every answer
  and every error is exactly what SFTP alone gives. A batch is trusted only
  when tar's diagnostics name nothing but files it could not open or stat:
  a file that shrank or changed while tar read it (tar pads with zeros) or a
  read error sends the whole batch the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import Counter

from hpcgate.server.config import DataOperationConfig
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.content import (
    FileInfo,
    StreamItem,
    read_small,
    stream_held,
    stream_read,
)
from hpcgate.server.filesystem.held import HELD_TAR_ARGV, HeldNames, hold_function
from hpcgate.server.filesystem.tarstream import Member, TarReader
from hpcgate.server.ssh import CommandResult, SSHPool, deadline_after

log = logging.getLogger(__name__)

# Batches of one user running at once.
MAX_BATCHES = 1
# A batch starts as soon as this many reads are queued, else after
# GATHER_TIME seconds: every batch costs the cluster a few processes
# (sshd's session, the shell, timeout, find, tar), so a few milliseconds of
# waiting that turn ten batches into two save more than they cost.
FULL_ENOUGH = 64
GATHER_TIME = 0.002
# Most files in one batch, and most bytes of their paths (the command line).
MAX_BATCH_FILES = 256
MAX_BATCH_PATH_BYTES = 64 * 1024
# Largest file a batch carries: a batch holds at most
# MAX_BATCH_FILES * MAX_FILE bytes (16 MiB) in memory.
MAX_FILE = 64 * 1024
# Time limit of one batch (waiting for a channel, then running), in seconds.
BATCH_TIME_LIMIT = 30.0

# "$1" is the size bound find takes (strictly less than, in bytes), "$2" the
# ERE of the places inside; the rest are the paths. One `realpath -m`, then
# the real directories held and the files named through them (:mod:`.held`);
# the paths leading outside are left out (and fall back to SFTP, which
# refuses them naming the field). tar's names for the paths come first on
# stdout, then the archive. find keeps regular files under the bound, not
# following a last link (-P), so a FIFO is never opened; its complaints
# (missing files, the empty names of paths outside) go nowhere: it only
# filters, and its lines would interleave with tar's on one pipe.
_SCRIPT = """
n=$1
export inside=$2 held_max=1000
shift 2
HOLD
hold realpath -z -m -- "$@"
printf '%s\\0' "${names[@]}"
find -P "${names[@]}" -maxdepth 0 -type f -size "-${n}c" -print0 2>/dev/null | LC_ALL=C TAR
"""
# tar diagnostics that only mean "this file is not in the archive".
_ABSENT = (": Cannot open: ", ": Cannot stat: ")
_TAR_GAVE_UP = "tar: Exiting with failure status due to previous errors"
# What the held step says of paths it left out (outside, or in a directory
# it could not hold): their reads fall back to SFTP, which says why.
_HELD_SAYS = "hpcgate: "

READS = Counter(
    "hpcgate_filesystem_small_reads_total",
    "Small-file reads, by how they were served: direct (SFTP), batched (a shared tar),"
    " fallback (queued, then read over SFTP because the batch did not bring the file)",
    ["system", "route"],
)
BATCHES = Counter(
    "hpcgate_filesystem_read_batches_total", "Remote tar runs serving batched reads", ["system"]
)


@dataclass(frozen=True)
class HeldFile:
    """A whole small file, read by a batch."""

    info: FileInfo
    data: bytes


Waiters = dict[str, list["asyncio.Future[HeldFile | None]"]]


@dataclass
class UserReads:
    """One user's reads: direct ones in flight, queued ones, running batches."""

    # Token bucket of direct reads: capacity, refill per second, tokens left,
    # and when it was last refilled.
    burst: int
    rate: float
    tokens: float
    refilled: float = field(default_factory=time.monotonic)
    direct: int = 0
    batches: int = 0
    queue: Waiters = field(default_factory=dict)
    flush_scheduled: bool = False

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now

    def take_direct(self) -> bool:
        """Whether a read may go straight to SFTP now (and if so, spend its token).

        A lone read (nothing else of the user's in flight or queued) goes
        direct even with the bucket empty: its batch would carry that one
        file only, and cost a tar's processes plus :data:`GATHER_TIME` for it
        (downloads one after another took ~3x the SFTP floor each). A burst
        of 0 turns direct reads off altogether.
        """
        self._refill()
        if self.queue:
            return False
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return self.burst > 0 and not self.direct and not self.batches

    def forgettable(self) -> bool:
        """Nothing in flight and the bucket full again: a fresh state would be the same."""
        if self.direct or self.batches or self.queue or self.flush_scheduled:
            return False
        self._refill()
        return self.tokens >= self.burst


class SmallReads:
    """The small-file reads of one system, batched per user under load (see the module doc).

    :meth:`download` serves a whole file; :meth:`claim` is for a reader
    that does its own SFTP read when no batch brought the file (a stream).
    """

    def __init__(self, pool: SSHPool, limits: DataOperationConfig, confine: Confine) -> None:
        """``limits``: the largest file a read may return, and the direct reads' burst and rate;
        ``confine``: the system's filesystems, outside which a batch reads nothing."""
        self._pool = pool
        self._confine = confine
        self._bound = min(MAX_FILE, limits.max_ops_file_size) + 1
        self._burst = limits.direct_read_burst
        self._rate = limits.direct_read_rate
        self._users: dict[str, UserReads] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._direct = READS.labels(pool.name, "direct")
        self._batched = READS.labels(pool.name, "batched")
        self._fallback = READS.labels(pool.name, "fallback")
        self._batches = BATCHES.labels(pool.name)

    @contextlib.asynccontextmanager
    async def claim(
        self, user: str, path: str, deadline: float | None
    ) -> AsyncIterator[HeldFile | None]:
        """``path``'s content if a batch brought it; else None, and the caller reads it over SFTP.

        The caller does its SFTP read inside the block, where it counts as
        one of the user's direct reads. Waiting for a batch ends at
        ``deadline`` with DEADLINE_EXCEEDED.
        """
        state = self._users.get(user)
        if state is None:
            self._sweep()
            state = self._users[user] = UserReads(self._burst, self._rate, self._burst)
        try:
            if not state.take_direct():
                held = await self._queued(user, state, path, deadline)
                if held is not None:
                    self._batched.inc()
                    yield held
                    return
                self._fallback.inc()
            else:
                self._direct.inc()
            state.direct += 1
            try:
                yield None
            finally:
                state.direct -= 1
        finally:
            self._forget_if_idle(user, state)

    async def download(
        self, user: str, path: str, deadline: float | None, confine: Confine, limit: int
    ) -> bytes:
        """The whole file ``path`` (at most ``limit`` bytes), as ``user``: FirecREST's download.

        From a batch if one brought it, else over SFTP (:func:`.content.read_small`,
        refusing a path that leads outside as ``confine`` says).
        """
        async with self.claim(user, path, deadline) as held:
            if held is not None:
                return held.data
            async with self._pool.sftp(user, deadline) as sftp:
                return await read_small(sftp, confine, path, limit)

    async def stream(
        self,
        user: str,
        path: str,
        deadline: float | None,
        confine: Confine,
        span: tuple[int, int | None],
        chunk: int,
    ) -> AsyncIterator[StreamItem]:
        """``path``'s bytes ``span`` (offset, length or None: to the end), as stream items.

        The header, chunks of ``chunk`` bytes and the digest trailer, from a
        batch if one brought the file, else over SFTP (:func:`.content.stream_read`).
        """
        offset, length = span
        async with self.claim(user, path, deadline) as held:
            if held is not None:
                for item in stream_held(held.info, held.data, path, offset, length, chunk):
                    yield item
                return
            async with self._pool.sftp(user, deadline) as sftp:
                async for item in stream_read(sftp, confine, path, offset, length, chunk):
                    yield item

    async def close(self) -> None:
        """Stop the running batches (their waiters fall back, and fail with the pool)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _queued(
        self, user: str, state: UserReads, path: str, deadline: float | None
    ) -> HeldFile | None:
        future: asyncio.Future[HeldFile | None] = asyncio.get_running_loop().create_future()
        state.queue.setdefault(path, []).append(future)
        self._schedule_flush(user, state)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ServiceError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"{path}: the deadline passed while the read waited for its batch",
                "READ_BATCH_TIMEOUT",
            ) from None

    def _schedule_flush(self, user: str, state: UserReads) -> None:
        """Start a batch soon: at the next turn of the event loop if enough reads
        are queued, else after :data:`GATHER_TIME` so that more can join."""
        if not state.flush_scheduled and state.batches < MAX_BATCHES:
            state.flush_scheduled = True
            loop = asyncio.get_running_loop()
            if len(state.queue) >= FULL_ENOUGH:
                loop.call_soon(self._flush, user, state)
            else:
                loop.call_later(GATHER_TIME, self._flush, user, state)

    def _flush(self, user: str, state: UserReads) -> None:
        state.flush_scheduled = False
        batch: Waiters = {}
        size = 0
        for path in list(state.queue):
            waiting = [f for f in state.queue.pop(path) if not f.done()]
            if not waiting:
                continue
            batch[path] = waiting
            size += len(path.encode()) + 1
            if len(batch) >= MAX_BATCH_FILES or size >= MAX_BATCH_PATH_BYTES:
                break
        if not batch:
            self._forget_if_idle(user, state)
            return
        state.batches += 1
        task = asyncio.create_task(self._run(user, state, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, user: str, state: UserReads, batch: Waiters) -> None:
        files: dict[str, HeldFile] = {}
        try:
            self._batches.inc()
            result = await self._pool.run(
                user,
                [
                    "bash",
                    "-c",
                    self._script(),
                    "bash",
                    str(self._bound),
                    self._confine.ere(),
                    *batch,
                ],
                # Bounded in the pool's queue too: a batch that finds no free
                # channel in time gives way, and its reads go to SFTP.
                deadline=deadline_after(BATCH_TIME_LIMIT),
            )
            files = _archived(result, self._bound, list(batch))
        except Exception as error:  # every waiter falls back and meets its own error
            log.info("read batch of %d files for %s failed: %s", len(batch), user, error)
        finally:
            state.batches -= 1
            for path, waiting in batch.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(files.get(path))
            if state.queue:
                self._schedule_flush(user, state)
            self._forget_if_idle(user, state)

    def _script(self) -> str:
        # Built per batch: the roots' real places are learned on first use.
        pattern = self._confine.case_pattern()
        # tar first: a root's name might hold "TAR", tar's argv never "HOLD".
        body = _SCRIPT.replace("TAR", shlex.join(HELD_TAR_ARGV))
        return body.replace("HOLD", hold_function(pattern))

    def _forget_if_idle(self, user: str, state: UserReads) -> None:
        if state.forgettable() and self._users.get(user) is state:
            del self._users[user]

    def _sweep(self) -> None:
        """Drop the states of users who have gone quiet (a user's state outlives their
        reads until its bucket is full again, so that a busy user's pauses do not
        hand out a fresh burst)."""
        for user, state in list(self._users.items()):
            self._forget_if_idle(user, state)


def trusted(result: CommandResult) -> bool:
    """Whether every member of the batch's archive holds its file's whole, true content."""
    if result.exit_status not in (0, 2):
        return False
    for line in result.stderr.decode(errors="replace").splitlines():
        if line == _TAR_GAVE_UP or line.startswith(_HELD_SAYS):
            continue
        if line.startswith("tar: ") and any(mark in line for mark in _ABSENT):
            continue
        return False
    return True


class _Collected:
    """The sink of a batch's archive: its regular files under the bound, whole, by name."""

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self.files: dict[str, HeldFile] = {}
        self._member: Member | None = None
        self._pieces: list[bytes] = []

    def start(self, member: Member) -> bool:
        if not member.regular or member.size >= self._bound:
            return False  # grew past the limit after find measured it: read it directly
        self._member, self._pieces = member, []
        return True

    def data(self, piece: memoryview) -> None:
        self._pieces.append(bytes(piece))

    def end(self) -> None:
        member = self._member
        assert member is not None
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        info = FileInfo(member.size, stat.S_IFREG | member.mode, float(member.mtime))
        self.files[member.name] = HeldFile(info, data)
        self._member, self._pieces = None, []


def _archived(result: CommandResult, bound: int, paths: list[str]) -> dict[str, HeldFile]:
    """The regular files of a trusted batch's archive, by asked path; nothing if not trusted.

    stdout is tar's name for each of ``paths`` (:class:`.held.HeldNames`),
    then the archive.
    """
    if not trusted(result):
        log.info("read batch not trusted (exit %d): %r", result.exit_status, result.stderr[:500])
        return {}
    held = HeldNames(len(paths))
    archive = held.feed(result.stdout)
    if held.names is None:
        log.warning("read batch returned no names for its paths")
        return {}
    if not archive:
        return {}  # nothing in the batch was inside and readable
    collected = _Collected(bound)
    reader = TarReader(collected)
    try:
        reader.feed(archive)
    except ServiceError as error:
        log.warning("read batch returned a malformed archive: %s", error.message)
        return {}
    if reader.truncated:
        log.warning("read batch returned a malformed archive: it ends inside a member's data")
        return {}
    return {
        path: collected.files[name]
        for path, name in zip(paths, held.names, strict=True)
        if name in collected.files
    }
