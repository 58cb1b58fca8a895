"""Per-user SSH connection pools: one :class:`SSHPool` per system, keyed by user.

Every request runs on the cluster as the caller, so connections are never
shared between users. For each user the pool keeps up to ``K`` connections
(``ssh.pool.max_connections``). Each connection has up to ``S`` channels open
(``ssh.pool.max_channels``): its exec sessions plus, while it is open, its one
SFTP channel. ``S`` must not exceed the sshd's ``MaxSessions``. SFTP requests
do not take channels: they are pipelined on the shared SFTP channel (one
session whatever their number), up to ``R`` in flight per connection
(``ssh.pool.max_sftp_requests``). A *slot* below is either an exec channel or
one SFTP request.

How capacity is handed out:

* A request takes a free slot at once when nobody of the same user is queued.
  Among connections with room it takes the busiest one, so that surplus
  connections drain and the idle timer closes them.
* Otherwise it queues in the user's FIFO, and the pool starts new connections
  (never beyond ``K``) for the queued requests that neither a free slot nor a
  connection already being opened will serve. A freed slot goes to the head of
  the queue; a new connection serves up to ``S`` queued commands (``S - 1``
  beside its SFTP channel) and up to ``R`` queued SFTP requests. SFTP load
  alone therefore asks for one connection per ``R`` queued requests, not per
  ``S``: requests on one channel are cheap, another login is not.
* Fairness comes from structure: queues are per user, so one user's backlog
  never delays another user's request. Connections are opened by background
  tasks without any lock shared between users, so a slow login of one user
  does not hold up another's either.
* A waiter gives up at its deadline (the RPC's) with DEADLINE_EXCEEDED.
* The persistent SFTP channel counts as one channel against ``S`` while it
  is open (or about to be), so the number of open channels per connection
  never exceeds ``S`` (sshd refuses channels beyond ``MaxSessions``).
* A connection with no slot in use for ``timeouts.idle`` seconds is closed by
  a per-connection timer. A connection that dies (sshd restart, network) is
  dropped as soon as asyncssh reports the loss; only the requests in flight on
  it fail (UNAVAILABLE, ``SSH_CONNECTION_LOST``), and queued or new requests
  get a fresh connection.
* OpenSSH frees a closed channel's session lazily, so an open right after a
  close may be refused although the slot is free on our side; such opens are
  retried (:func:`retry_channel_open`). A command abandoned before it ended
  (deadline, cancellation) is sent TERM so that sshd frees its session; if
  its channel still does not close, the connection takes no new work and is
  closed once its other requests finish.

Scheduler commands (``run(..., scheduler=True)``) take a place in the user's
scheduler share first (:mod:`.shares`, ``pool.max_scheduler_commands``), so
however many hang, the user's other channels stay free for filesystem calls;
they run for at most ``scheduler.command_timeout``, and running out of it is
UNAVAILABLE (``SCHEDULER_TIMEOUT``: the scheduler did not answer), not the
caller's deadline.

Deadlines are absolute ``time.monotonic()`` values (see :func:`deadline_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shlex
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import asyncssh
import grpc

from hpcgate.server.config import Settings, SSHConfig, SSHPoolLimits, SystemConfig
from hpcgate.server.errors import ServiceError, redact_addresses
from hpcgate.server.ssh.credentials import (
    CredentialProvider,
    build_credential_provider,
    check_username,
)
from hpcgate.server.ssh.metrics import PoolMetrics
from hpcgate.server.ssh.shares import Share

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the remote `timeout` waits after TERM before it sends KILL.
KILL_AFTER = 5
# Extra seconds the local side waits beyond the remote timeout before giving up.
LOCAL_GRACE = 5.0
# Seconds to wait for a channel or connection to finish closing.
CLOSE_GRACE = 5.0
# Keepalives that may go unanswered before a connection counts as dead.
KEEPALIVE_COUNT_MAX = 3
# A command gets at least this much time, or it is not started at all.
MIN_COMMAND_TIME = 0.05
# Seconds between connection attempts after one failed, while other
# connections of the user still serve its queue.
CONNECT_RETRY_DELAY = 1.0
# A refused session channel is retried after these pauses (seconds). OpenSSH
# frees a closed channel's session only after the batch of packets that closed
# it, so an open that arrives in the same batch fails with "open failed" even
# though our side already counts the slot as free; the next try succeeds.
CHANNEL_OPEN_RETRY_DELAYS = (0.0, 0.01, 0.05, 0.1, 0.25)
# Ciphers offered first, ahead of asyncssh's defaults ("^": prepend). AES-GCM
# seals a packet in one call (AES-NI), while asyncssh's chacha20-poly1305
# (its first choice) builds three ChaCha20 contexts per packet; every SFTP
# request is two packets (asyncssh sends an SSH_MSG_IGNORE before each), so
# for many small files this is the largest CPU cost of the SSH side: 1,000
# stat/open/read/close downloads took 0.53 s of CPU with chacha20, 0.34 s
# with AES-GCM. A server that offers neither still gets asyncssh's defaults.
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
# ChannelOpenError codes with which sshd refuses a session channel.
_SESSION_REFUSED = (asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, asyncssh.OPEN_CONNECT_FAILED)
# Exit statuses of `timeout`: the command timed out (TERM), or needed KILL.
_TIMEOUT_STATUSES = (124, 128 + 9)


def deadline_after(seconds: float | None) -> float | None:
    """The absolute deadline ``seconds`` from now (None stays None).

    For a gRPC handler: ``deadline_after(context.time_remaining())``.
    """
    return None if seconds is None else time.monotonic() + seconds


async def retry_channel_open(
    conn: asyncssh.SSHClientConnection, open_channel: Callable[[], Awaitable[T]]
) -> T:
    """``await open_channel()``, retried while sshd transiently refuses a session.

    Callers of :meth:`SSHPool.session` should open their channel through this
    too: right after another channel closed, sshd may still count it against
    ``MaxSessions`` (see :data:`CHANNEL_OPEN_RETRY_DELAYS`).
    """
    for delay in CHANNEL_OPEN_RETRY_DELAYS:
        try:
            return await open_channel()
        except asyncssh.ChannelOpenError as error:
            if error.code not in _SESSION_REFUSED or conn.is_closed():
                raise
        await asyncio.sleep(delay)
    return await open_channel()


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    exit_status: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class UserStats:
    """Occupancy of one user's pool (or the sum over users)."""

    connections: int = 0
    # Slots held: exec channels plus SFTP requests in flight.
    channels_in_use: int = 0
    waiters: int = 0
    # Connections being opened right now.
    connecting: int = 0
    # Most connections this user held at once (high-water mark; in the total,
    # the sum of the users' marks).
    peak_connections: int = 0


@dataclass(frozen=True)
class PoolStats:
    """Occupancy of a system's pool, per user and in total."""

    system: str
    users: Mapping[str, UserStats]
    total: UserStats


class _Kind(enum.Enum):
    """What a channel slot is used for."""

    EXEC = "exec"
    SFTP = "sftp"


def _unavailable(message: str, reason: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, reason)


def _copy(error: ServiceError) -> ServiceError:
    """A fresh instance of ``error``, so each failed waiter raises its own."""
    return ServiceError(
        error.code, error.message, error.reason, fields=error.fields, metadata=error.metadata
    )


class _Client(asyncssh.SSHClient):
    """Reports the loss of its connection to the pool."""

    def __init__(self) -> None:
        self.on_lost: Callable[[Exception | None], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Called by asyncssh when the connection closes, cleanly or not."""
        if self.on_lost is not None:
            self.on_lost(exc)


class _Connection:
    """One pooled SSH connection and the slots in use on it.

    ``execs`` counts exec channels, ``sftp_requests`` the SFTP requests in
    flight; the latter share one channel, which counts once against ``S``.
    """

    def __init__(
        self, conn: asyncssh.SSHClientConnection, jump: asyncssh.SSHClientConnection | None
    ) -> None:
        self.conn = conn
        self.jump = jump
        self.execs = 0
        self.sftp_requests = 0
        self.sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()
        self._sftp_watch: asyncio.Future[None] | None = None
        # Set once the pool stops using this connection (closed, idle or lost).
        self.retired = False
        # A channel on it would not close: give it no new work, close it when drained.
        self.unhealthy = False
        self.idle_timer: asyncio.TimerHandle | None = None

    @property
    def in_use(self) -> int:
        """Slots held by requests (exec channels and SFTP requests)."""
        return self.execs + self.sftp_requests

    def channels(self, kind: _Kind | None = None) -> int:
        """Channels open, counting those one more request of ``kind`` would need.

        The SFTP channel occupies one channel while it is open, even idle,
        and from the moment an SFTP request holds a slot (it is about to be
        opened); the requests on it add no channel.
        """
        execs = self.execs + (kind is _Kind.EXEC)
        sftp_channel = self.sftp is not None or self.sftp_requests > 0 or kind is _Kind.SFTP
        return execs + sftp_channel

    def fits(self, kind: _Kind, limits: SSHPoolLimits) -> bool:
        """Whether one more request of ``kind`` stays within ``S`` channels and ``R`` requests."""
        if self.channels(kind) > limits.max_channels:
            return False
        return kind is _Kind.EXEC or self.sftp_requests < limits.max_sftp_requests

    def take(self, kind: _Kind) -> None:
        """Reserve a slot of ``kind``."""
        self.cancel_idle_timer()
        if kind is _Kind.EXEC:
            self.execs += 1
        else:
            self.sftp_requests += 1

    def give_back(self, kind: _Kind) -> None:
        """Return a slot of ``kind``."""
        if kind is _Kind.EXEC:
            self.execs -= 1
        else:
            self.sftp_requests -= 1

    def cancel_idle_timer(self) -> None:
        """Stop the idle countdown (the connection is in use again)."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    async def sftp_client(self) -> asyncssh.SFTPClient:
        """The connection's SFTP client, started on first use and then reused."""
        async with self._sftp_lock:
            if self.sftp is None:
                client = await retry_channel_open(self.conn, self.conn.start_sftp_client)
                self.sftp = client
                # Forget the client if its channel closes on its own (sftp-server died).
                self._sftp_watch = asyncio.ensure_future(client.wait_closed())
                self._sftp_watch.add_done_callback(lambda _: self._forget_sftp(client))
            return self.sftp

    def drop_sftp(self) -> None:
        """Close the (unused) SFTP channel, freeing its channel for a command."""
        if self.sftp is not None:
            self.sftp.exit()
            self.sftp = None

    def _forget_sftp(self, client: asyncssh.SFTPClient) -> None:
        if self.sftp is client:
            self.sftp = None

    def close(self) -> None:
        """Start closing the connection (and its jump host connection)."""
        self.cancel_idle_timer()
        self.conn.close()
        if self.jump is not None:
            self.jump.close()

    async def wait_closed(self) -> None:
        """Wait, briefly, until the connection is closed."""
        with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
            async with asyncio.timeout(CLOSE_GRACE):
                await self.conn.wait_closed()
                if self.jump is not None:
                    await self.jump.wait_closed()


@dataclass(eq=False)
class _Waiter:
    """A queued request: the future receives a connection with its slot reserved."""

    kind: _Kind
    future: asyncio.Future[_Connection] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _UserPool:
    """The connections, queue and accounting of one user on one system."""

    def __init__(self, owner: SSHPool, user: str) -> None:
        self.owner = owner
        self.user = user
        self.connections: list[_Connection] = []
        self.connecting = 0
        self.waiters: deque[_Waiter] = deque()
        # Queued SFTP requests (the rest of the queue are commands), kept
        # current so that sizing the queue's needs does not walk it.
        self.sftp_waiters = 0
        # Slots held by requests, including those on connections already lost.
        self.in_use = 0
        self.peak = 0
        # After a failed connect, no further one before this time while
        # connections exist (they serve the queue meanwhile).
        self.grow_after = 0.0

    @property
    def idle(self) -> bool:
        """Whether nothing references this user's pool any more."""
        return not (self.connections or self.connecting or self.waiters or self.in_use)

    def stats(self) -> UserStats:
        """This user's occupancy."""
        return UserStats(
            len(self.connections), self.in_use, len(self.waiters), self.connecting, self.peak
        )

    async def acquire(self, kind: _Kind, deadline: float | None) -> _Connection:
        """A connection with one slot of ``kind`` reserved; waits FIFO until ``deadline``."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            self.owner.forget_if_idle(self)
            raise self._wait_timeout()
        if not self.waiters:
            conn = self._pick(kind)
            if conn is not None:
                self._take(conn, kind)
                return conn
        waiter = _Waiter(kind)
        self.waiters.append(waiter)
        self.sftp_waiters += kind is _Kind.SFTP
        self.owner.metrics.waiters.inc()
        self._grow()
        try:
            async with asyncio.timeout(remaining):
                return await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise self._wait_timeout() from None
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self, conn: _Connection, kind: _Kind) -> None:
        """Return a slot; serve the queue; start the idle countdown if unused.

        A retired connection is closed instead once its last slot is back.
        """
        conn.give_back(kind)
        self.in_use -= 1
        self.owner.metrics.channels_in_use.dec()
        if conn.unhealthy:
            self.retire(conn)
        if conn.retired:
            if conn.in_use == 0:
                conn.close()  # a drained connection; closing twice is harmless
        elif conn.in_use == 0:
            self._arm_idle_timer(conn)
        self._dispatch()
        self.owner.forget_if_idle(self)

    def retire(self, conn: _Connection) -> None:
        """Stop using ``conn`` (it is closed, idle or lost); requests on it keep their slots."""
        if conn.retired:
            return
        conn.retired = True
        conn.cancel_idle_timer()
        self.connections.remove(conn)
        self.owner.metrics.connections.dec()

    def fail_waiters(self, error: ServiceError) -> None:
        """Fail every queued request with (a copy of) ``error``."""
        while self.waiters:
            waiter = self._popleft()
            if not waiter.future.done():
                waiter.future.set_exception(_copy(error))

    # -- internals ---------------------------------------------------------

    def _pick(self, kind: _Kind) -> _Connection | None:
        """The busiest connection with room for ``kind``, or None.

        Busiest by channels, then by requests: SFTP requests gather on one
        channel (pipelined, as a single SFTP client would send them) instead
        of opening the SFTP channel of every connection, and surplus
        connections drain so that the idle timer closes them.

        When no connection has room and none may be added (K reached), an
        idle SFTP channel is closed to make room for a command: otherwise
        with small S a connection whose only channel is an unused SFTP
        session would never run a command again.
        """
        limits = self.owner.limits
        best: _Connection | None = None
        for conn in self.connections:
            if conn.fits(kind, limits) and (best is None or _busier(conn, best)):
                best = conn
        if best is not None or kind is _Kind.SFTP or self._may_grow():
            return best
        for conn in self.connections:
            if (
                conn.sftp is not None
                and conn.sftp_requests == 0
                and conn.execs < limits.max_channels
            ):
                conn.drop_sftp()
                return conn
        return None

    def _may_grow(self) -> bool:
        """Whether another connection may be opened now (below K, not backing off)."""
        if len(self.connections) + self.connecting >= self.owner.limits.max_connections:
            return False
        return not self.connections or time.monotonic() >= self.grow_after

    def _popleft(self) -> _Waiter:
        """Take the head off the queue."""
        waiter = self.waiters.popleft()
        self.sftp_waiters -= waiter.kind is _Kind.SFTP
        self.owner.metrics.waiters.dec()
        return waiter

    def _take(self, conn: _Connection, kind: _Kind) -> None:
        conn.take(kind)
        self.in_use += 1
        self.owner.metrics.channels_in_use.inc()

    def _dispatch(self) -> None:
        """Hand free slots to the queue head, in order; open connections if needed."""
        while self.waiters:
            waiter = self.waiters[0]
            if waiter.future.done():  # gave up; normally removed already
                self._popleft()
                continue
            conn = self._pick(waiter.kind)
            if conn is None:
                break
            self._popleft()
            self._take(conn, waiter.kind)
            waiter.future.set_result(conn)
        self._grow()

    def _grow(self) -> None:
        """Open connections for the queued requests nothing else will serve (up to K).

        The queue needs :func:`_connections_for` new connections; those being
        opened already count towards them.
        """
        if self.owner.closed or not self.waiters:
            return
        sftp = self.sftp_waiters
        needed = _connections_for(len(self.waiters) - sftp, sftp, self.owner.limits)
        while self.connecting < needed and self._may_grow():
            self.connecting += 1
            self.owner.spawn(self._connect())

    async def _connect(self) -> None:
        """Open one connection (a background task: no request owns it)."""
        try:
            conn = await self.owner.open_connection(self.user, self._lost)
        except ServiceError as error:
            self.connecting -= 1
            self._connect_failed(error)
            return
        except BaseException:
            self.connecting -= 1
            raise
        self.connecting -= 1
        if conn.conn.is_closed() or self.owner.closed:
            conn.retired = True  # never pooled: the loss callback ignores it
            conn.close()
            if not self.owner.closed:
                lost = _unavailable("the new SSH connection closed at once", "SSH_UNREACHABLE")
                self._connect_failed(lost)
            return
        self.owner.live.add(conn)
        self.connections.append(conn)
        self.peak = max(self.peak, len(self.connections))
        self.owner.metrics.connections.inc()
        self.owner.metrics.connections_opened.inc()
        self._dispatch()
        if conn.in_use == 0:
            self._arm_idle_timer(conn)

    def _connect_failed(self, error: ServiceError) -> None:
        """Fail the queue when no connection exists or is coming; else let it wait."""
        self.owner.metrics.connect_failed(error.reason)
        # The queue is still served by the existing connections: retry later.
        self.grow_after = time.monotonic() + CONNECT_RETRY_DELAY
        log.warning("ssh connect to %s as %s failed: %s", self.owner.name, self.user, error.message)
        if not self.connections and not self.connecting:
            self.fail_waiters(error)
        self.owner.forget_if_idle(self)

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        """asyncssh reports ``conn`` closed; drop it unless the pool closed it."""
        self.owner.live.discard(conn)
        if conn.retired:
            return
        log.warning(
            "ssh connection to %s as %s lost: %s", self.owner.name, self.user, exc or "closed"
        )
        self.owner.metrics.connections_lost.inc()
        self.retire(conn)
        self._dispatch()
        self.owner.forget_if_idle(self)

    def _abandon(self, waiter: _Waiter) -> None:
        """Clean up after a waiter that gave up (deadline or cancellation)."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            # The slot arrived just as the waiter gave up: hand it on.
            self.release(future.result(), waiter.kind)
            return
        future.cancel()
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)
            self.sftp_waiters -= waiter.kind is _Kind.SFTP
            self.owner.metrics.waiters.dec()
        self._dispatch()
        self.owner.forget_if_idle(self)

    def _arm_idle_timer(self, conn: _Connection) -> None:
        conn.cancel_idle_timer()
        conn.idle_timer = asyncio.get_running_loop().call_later(
            self.owner.timeouts.idle, self._close_idle, conn
        )

    def _close_idle(self, conn: _Connection) -> None:
        conn.idle_timer = None
        if conn.retired or conn.in_use:
            return
        log.info("closing idle ssh connection to %s as %s", self.owner.name, self.user)
        self.retire(conn)
        conn.close()
        self.owner.forget_if_idle(self)

    def _wait_timeout(self) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no SSH channel to {self.owner.name} became free for {self.user} before the"
            f" deadline ({len(self.connections)} connections busy, {len(self.waiters)} waiting)",
            "SSH_POOL_TIMEOUT",
        )


def _busier(conn: _Connection, other: _Connection) -> bool:
    """Whether ``conn`` has more channels open than ``other``, or as many and more requests."""
    return (conn.channels(), conn.in_use) > (other.channels(), other.in_use)


def _connections_for(execs: int, sftp: int, limits: SSHPoolLimits) -> int:
    """New connections that would serve ``execs`` queued commands and ``sftp`` SFTP requests.

    A connection takes up to ``S`` commands, or ``R`` SFTP requests on its
    SFTP channel beside up to ``S - 1`` commands (with ``S = 1`` the two
    kinds need connections of their own).
    """
    per_sftp = limits.max_sftp_requests
    if sftp == 0:
        return -(-execs // limits.max_channels)
    for_sftp = -(-sftp // per_sftp)
    beside = limits.max_channels - 1
    if beside == 0:
        return for_sftp + execs
    return max(for_sftp, -(-execs // beside))


class SSHPool:
    """The SSH connections to one system, pooled per user. See the module doc."""

    def __init__(self, system: SystemConfig, credentials: CredentialProvider) -> None:
        """``credentials`` supplies each user's key and certificate at connect time."""
        self.name = system.name
        self.ssh: SSHConfig = system.ssh
        self.limits = system.ssh.pool
        self.timeouts = system.ssh.timeouts
        self.metrics = PoolMetrics(system.name)
        self.closed = False
        self.scheduler_timeout = min(system.scheduler.command_timeout, self.timeouts.command)
        # Scheduler commands hold at most this share of each user's channels.
        self.scheduler_share = Share(
            system.name, "scheduler", self.limits.scheduler_commands, self.scheduler_timeout
        )
        self._credentials = credentials
        self._users: dict[str, _UserPool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Every connection whose transport is open, pooled or draining.
        self.live: set[_Connection] = set()

    # -- public API --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(
        self, user: str, deadline: float | None = None
    ) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """A connection of ``user`` with one channel slot reserved for the caller.

        For callers that open exactly one channel themselves, through
        :func:`retry_channel_open`; the channel must be closed before the
        block ends. Transport failures inside the block become UNAVAILABLE
        (``SSH_CONNECTION_LOST``).
        """
        async with self._slot(user, _Kind.EXEC, deadline) as conn:
            yield conn.conn

    @contextlib.asynccontextmanager
    async def sftp(
        self, user: str, deadline: float | None = None
    ) -> AsyncIterator[asyncssh.SFTPClient]:
        """The SFTP client of one of ``user``'s connections, with one request slot reserved.

        The connection's SFTP channel is opened on first use and shared by
        concurrent callers; each caller counts against ``max_sftp_requests``
        (the channel itself, once, against ``max_channels``). A caller may
        pipeline a few requests of its own on the client (read and close,
        say); the bound is on callers, to keep the channel's queue short.
        """
        async with self._slot(user, _Kind.SFTP, deadline) as conn:
            try:
                client = await conn.sftp_client()
            except (asyncssh.Error, OSError) as error:
                if conn.conn.is_closed():
                    raise
                raise _unavailable(
                    f"cannot start SFTP on {self.name}: {_describe(error)}",
                    "SSH_SFTP_UNAVAILABLE",
                ) from error
            yield client

    async def run(
        self,
        user: str,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the remote command's limit
        deadline: float | None = None,
        scheduler: bool = False,
    ) -> CommandResult:
        """Run ``argv`` as ``user`` and collect its exit status and output.

        The command line is built only from quoted arguments and wrapped in
        the remote ``timeout`` (``timeout`` seconds, default
        ``timeouts.command``, cut to the deadline), so a runaway command is
        killed on the cluster, not just abandoned. Raises DEADLINE_EXCEEDED
        (``COMMAND_TIMEOUT``) when it ran out of time.

        A ``scheduler`` command counts against the user's scheduler share and
        runs for ``scheduler.command_timeout`` at most; when that runs out (not
        the deadline), the scheduler is the one not answering: UNAVAILABLE.
        """
        if not argv:
            raise ValueError("argv must name a command")
        budget = self.timeouts.command if timeout is None else timeout
        if not scheduler:
            return await self._run(user, argv, stdin, budget, deadline, None)
        budget = min(budget, self.scheduler_timeout)
        async with self.scheduler_share.hold(user, deadline):
            return await self._run(user, argv, stdin, budget, deadline, "scheduler")

    async def _run(
        self,
        user: str,
        argv: Sequence[str],
        stdin: bytes | None,
        budget: float,
        deadline: float | None,
        service: str | None,
    ) -> CommandResult:
        """Reserve an exec slot and run ``argv`` within ``budget`` (cut to the deadline)."""
        async with self._slot(user, _Kind.EXEC, deadline) as conn:
            cut_by_deadline = False
            if deadline is not None and deadline - time.monotonic() < budget:
                budget = deadline - time.monotonic()
                cut_by_deadline = True
            timed_out = partial(_command_timeout, self.name, argv, budget, cut_by_deadline, service)
            if budget < MIN_COMMAND_TIME:
                raise timed_out()
            return await self._execute(conn, argv, stdin, budget, timed_out)

    def stats(self) -> PoolStats:
        """Connections, slots in use and waiters, per user and in total."""
        users = {name: pool.stats() for name, pool in self._users.items()}
        total = UserStats(
            connections=sum(s.connections for s in users.values()),
            channels_in_use=sum(s.channels_in_use for s in users.values()),
            waiters=sum(s.waiters for s in users.values()),
            connecting=sum(s.connecting for s in users.values()),
            peak_connections=sum(s.peak_connections for s in users.values()),
        )
        return PoolStats(self.name, users, total)

    async def close(self) -> None:
        """Fail queued requests, stop connecting, and close every connection."""
        self.closed = True
        closed = _unavailable(f"the SSH pool of {self.name} is shut down", "SSH_POOL_CLOSED")
        for pool in list(self._users.values()):
            pool.fail_waiters(closed)
            for conn in list(pool.connections):
                pool.retire(conn)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        connections = list(self.live)
        for conn in connections:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in connections))

    # -- used by _UserPool -------------------------------------------------

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a background task that close() cancels."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget_if_idle(self, pool: _UserPool) -> None:
        """Drop a user's empty pool so the table does not grow with every user ever seen."""
        if pool.idle and self._users.get(pool.user) is pool:
            del self._users[pool.user]

    async def open_connection(
        self, user: str, on_lost: Callable[[_Connection, Exception | None], None]
    ) -> _Connection:
        """Log in as ``user``; raise ServiceError (UNAVAILABLE, PERMISSION_DENIED)."""
        credentials = await self._credentials.credentials(user)
        client_keys = credentials.client_keys()
        client = _Client()
        jump: asyncssh.SSHClientConnection | None = None
        try:
            if self.ssh.proxy_jump is not None:
                jump_user, jump_host, jump_port = _parse_jump(self.ssh.proxy_jump)
                jump = await asyncssh.connect(
                    jump_host, jump_port, **self._options(jump_user or user, client_keys)
                )
            conn = await asyncssh.connect(
                self.ssh.host,
                self.ssh.port,
                tunnel=jump if jump is not None else (),
                client_factory=lambda: client,
                **self._options(user, client_keys),
            )
        except (asyncssh.Error, OSError) as error:
            if jump is not None:
                jump.close()
            raise self._connect_error(user, error) from error
        except BaseException:
            if jump is not None:
                jump.close()
            raise
        pooled = _Connection(conn, jump)
        client.on_lost = lambda exc: on_lost(pooled, exc)
        log.info("opened ssh connection to %s as %s", self.name, user)
        return pooled

    # -- internals ---------------------------------------------------------

    def _pool_of(self, user: str) -> _UserPool:
        pool = self._users.get(user)
        if pool is None:
            pool = self._users[user] = _UserPool(self, user)
        return pool

    @contextlib.asynccontextmanager
    async def _slot(
        self, user: str, kind: _Kind, deadline: float | None
    ) -> AsyncIterator[_Connection]:
        """Reserve a slot for the block; turn a connection dying under it into UNAVAILABLE."""
        if self.closed:
            raise _unavailable(f"the SSH pool of {self.name} is shut down", "SSH_POOL_CLOSED")
        check_username(user)  # before the name becomes a key of the user table
        pool = self._pool_of(user)
        conn = await pool.acquire(kind, deadline)
        try:
            yield conn
        except (asyncssh.Error, OSError) as error:
            mapped = self._in_flight_error(pool, conn, error)
            if mapped is None:
                raise
            raise mapped from error
        except Exception as error:
            # asyncssh may fail in odd ways (an AssertionError in its channel
            # set-up) when the connection closes under a channel being opened;
            # with the connection gone, that is a lost connection.
            lost = None
            if conn.conn.is_closed():
                lost = self._in_flight_error(pool, conn, ConnectionError(str(error)))
            if lost is None:
                raise
            raise lost from error
        finally:
            pool.release(conn, kind)

    def _in_flight_error(
        self, pool: _UserPool, conn: _Connection, error: Exception
    ) -> ServiceError | None:
        """The ServiceError for a transport failure during a request, or None for others."""
        if isinstance(error, asyncssh.ChannelOpenError) and not conn.conn.is_closed():
            if error.code in _SESSION_REFUSED:
                return _unavailable(
                    f"{self.name} refused another SSH channel (is ssh.pool.max_channels"
                    f" above the sshd's MaxSessions?): {error.reason}",
                    "SSH_CHANNEL_REFUSED",
                )
            return None
        dead = conn.conn.is_closed() or isinstance(
            error, asyncssh.DisconnectError | ConnectionError
        )
        if isinstance(error, asyncssh.SFTPConnectionLost) and not dead:
            conn.sftp = None  # only the SFTP channel died; reopen it next time
        elif not dead:
            return None
        else:
            pool.retire(conn)
            conn.close()
        return _unavailable(
            f"the SSH connection to {self.name} was lost during the request: {_describe(error)}",
            "SSH_CONNECTION_LOST",
        )

    async def _execute(
        self,
        conn: _Connection,
        argv: Sequence[str],
        stdin: bytes | None,
        budget: float,
        timed_out: Callable[[], ServiceError],
    ) -> CommandResult:
        """Run the wrapped command line on ``conn``'s reserved slot."""
        line = shlex.join(["timeout", f"--kill-after={KILL_AFTER}", f"{budget:.3f}", *argv])
        started = time.monotonic()
        process = await retry_channel_open(
            conn.conn, lambda: conn.conn.create_process(line, encoding=None)
        )
        try:
            async with asyncio.timeout(budget + KILL_AFTER + LOCAL_GRACE):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if stdin:
                        process.stdin.write(stdin)
                    process.stdin.write_eof()
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise timed_out() from None
        finally:
            await self._finish(conn, process)
        status = process.returncode
        if status is None:
            # The channel closed without an exit status: the connection went away.
            raise asyncssh.ConnectionLost("channel closed without an exit status")
        if status in _TIMEOUT_STATUSES and time.monotonic() - started >= budget:
            raise timed_out()
        return CommandResult(status, bytes(stdout), bytes(stderr))

    @staticmethod
    async def _finish(conn: _Connection, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """Close the command's channel, stopping the command if it still runs.

        sshd keeps counting a session against MaxSessions until its process
        exits, so an abandoned command (deadline, cancellation) gets a TERM
        (``timeout`` passes it on). If the channel still does not close, the
        connection is drained: no new requests, closed once its slots are free.
        """
        if process.returncode is None:
            with contextlib.suppress(asyncssh.Error, OSError):
                process.terminate()
        process.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await process.wait_closed()
        except TimeoutError:
            conn.unhealthy = True
        except (asyncssh.Error, OSError):
            pass

    def _options(self, user: str, client_keys: Sequence[object]) -> dict[str, object]:
        """Keyword arguments of asyncssh.connect: our key and certificate only,
        verified host keys, timeouts and keepalives."""
        timeouts = self.timeouts
        return {
            "username": user,
            "client_keys": client_keys,
            "known_hosts": self._known_hosts(),
            # Nothing from the server's own environment: no ~/.ssh/config, agent or GSS.
            "config": None,
            "agent_path": None,
            "gss_auth": False,
            "kbdint_auth": False,
            "password": None,
            "preferred_auth": "publickey",
            "encryption_algs": PREFERRED_CIPHERS,
            "connect_timeout": timeouts.connect + timeouts.login,
            "login_timeout": timeouts.login,
            "keepalive_interval": timeouts.keepalive,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        }

    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        """The trusted host keys (file re-read per connect, so rotations apply)."""
        lines = []
        if self.ssh.known_hosts is not None:
            lines.append(self.ssh.known_hosts.read_text())
        if self.ssh.known_hosts_entry is not None:
            lines.append(self.ssh.known_hosts_entry)
        return asyncssh.import_known_hosts("\n".join(lines))

    def _connect_error(self, user: str, error: Exception) -> ServiceError:
        """The ServiceError for a failed login of ``user``.

        The message names the system, never its address: that goes to the log.
        """
        log.info("ssh login to %s:%s failed: %r", self.ssh.host, self.ssh.port, error)
        if isinstance(error, asyncssh.HostKeyNotVerifiable):
            return _unavailable(
                f"SSH host key mismatch: the host key of {self.name} is not the one"
                f" in known_hosts; refusing to connect ({redact_addresses(error.reason)})",
                "SSH_HOST_KEY_MISMATCH",
            )
        if isinstance(error, asyncssh.PermissionDenied):
            return ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{self.name} refused the SSH login of {user}",
                "SSH_AUTH_FAILED",
            )
        if isinstance(error, TimeoutError):
            return _unavailable(f"timed out connecting to {self.name}", "SSH_UNREACHABLE")
        return _unavailable(f"cannot connect to {self.name}: {_describe(error)}", "SSH_UNREACHABLE")


def _describe(error: Exception) -> str:
    """What went wrong, without the address asyncio's socket errors repeat."""
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return redact_addresses(str(error)) or type(error).__name__


def _command_timeout(
    system: str, argv: Sequence[str], budget: float, cut_by_deadline: bool, service: str | None
) -> ServiceError:
    """DEADLINE_EXCEEDED; UNAVAILABLE when a ``service``'s command ran out of its own time."""
    if service is not None and not cut_by_deadline:
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"{system}: the {service} is not answering: {argv[0]!r} did not finish"
            f" within {budget:g} s",
            f"{service.upper()}_TIMEOUT",
            metadata={"system": system, "service": service},
        )
    limit = "the request's deadline" if cut_by_deadline else f"its timeout of {budget:g} s"
    return ServiceError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"command {argv[0]!r} did not finish within {limit}",
        "COMMAND_TIMEOUT",
    )


def _parse_jump(spec: str) -> tuple[str | None, str, int]:
    """Split ``[user@]host[:port]`` (host may be ``[v6addr]``)."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        port = int(port_text)
    return user or None, host, port


class PoolManager:
    """One :class:`SSHPool` per configured system, sharing one credential provider."""

    def __init__(self, settings: Settings, credentials: CredentialProvider | None = None) -> None:
        """Build the pools; ``credentials`` defaults to what ``settings.credentials`` says."""
        if credentials is None:
            credentials = build_credential_provider(
                settings.credentials,
                allow_port_forwarding=any(s.ssh.proxy_jump for s in settings.systems),
            )
        self._pools = {s.name.lower(): SSHPool(s, credentials) for s in settings.systems}

    def pool(self, system_name: str) -> SSHPool:
        """The pool of ``system_name`` (case-insensitive); NOT_FOUND if not configured."""
        pool = self._pools.get(system_name.lower())
        if pool is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"system {system_name!r} is not configured",
                "SYSTEM_NOT_FOUND",
            )
        return pool

    async def close(self) -> None:
        """Close every pool (graceful shutdown, after the RPCs drained)."""
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))
