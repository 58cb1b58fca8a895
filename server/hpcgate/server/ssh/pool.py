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
  retried (:func:`.connection.retry_channel_open`). A command abandoned before it ended
  (deadline, cancellation) is sent TERM so that sshd frees its session; if
  its channel still does not close, the connection takes no new work and is
  closed once its other requests finish.

Scheduler commands (``run(..., scheduler=True)``) take a place in the user's
scheduler share first (:mod:`.shares`, ``pool.max_scheduler_commands``), so
however many hang, the user's other channels stay free for filesystem calls;
they run for at most ``scheduler.command_timeout``, and running out of it is
UNAVAILABLE (``SCHEDULER_TIMEOUT``: the scheduler did not answer), not the
caller's deadline.

Deadlines are absolute ``time.monotonic()`` values (see :func:`.deadlines.deadline_after`).

This module holds the system pool and the manager of all systems' pools; the
parts have modules of their own: :mod:`.connection` (one connection, its
slots and commands), :mod:`.userpool` (one user's connections and queue),
:mod:`.login` (opening a connection) and :mod:`.deadlines` (command budgets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import asyncssh

from hpcgate.server.config import Settings, SSHConfig, SystemConfig
from hpcgate.server.coordination import Coordinator, MemoryCoordinator
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh import login
from hpcgate.server.ssh.connection import (
    SESSION_REFUSED,
    CommandResult,
    Connection,
    SlotKind,
    StdoutSink,
)
from hpcgate.server.ssh.credentials import (
    CredentialProvider,
    build_credential_provider,
    check_username,
)
from hpcgate.server.ssh.deadlines import MIN_COMMAND_TIME, command_timeout, cut_to_deadline
from hpcgate.server.ssh.errors import describe, unavailable
from hpcgate.server.ssh.fleet import FleetSlots
from hpcgate.server.ssh.metrics import PoolMetrics
from hpcgate.server.ssh.shares import Share
from hpcgate.server.ssh.userpool import UserPool, UserStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolStats:
    """Occupancy of a system's pool, per user and in total."""

    system: str
    users: Mapping[str, UserStats]
    total: UserStats


class SSHPool:
    """The SSH connections to one system, pooled per user. See the module doc."""

    def __init__(
        self,
        system: SystemConfig,
        credentials: CredentialProvider,
        coordinator: Coordinator | None = None,
    ) -> None:
        """``credentials`` supplies each user's key and certificate at connect time.

        ``coordinator``: in a fleet, a user's ``max_connections`` counts every
        replica's connections (:mod:`.fleet`); by default this process alone.
        """
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
        self.fleet = FleetSlots(
            system.name, coordinator or MemoryCoordinator(), self.limits.max_connections
        )
        self._users: dict[str, UserPool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Every connection whose transport is open, pooled or draining.
        self.live: set[Connection] = set()

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
        async with self._slot(user, SlotKind.EXEC, deadline) as conn:
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
        async with self._slot(user, SlotKind.SFTP, deadline) as conn:
            try:
                client = await conn.sftp_client()
            except (asyncssh.Error, OSError) as error:
                if conn.conn.is_closed():
                    raise
                raise unavailable(
                    f"cannot start SFTP on {self.name}: {describe(error)}",
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
        stdout_sink: StdoutSink | None = None,
    ) -> CommandResult:
        """Run ``argv`` as ``user`` and collect its exit status and output.

        With ``stdout_sink``, stdout goes to it as it arrives instead
        (:meth:`Connection.execute`).

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
            return await self._run(user, argv, stdin, budget, deadline, None, stdout_sink)
        budget = min(budget, self.scheduler_timeout)
        async with self.scheduler_share.hold(user, deadline):
            return await self._run(user, argv, stdin, budget, deadline, "scheduler", stdout_sink)

    async def _run(
        self,
        user: str,
        argv: Sequence[str],
        stdin: bytes | None,
        budget: float,
        deadline: float | None,
        service: str | None,
        stdout_sink: StdoutSink | None,
    ) -> CommandResult:
        """Reserve an exec slot and run ``argv`` within ``budget`` (cut to the deadline)."""
        async with self._slot(user, SlotKind.EXEC, deadline) as conn:
            budget, cut_by_deadline = cut_to_deadline(budget, deadline)
            timed_out = partial(command_timeout, self.name, argv, budget, cut_by_deadline, service)
            if budget < MIN_COMMAND_TIME:
                raise timed_out()
            return await conn.execute(argv, stdin, budget, timed_out, stdout_sink)

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
        closed = unavailable(f"the SSH pool of {self.name} is shut down", "SSH_POOL_CLOSED")
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
        await self.fleet.close()

    # -- used by UserPool (its PoolOwner) ----------------------------------

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a background task that close() cancels."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget_if_idle(self, pool: UserPool) -> None:
        """Drop a user's empty pool so the table does not grow with every user ever seen."""
        if pool.idle and self._users.get(pool.user) is pool:
            del self._users[pool.user]

    async def open_connection(
        self, user: str, on_lost: Callable[[Connection, Exception | None], None]
    ) -> Connection:
        """Log in as ``user``; raise ServiceError (UNAVAILABLE, PERMISSION_DENIED)."""
        return await login.open_connection(self.name, self.ssh, self._credentials, user, on_lost)

    # -- internals ---------------------------------------------------------

    def _pool_of(self, user: str) -> UserPool:
        pool = self._users.get(user)
        if pool is None:
            pool = self._users[user] = UserPool(self, user)
        return pool

    @contextlib.asynccontextmanager
    async def _slot(
        self, user: str, kind: SlotKind, deadline: float | None
    ) -> AsyncIterator[Connection]:
        """Reserve a slot for the block; turn a connection dying under it into UNAVAILABLE."""
        if self.closed:
            raise unavailable(f"the SSH pool of {self.name} is shut down", "SSH_POOL_CLOSED")
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
        self, pool: UserPool, conn: Connection, error: Exception
    ) -> ServiceError | None:
        """The ServiceError for a transport failure during a request, or None for others."""
        if isinstance(error, asyncssh.ChannelOpenError) and not conn.conn.is_closed():
            if error.code in SESSION_REFUSED:
                return unavailable(
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
        return unavailable(
            f"the SSH connection to {self.name} was lost during the request: {describe(error)}",
            "SSH_CONNECTION_LOST",
        )


class PoolManager:
    """One :class:`SSHPool` per configured system, sharing one credential provider."""

    def __init__(
        self,
        settings: Settings,
        credentials: CredentialProvider | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        """Build the pools; ``credentials`` defaults to what ``settings.credentials`` says."""
        if credentials is None:
            credentials = build_credential_provider(
                settings.credentials,
                allow_port_forwarding=any(s.ssh.proxy_jump for s in settings.systems),
            )
        self._pools = {
            s.name.lower(): SSHPool(s, credentials, coordinator) for s in settings.systems
        }

    def pool(self, system_name: str) -> SSHPool:
        """The pool of ``system_name`` (case-insensitive); NOT_FOUND if not configured."""
        pool = self._pools.get(system_name.lower())
        if pool is None:
            raise ServiceError(
                ErrorKind.NOT_FOUND,
                f"system {system_name!r} is not configured",
                "SYSTEM_NOT_FOUND",
            )
        return pool

    async def close(self) -> None:
        """Close every pool (graceful shutdown, after the RPCs drained)."""
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))
