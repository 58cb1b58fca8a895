"""One pooled SSH connection: its channel slots, its SFTP channel, its commands.

A :class:`Connection` counts the slots in use on it (exec channels, and SFTP
requests pipelined on its one SFTP channel) so that the per-user pool
(:mod:`.userpool`) never opens more channels than sshd's ``MaxSessions``.
OpenSSH frees a closed channel's session lazily, so an open right after a
close may be refused although the slot is free on our side; such opens are
retried (:func:`retry_channel_open`). A command abandoned before it ended
(deadline, cancellation) is sent TERM so that sshd frees its session; if its
channel still does not close, the connection is marked unhealthy and the pool
closes it once its other requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncssh

from hpcgate.server.config import SSHPoolLimits
from hpcgate.server.errors import ServiceError
from hpcgate.server.ssh.deadlines import TIMEOUT_STATUSES, local_wait, timeout_line

T = TypeVar("T")
# Takes a command's stdout as it arrives, one chunk at a time (see Connection.execute).
StdoutSink = Callable[[bytes], Awaitable[None]]
# The most stdout bytes handed to a sink at once.
SINK_READ = 1 << 16

# Seconds to wait for a channel or connection to finish closing.
CLOSE_GRACE = 5.0
# A refused session channel is retried after these pauses (seconds). OpenSSH
# frees a closed channel's session only after the batch of packets that closed
# it, so an open that arrives in the same batch fails with "open failed" even
# though our side already counts the slot as free; the next try succeeds.
CHANNEL_OPEN_RETRY_DELAYS = (0.0, 0.01, 0.05, 0.1, 0.25)
# ChannelOpenError codes with which sshd refuses a session channel.
SESSION_REFUSED = (asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, asyncssh.OPEN_CONNECT_FAILED)


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
            if error.code not in SESSION_REFUSED or conn.is_closed():
                raise
        await asyncio.sleep(delay)
    return await open_channel()


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    exit_status: int
    stdout: bytes
    stderr: bytes


class SlotKind(enum.Enum):
    """What a channel slot is used for."""

    EXEC = "exec"
    SFTP = "sftp"


class Client(asyncssh.SSHClient):
    """Reports the loss of its connection to the pool."""

    def __init__(self) -> None:
        self.on_lost: Callable[[Exception | None], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Called by asyncssh when the connection closes, cleanly or not."""
        if self.on_lost is not None:
            self.on_lost(exc)


class Connection:
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

    def channels(self, kind: SlotKind | None = None) -> int:
        """Channels open, counting those one more request of ``kind`` would need.

        The SFTP channel occupies one channel while it is open, even idle,
        and from the moment an SFTP request holds a slot (it is about to be
        opened); the requests on it add no channel.
        """
        execs = self.execs + (kind is SlotKind.EXEC)
        sftp_channel = self.sftp is not None or self.sftp_requests > 0 or kind is SlotKind.SFTP
        return execs + sftp_channel

    def fits(self, kind: SlotKind, limits: SSHPoolLimits) -> bool:
        """Whether one more request of ``kind`` stays within ``S`` channels and ``R`` requests."""
        if self.channels(kind) > limits.max_channels:
            return False
        return kind is SlotKind.EXEC or self.sftp_requests < limits.max_sftp_requests

    def take(self, kind: SlotKind) -> None:
        """Reserve a slot of ``kind``."""
        self.cancel_idle_timer()
        if kind is SlotKind.EXEC:
            self.execs += 1
        else:
            self.sftp_requests += 1

    def give_back(self, kind: SlotKind) -> None:
        """Return a slot of ``kind``."""
        if kind is SlotKind.EXEC:
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

    async def execute(
        self,
        argv: Sequence[str],
        stdin: bytes | None,
        budget: float,
        timed_out: Callable[[], ServiceError],
        stdout_sink: StdoutSink | None = None,
    ) -> CommandResult:
        """Run ``argv`` under the remote ``timeout`` on a slot reserved by the caller.

        ``timed_out`` builds the error for a command that ran out of ``budget``.
        With ``stdout_sink``, stdout goes to it as it arrives (the result's
        is empty), so the caller works while the command still runs.
        """
        started = time.monotonic()
        line = timeout_line(argv, budget)
        process = await retry_channel_open(
            self.conn, lambda: self.conn.create_process(line, encoding=None)
        )
        try:
            async with asyncio.timeout(local_wait(budget)):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if stdin:
                        process.stdin.write(stdin)
                    process.stdin.write_eof()
                if stdout_sink is None:
                    stdout, stderr = await process.communicate()
                else:
                    stdout, stderr = b"", await _relay(process, stdout_sink)
        except TimeoutError:
            raise timed_out() from None
        finally:
            await self._finish(process)
        status = process.returncode
        if status is None:
            # The channel closed without an exit status: the connection went away.
            raise asyncssh.ConnectionLost("channel closed without an exit status")
        if status in TIMEOUT_STATUSES and time.monotonic() - started >= budget:
            raise timed_out()
        return CommandResult(status, bytes(stdout), bytes(stderr))

    async def _finish(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
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
            self.unhealthy = True
        except (asyncssh.Error, OSError):
            pass

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


async def _relay(process: asyncssh.SSHClientProcess[bytes], sink: StdoutSink) -> bytes:
    """Hand ``process``'s stdout to ``sink`` until it ends; its stderr, read meanwhile.

    stderr is read beside stdout: left unread, its buffer would fill and
    stall the channel, stdout with it.
    """
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        while chunk := await process.stdout.read(SINK_READ):
            await sink(chunk)
        await process.wait_closed()
        return await stderr
    finally:
        stderr.cancel()
