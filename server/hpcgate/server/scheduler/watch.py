"""Job watches: one poller per (system, user) feeds every watcher of that user.

A :class:`WatchHub` belongs to one system. The first watch of a user starts
that user's :class:`Poller`, a task that asks the scheduler for the user's
jobs (plus any job a watcher named explicitly) once per interval, compares the
answer with what it saw before, and hands each state change to every watcher
that follows the job. Further watchers of the same user only add a queue: the
number of scheduler commands depends on the number of users watching, not on
the number of watchers. When the user's last watcher leaves, the poller's task
is cancelled and forgotten, so nothing outlives the streams.

The interval adapts: it drops to ``min_interval`` whenever a poll saw a
change, a watcher joined or the user submitted or cancelled a job
(:meth:`WatchHub.nudge`), and doubles after every quiet poll up to
``max_interval``. Whatever wakes it, a poller never starts two polls less
than ``min_interval`` apart.

The poller runs its commands as the user, over the user's pooled SSH
connection, and feeds only that user's watchers: a watch sees of other users'
jobs exactly what Slurm shows its user (nothing under ``PrivateData=jobs``),
whoever else watches them. Before every poll it consults the health gate;
when the scheduler is down, or polls keep failing, every watcher of the user
ends with the error instead of waiting forever.

In a fleet (``coordination.backend: redis``) the poller of a user runs on
one replica at a time, the holder of the user's lease, and its answers reach
the watchers on every replica; a submission anywhere nudges it (see
:class:`Poller` and :mod:`.sharing`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from hpcgate.server.coordination import Coordinator, MemoryCoordinator
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler import sharing
from hpcgate.server.scheduler.commands import RunWithInput
from hpcgate.server.scheduler.jobs import JobScheduler
from hpcgate.server.scheduler.poller import Poller, PollerStats
from hpcgate.server.scheduler.watchers import Baseline, JobEvent, Subscription

__all__ = ["Baseline", "JobEvent", "PollerStats", "RunnerFactory", "Subscription", "WatchHub"]


# Makes a runner for a user: commands as that user, each with its own deadline.
RunnerFactory = Callable[[str], RunWithInput]


class WatchHub:
    """The job pollers of one system, one per user with open watches."""

    def __init__(
        self,
        system: str,
        scheduler: JobScheduler,
        runner: RunnerFactory,
        gate: Callable[[], None],
        min_interval: float,
        max_interval: float,
        coordinator: Coordinator | None = None,
    ) -> None:
        """``gate`` raises (UNAVAILABLE) when the scheduler must not be asked.

        ``coordinator`` shares the pollers with the fleet's other replicas
        (default: this process alone).
        """
        self.system = system
        self.coordinator: Coordinator = coordinator or MemoryCoordinator()
        self.scheduler = scheduler
        self.runner = runner
        self.gate = gate
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._pollers: dict[str, Poller] = {}
        # Nudges being published to the other replicas.
        self._tasks: set[asyncio.Task[bool]] = set()
        # Totals over every poller this hub ran (tests and metrics read them).
        self.polls = 0
        self.commands_run = 0

    @property
    def pollers(self) -> dict[str, PollerStats]:
        """The running pollers, by user."""
        return {user: poller.stats() for user, poller in self._pollers.items()}

    @contextlib.asynccontextmanager
    async def subscribe(self, user: str, job_ids: frozenset[int]) -> AsyncIterator[Subscription]:
        """Watch ``job_ids`` of ``user`` (all of the user's jobs if empty) for the block."""
        watcher = Subscription(user, job_ids)
        # Numbered before the poller hears of it: a view whose poll began
        # later (its number is at least this) is a baseline for the watcher.
        joined = await self.coordinator.bump(f"watch:{self.system.lower()}:{user}")
        poller = self._pollers.get(user)
        if poller is None:
            poller = self._pollers[user] = Poller(self, user)
        poller.add(watcher, joined)
        try:
            yield watcher
        finally:
            self.unsubscribe(watcher)

    def unsubscribe(self, watcher: Subscription) -> None:
        """Stop feeding ``watcher`` (idempotent); stops its poller if it was the last."""
        poller = self._pollers.get(watcher.user)
        if poller is not None:
            poller.remove(watcher)

    def nudge(self, user: str) -> None:
        """Something of ``user``'s will change soon (a submission, a cancellation): poll fast."""
        poller = self._pollers.get(user)
        if poller is not None:
            poller.nudge()
        if self.coordinator.shared:  # the user's poller may run on another replica
            want = sharing.Want(self.coordinator.replica, (), soon=True)
            message = sharing.encode_want(want)
            task = asyncio.create_task(
                self.coordinator.publish(sharing.want_channel(self.system, user), message, None)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def forget(self, poller: Poller) -> None:
        if self._pollers.get(poller.user) is poller:
            del self._pollers[poller.user]

    async def close(self) -> None:
        """End every watch (UNAVAILABLE) and stop every poller."""
        pollers = list(self._pollers.values())
        closing = ServiceError(
            ErrorKind.UNAVAILABLE, "the server is shutting down", "SERVER_SHUTDOWN"
        )
        for poller in pollers:
            poller.fail_all(closing)
            poller.task.cancel()
        await asyncio.gather(*(p.task for p in pollers), return_exceptions=True)
        self._pollers.clear()
