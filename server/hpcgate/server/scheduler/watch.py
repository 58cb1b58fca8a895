"""Job watches: one poller per (system, user) feeds every watcher of that user.

A :class:`WatchHub` belongs to one system. The first watch of a user starts
that user's :class:`_Poller`, a task that asks the scheduler for the user's
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.commands import Output, RunWithInput
from hpcgate.server.scheduler.jobs import Job, JobScheduler, JobStatus

log = logging.getLogger(__name__)

# Consecutive failed polls a poller tolerates (a dropped connection is retried
# on the next poll) before it ends its watchers with the last error.
MAX_FAILED_POLLS = 3
# Events a watcher may leave unread before it is dropped (RESOURCE_EXHAUSTED).
MAX_QUEUED_EVENTS = 10_000
# Factor by which the interval grows after a poll that saw no change.
BACKOFF = 2.0

# Scheduler load of the watches: with one poller per user these grow with
# users and intervals, not with watchers (make bench reads them).
POLLS = Counter("hpcgate_scheduler_polls_total", "Job-state polls run for watchers", ["system"])
POLL_COMMANDS = Counter(
    "hpcgate_scheduler_commands_total",
    "Scheduler commands (squeue, sacct) run by the watch pollers",
    ["system"],
)


@dataclass(frozen=True)
class JobEvent:
    """A state change one poll saw; ``previous`` is the status before (None: a new job)."""

    observed: float  # epoch seconds, when the poll's answer arrived
    job: Job
    previous: JobStatus | None = None


@dataclass(frozen=True)
class Baseline:
    """What the first poll after a watcher joined saw of the jobs it follows."""

    observed: float
    jobs: Mapping[int, Job]


@dataclass(frozen=True)
class PollerStats:
    """How much work one user's poller has done."""

    user: str
    watchers: int
    polls: int
    commands: int
    interval: float


def _state_changed(before: Job, after: Job) -> bool:
    """Whether the scheduler's state word moved (a new reason alone is no change)."""
    return (before.status.state, before.status.normalized_state) != (
        after.status.state,
        after.status.normalized_state,
    )


_Item = Baseline | JobEvent | ServiceError


class Subscription:
    """One watcher: the jobs it follows and the queue its poller fills.

    ``job_ids`` empty means every job of the poller's user, including jobs
    that appear while the watch is open.
    """

    def __init__(self, user: str, job_ids: frozenset[int]) -> None:
        self.user = user
        self.job_ids = job_ids
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    def wants(self, job: Job) -> bool:
        """Whether this watcher follows ``job``."""
        return job.job_id in self.job_ids if self.job_ids else job.user == self.user

    async def baseline(self) -> Baseline:
        """Wait for the first poll after joining; raise its error (e.g. NOT_FOUND)."""
        item = await self._queue.get()
        if isinstance(item, ServiceError):
            raise item
        assert isinstance(item, Baseline), "the baseline comes first"
        return item

    async def next_event(self) -> JobEvent:
        """The next state change of a followed job; raise the error that ended the watch."""
        item = await self._queue.get()
        if isinstance(item, ServiceError):
            raise item
        assert isinstance(item, JobEvent), "only one baseline per watcher"
        return item

    def put(self, item: _Item) -> bool:
        """Queue ``item``; False (and the watcher failed) if it fell too far behind."""
        if self._queue.qsize() >= MAX_QUEUED_EVENTS:
            self.fail(
                ServiceError(
                    ErrorKind.RESOURCE_EXHAUSTED,
                    f"the watch fell more than {MAX_QUEUED_EVENTS} events behind",
                    "WATCH_TOO_SLOW",
                )
            )
            return False
        self._queue.put_nowait(item)
        return True

    def fail(self, error: ServiceError) -> None:
        """End the watch with ``error`` (delivered after the events already queued)."""
        self._queue.put_nowait(ServiceError(error.code, error.message, error.reason))


class _Poller:
    """Polls one user's jobs for the watchers of that user."""

    def __init__(self, hub: WatchHub, user: str) -> None:
        self.hub = hub
        self.user = user
        self.watchers: set[Subscription] = set()
        # Watchers waiting for their baseline (joined since the last poll).
        self.joining: list[Subscription] = []
        # Every job this poller has seen, as last seen (a job that drops out
        # of one answer and comes back unchanged is no change).
        self.known: dict[int, Job] = {}
        self.interval = hub.min_interval
        self.polls = 0
        self.commands = 0
        self._last_start = -float("inf")
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._loop(), name=f"job-poller:{hub.system}:{user}")

    def stats(self) -> PollerStats:
        """Watchers, polls and commands so far, and the current interval."""
        return PollerStats(
            self.user,
            len(self.watchers) + len(self.joining),
            self.polls,
            self.commands,
            self.interval,
        )

    def add(self, watcher: Subscription) -> None:
        """Take on ``watcher``; it gets its baseline from the next poll, which comes soon."""
        self.joining.append(watcher)
        self.nudge()

    def remove(self, watcher: Subscription) -> None:
        """Forget ``watcher`` (if still here); the last one to leave stops the poller."""
        if watcher not in self.watchers and watcher not in self.joining:
            return
        self.watchers.discard(watcher)
        if watcher in self.joining:
            self.joining.remove(watcher)
        if not self.watchers and not self.joining:
            self.task.cancel()
            self.hub._forget(self)

    def nudge(self) -> None:
        """Poll soon (after ``min_interval`` at the earliest) and fast again."""
        self.interval = self.hub.min_interval
        self._wake.set()

    async def _loop(self) -> None:
        failures = 0
        try:
            while self.watchers or self.joining:
                await self._wait_turn()
                self._last_start = time.monotonic()
                self._wake.clear()
                joining, self.joining = self.joining, []
                self.watchers.update(joining)
                try:
                    self.hub.gate()
                except ServiceError as error:
                    self._fail_all(error)  # the health checker says the scheduler is down
                    return
                try:
                    view = await self._poll()
                except ServiceError as error:
                    failures += 1
                    if failures >= MAX_FAILED_POLLS:
                        self._fail_all(error)
                        return
                    log.warning("poll of %s's jobs failed (will retry): %s", self.user, error)
                    # Those that stayed still need a baseline.
                    self.joining.extend(w for w in joining if w in self.watchers)
                    continue
                failures = 0
                changed = self._publish(view, time.time(), joining)
                if changed or joining:
                    self.interval = self.hub.min_interval
                else:
                    self.interval = min(self.interval * BACKOFF, self.hub.max_interval)
        except Exception:
            log.exception("the job poller of %s failed", self.user)
            self._fail_all(ServiceError(ErrorKind.INTERNAL, "the job watch failed", "WATCH_FAILED"))
        finally:
            self.hub._forget(self)

    async def _wait_turn(self) -> None:
        """Sleep until the interval is up, or until woken, but ``min_interval`` at least."""
        earliest = self._last_start + self.hub.min_interval
        while True:
            now = time.monotonic()
            due = self._last_start + self.interval
            if now >= due:
                return
            if self._wake.is_set():
                if now < earliest:
                    await asyncio.sleep(earliest - now)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due - now):
                    await self._wake.wait()

    async def _poll(self) -> dict[int, Job]:
        """One snapshot of the user's jobs and of every job a watcher named."""
        named = {i for watcher in self.watchers for i in watcher.job_ids}
        run = self.hub.runner(self.user)

        async def counted(argv: Sequence[str], *, stdin: bytes | None = None) -> Output:
            self.commands += 1
            self.hub.commands_run += 1
            POLL_COMMANDS.labels(self.hub.system).inc()
            return await run(argv, stdin=stdin)

        self.polls += 1
        self.hub.polls += 1
        POLLS.labels(self.hub.system).inc()
        return await self.hub.scheduler.snapshot(counted, self.user, named)

    def _publish(
        self, view: Mapping[int, Job], observed: float, joining: list[Subscription]
    ) -> bool:
        """Send the changes in ``view`` to the watchers, baselines to ``joining``.

        Returns whether any job of the view changed state (or appeared).
        """
        settled = bool(self.known)
        changes = []
        for job_id, job in view.items():
            before = self.known.get(job_id)
            if before is None or _state_changed(before, job):
                changes.append(JobEvent(observed, job, None if before is None else before.status))
            self.known[job_id] = job
        fresh = set(joining)
        for event in changes:
            for watcher in list(self.watchers - fresh):
                if watcher.wants(event.job) and not watcher.put(event):
                    self.remove(watcher)
        for watcher in [w for w in joining if w in self.watchers]:  # not gone meanwhile
            missing = sorted(watcher.job_ids - view.keys())
            if missing:
                watcher.fail(
                    ServiceError(
                        ErrorKind.NOT_FOUND,
                        f"job {', '.join(map(str, missing))} not found",
                        "JOB_NOT_FOUND",
                    )
                )
                self.remove(watcher)
                continue
            jobs = {i: job for i, job in sorted(view.items()) if watcher.wants(job)}
            watcher.put(Baseline(observed, jobs))
        # The first answer only sets what "before" means.
        return bool(changes) and settled

    def _fail_all(self, error: ServiceError) -> None:
        """End every watch of this poller with ``error``."""
        for watcher in [*self.watchers, *self.joining]:
            watcher.fail(error)
        self.watchers.clear()
        self.joining.clear()


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
    ) -> None:
        """``gate`` raises (UNAVAILABLE) when the scheduler must not be asked."""
        self.system = system
        self.scheduler = scheduler
        self.runner = runner
        self.gate = gate
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._pollers: dict[str, _Poller] = {}
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
        poller = self._pollers.get(user)
        if poller is None:
            poller = self._pollers[user] = _Poller(self, user)
        poller.add(watcher)
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

    def _forget(self, poller: _Poller) -> None:
        if self._pollers.get(poller.user) is poller:
            del self._pollers[poller.user]

    async def close(self) -> None:
        """End every watch (UNAVAILABLE) and stop every poller."""
        pollers = list(self._pollers.values())
        closing = ServiceError(
            ErrorKind.UNAVAILABLE, "the server is shutting down", "SERVER_SHUTDOWN"
        )
        for poller in pollers:
            poller._fail_all(closing)
            poller.task.cancel()
        await asyncio.gather(*(p.task for p in pollers), return_exceptions=True)
        self._pollers.clear()
