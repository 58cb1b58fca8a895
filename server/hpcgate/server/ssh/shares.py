"""A cap on how many of one user's channels one service class may hold at once.

A user's pool has ``max_connections x max_channels`` channels. Scheduler
commands hang when their daemon hangs (a SIGSTOPped slurmctld keeps every
``squeue`` waiting for Slurm's ``MessageTimeout``, a hung slurmdbd keeps
``sacct`` waiting for good), and without a cap a burst of them takes every
channel of the user, so that user's ``ls`` waits behind them. With the cap
the scheduler class holds at most ``limit`` channels; the rest stay free for
the filesystem.

The cap is taken *before* a request queues for a channel, so capped requests
never sit in the user's channel queue ahead of a filesystem request. A
request waits for its share at most ``wait`` seconds (or until its
deadline): a full share that does not move means the service is stuck, which
the caller hears at once as UNAVAILABLE instead of after the backlog drains.
asyncio's own Semaphore does the counting (FIFO); this module adds the per-user
table, its clean-up and the bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from hpcgate.server.errors import ErrorKind, ServiceError


class _UserShare:
    """One user's semaphore; how many requests hold it, and hold or want it (for clean-up)."""

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.active = 0
        self.users = 0


class Share:
    """At most ``limit`` concurrent requests of one service class per user."""

    def __init__(self, system: str, service: str, limit: int, wait: float) -> None:
        """``service`` names the class in errors (``scheduler``); ``wait`` bounds a wait."""
        if limit < 1:
            raise ValueError("a share holds one request at least")
        self.system = system
        self.service = service
        self.limit = limit
        self.wait = wait
        self._users: dict[str, _UserShare] = {}

    def tracked(self) -> int:
        """Users the share keeps state for (those with a request held or waiting)."""
        return len(self._users)

    def held(self, user: str) -> int:
        """Requests of ``user`` holding a place in the share now."""
        share = self._users.get(user)
        return 0 if share is None else share.active

    @contextlib.asynccontextmanager
    async def hold(self, user: str, deadline: float | None) -> AsyncIterator[None]:
        """A place in ``user``'s share for the block; UNAVAILABLE if none frees in time."""
        share = self._users.get(user)
        if share is None:
            share = self._users[user] = _UserShare(self.limit)
        share.users += 1
        try:
            wait = self.wait
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await share.semaphore.acquire()
            except TimeoutError:
                raise self._busy(user) from None
            share.active += 1
            try:
                yield
            finally:
                share.active -= 1
                share.semaphore.release()
        finally:
            share.users -= 1
            if share.users == 0 and self._users.get(user) is share:
                del self._users[user]

    def _busy(self, user: str) -> ServiceError:
        return ServiceError(
            ErrorKind.UNAVAILABLE,
            f"{self.system}: the {self.service} is not answering: {user}'s {self.limit}"
            f" {self.service} commands in flight did not finish within {self.wait:g} s",
            f"{self.service.upper()}_BUSY",
            metadata={"system": self.system, "service": self.service},
        )
