"""One user's share of a system's SSH pool: connections, FIFO queue and accounting.

A request takes a free slot at once when nobody of the same user is queued,
on the busiest connection with room (so that surplus connections drain and
the idle timer closes them). Otherwise it queues, and the pool starts new
connections, never beyond ``K``, for the queued requests that neither a free
slot nor a connection being opened will serve (:func:`_connections_for`). A
freed slot goes to the head of the queue; a waiter gives up at its deadline.
Connections are opened by background tasks of the owning system pool
(:class:`PoolOwner`), with no lock shared between users. The module doc of
:mod:`.pool` describes the whole scheme.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Protocol

from hpcgate.server.config import SSHPoolLimits, SSHTimeouts
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh.connection import Connection, SlotKind
from hpcgate.server.ssh.errors import unavailable
from hpcgate.server.ssh.fleet import FleetSlots
from hpcgate.server.ssh.metrics import PoolMetrics

log = logging.getLogger(__name__)

# Seconds between connection attempts after one failed, while other
# connections of the user still serve its queue.
CONNECT_RETRY_DELAY = 1.0
# Seconds before a queue that found the user's fleet-wide slots all taken
# (by other replicas) asks again.
FLEET_RETRY_DELAY = 0.25


class PoolOwner(Protocol):
    """What a user's pool needs of the system pool that owns it (:class:`.pool.SSHPool`)."""

    name: str
    limits: SSHPoolLimits
    timeouts: SSHTimeouts
    metrics: PoolMetrics
    closed: bool
    # Every connection whose transport is open, pooled or draining.
    live: set[Connection]
    # The users' connections counted fleet-wide.
    fleet: FleetSlots

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a background task that closing the pool cancels."""
        ...

    def forget_if_idle(self, pool: UserPool) -> None:
        """Drop ``pool`` from the owner's table if nothing references it any more."""
        ...

    async def open_connection(
        self, user: str, on_lost: Callable[[Connection, Exception | None], None]
    ) -> Connection:
        """Log in as ``user``; raise ServiceError."""
        ...


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


def _copy(error: ServiceError) -> ServiceError:
    """A fresh instance of ``error``, so each failed waiter raises its own."""
    return ServiceError(
        error.code, error.message, error.reason, fields=error.fields, metadata=error.metadata
    )


@dataclass(eq=False)
class _Waiter:
    """A queued request: the future receives a connection with its slot reserved."""

    kind: SlotKind
    future: asyncio.Future[Connection] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UserPool:
    """The connections, queue and accounting of one user on one system."""

    def __init__(self, owner: PoolOwner, user: str) -> None:
        self.owner = owner
        self.user = user
        self.connections: list[Connection] = []
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
        # The fleet-wide slot of each connection (see :mod:`.fleet`).
        self.slots: dict[Connection, str] = {}
        self._fleet_retry: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Whether nothing references this user's pool any more."""
        return not (self.connections or self.connecting or self.waiters or self.in_use)

    def stats(self) -> UserStats:
        """This user's occupancy."""
        return UserStats(
            len(self.connections), self.in_use, len(self.waiters), self.connecting, self.peak
        )

    async def acquire(self, kind: SlotKind, deadline: float | None) -> Connection:
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
        self.sftp_waiters += kind is SlotKind.SFTP
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

    def release(self, conn: Connection, kind: SlotKind) -> None:
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

    def retire(self, conn: Connection) -> None:
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

    def _pick(self, kind: SlotKind) -> Connection | None:
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
        best: Connection | None = None
        for conn in self.connections:
            if conn.fits(kind, limits) and (best is None or _busier(conn, best)):
                best = conn
        if best is not None or kind is SlotKind.SFTP or self._may_grow():
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
        self.sftp_waiters -= waiter.kind is SlotKind.SFTP
        self.owner.metrics.waiters.dec()
        return waiter

    def _take(self, conn: Connection, kind: SlotKind) -> None:
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
        """Open one connection (a background task: no request owns it).

        It takes one of the user's fleet-wide slots first; with all taken by
        other replicas, the queue asks again shortly (their connections
        close when idle) and is served by this replica's connections meanwhile.
        """
        try:
            slot = await self.owner.fleet.take(self.user)
        except BaseException:
            self.connecting -= 1
            raise
        if slot is None:
            self.connecting -= 1
            self._retry_fleet()
            return
        try:
            conn = await self.owner.open_connection(self.user, self._lost)
        except ServiceError as error:
            self.connecting -= 1
            self.owner.fleet.give(self.user, slot)
            self._connect_failed(error)
            return
        except BaseException:
            self.connecting -= 1
            self.owner.fleet.give(self.user, slot)
            raise
        self.connecting -= 1
        self.slots[conn] = slot
        if conn.conn.is_closed():  # its loss was reported already
            self.owner.fleet.give(self.user, self.slots.pop(conn))
        if conn.conn.is_closed() or self.owner.closed:
            conn.retired = True  # never pooled: the loss callback ignores it
            conn.close()
            if not self.owner.closed:
                lost = unavailable("the new SSH connection closed at once", "SSH_UNREACHABLE")
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

    def _retry_fleet(self) -> None:
        """Try to grow again soon: the fleet had no slot for this user."""
        if self._fleet_retry is None:
            self._fleet_retry = asyncio.get_running_loop().call_later(
                FLEET_RETRY_DELAY, self._fleet_retried
            )
        self.owner.forget_if_idle(self)

    def _fleet_retried(self) -> None:
        self._fleet_retry = None
        self._grow()

    def _connect_failed(self, error: ServiceError) -> None:
        """Fail the queue when no connection exists or is coming; else let it wait."""
        self.owner.metrics.connect_failed(error.reason)
        # The queue is still served by the existing connections: retry later.
        self.grow_after = time.monotonic() + CONNECT_RETRY_DELAY
        log.warning("ssh connect to %s as %s failed: %s", self.owner.name, self.user, error.message)
        if not self.connections and not self.connecting:
            self.fail_waiters(error)
        self.owner.forget_if_idle(self)

    def _lost(self, conn: Connection, exc: Exception | None) -> None:
        """asyncssh reports ``conn`` closed; drop it unless the pool closed it."""
        self.owner.live.discard(conn)
        slot = self.slots.pop(conn, None)
        if slot is not None:
            self.owner.fleet.give(self.user, slot)
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
            self.sftp_waiters -= waiter.kind is SlotKind.SFTP
            self.owner.metrics.waiters.dec()
        self._dispatch()
        self.owner.forget_if_idle(self)

    def _arm_idle_timer(self, conn: Connection) -> None:
        conn.cancel_idle_timer()
        conn.idle_timer = asyncio.get_running_loop().call_later(
            self.owner.timeouts.idle, self._close_idle, conn
        )

    def _close_idle(self, conn: Connection) -> None:
        conn.idle_timer = None
        if conn.retired or conn.in_use:
            return
        log.info("closing idle ssh connection to %s as %s", self.owner.name, self.user)
        self.retire(conn)
        conn.close()
        self.owner.forget_if_idle(self)

    def _wait_timeout(self) -> ServiceError:
        return ServiceError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"no SSH channel to {self.owner.name} became free for {self.user} before the"
            f" deadline ({len(self.connections)} connections busy, {len(self.waiters)} waiting)",
            "SSH_POOL_TIMEOUT",
        )


def _busier(conn: Connection, other: Connection) -> bool:
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
