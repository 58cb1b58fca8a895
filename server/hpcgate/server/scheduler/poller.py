"""One user's job poller on one replica (see :mod:`.watch` for the whole scheme)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from hpcgate.server.coordination import Coordinator, Listening
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler import sharing
from hpcgate.server.scheduler.commands import Output, RunWithInput
from hpcgate.server.scheduler.jobs import Job, JobScheduler
from hpcgate.server.scheduler.tally import tallied
from hpcgate.server.scheduler.watchers import Baseline, JobEvent, Subscription

log = logging.getLogger(__name__)

# Consecutive failed polls a poller tolerates (a dropped connection is retried
# on the next poll) before it ends its watchers with the last error.
MAX_FAILED_POLLS = 3
# Factor by which the interval grows after a poll that saw no change.
BACKOFF = 2.0
# Changes kept per job for resumed watches (a job has a handful of states).
MAX_HISTORY = 16

# Scheduler load of the watches: with one poller per user these grow with
# users and intervals, not with watchers (make bench reads them).
POLLS = Counter("hpcgate_scheduler_polls_total", "Job-state polls run for watchers", ["system"])
POLL_COMMANDS = Counter(
    "hpcgate_scheduler_commands_total",
    "Scheduler commands (squeue, sacct) or slurmrestd requests of the watch pollers",
    ["system"],
)


class PollerHub(Protocol):
    """What a poller needs of the hub that owns it (:class:`.watch.WatchHub`)."""

    system: str
    scheduler: JobScheduler
    coordinator: Coordinator
    gate: Callable[[], None]
    min_interval: float
    max_interval: float
    polls: int
    commands_run: int

    def runner(self, user: str) -> RunWithInput:
        """Run scheduler commands as ``user``."""
        ...

    def forget(self, poller: Poller) -> None:
        """Drop ``poller`` from the hub's table (if it is still there)."""
        ...


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


@dataclass(eq=False)
class _Joiner:
    """A watcher waiting for its baseline, and when it joined.

    ``polls`` is the poller's count of polls started when it joined (a
    local poll started later may serve it); ``joined`` the user's fleet-wide
    join number (a shared view whose poll started after it may).
    """

    watcher: Subscription
    polls: int
    joined: int


class Poller:
    """Feeds one user's watchers on this replica; polls while it holds the user's lease.

    With one process the lease is always held and this is the whole poller.
    In a fleet (see :mod:`.sharing`) one replica holds it and publishes every
    answer; the others apply the answers they hear as if they had polled,
    tell the holder which jobs their watchers name, and claim the lease
    every ``lease_ttl / 4`` seconds, so they take over within the lease time
    of the holder's death.
    """

    def __init__(self, hub: PollerHub, user: str) -> None:
        self.hub = hub
        self.user = user
        self.watchers: set[Subscription] = set()
        # Watchers waiting for their baseline (joined since the last poll).
        self.joining: list[_Joiner] = []
        # Every job this poller has seen, as last seen (a job that drops out
        # of one answer and comes back unchanged is no change).
        self.known: dict[int, Job] = {}
        # The recent changes of each known job, and since when they are
        # complete: the first view, or the newest change dropped (resumed watches).
        self.history: dict[int, list[JobEvent]] = {}
        self.since: float | None = None
        self.interval = hub.min_interval
        self.polls = 0
        self.commands = 0
        # Whether this replica holds the user's lease (polls) right now.
        self.holding = False
        # Jobs other replicas' watchers name: sender -> (job ids, until when).
        self.remote_named: dict[str, tuple[frozenset[int], float]] = {}
        self._want_soon = False
        self._last_start = -float("inf")
        self._wake = asyncio.Event()
        coordinator = hub.coordinator
        self._lease = f"watch:{hub.system.lower()}:{user}"
        self._listening: list[Listening] = []
        if coordinator.shared:
            self._listening = [
                coordinator.listen(sharing.jobs_channel(hub.system, user), self._heard_result),
                coordinator.listen(sharing.want_channel(hub.system, user), self._heard_want),
            ]
        # How often the lease is renewed or claimed (None: no lease to keep).
        self._tick = coordinator.lease_ttl / 4 if coordinator.shared else None
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

    def add(self, watcher: Subscription, joined: int) -> None:
        """Take on ``watcher``; it gets its baseline from the next poll, which comes soon."""
        self.joining.append(_Joiner(watcher, self.polls, joined))
        self._want_soon = True
        self.nudge()

    def remove(self, watcher: Subscription) -> None:
        """Forget ``watcher`` (if still here); the last one to leave stops the poller."""
        self.watchers.discard(watcher)
        self.joining = [j for j in self.joining if j.watcher is not watcher]
        if not self.watchers and not self.joining:
            self.task.cancel()
            self.hub.forget(self)

    def nudge(self) -> None:
        """Poll soon (after ``min_interval`` at the earliest) and fast again."""
        self.interval = self.hub.min_interval
        self._wake.set()

    async def _loop(self) -> None:
        failures = 0
        token: int | None = None
        try:
            while self.watchers or self.joining:
                token = await self.hub.coordinator.claim(self._lease)
                if token is None:
                    self.holding = False
                    await self._follow()
                    continue
                if not self.holding:
                    self.holding = True
                    self.interval = self.hub.min_interval  # taking over: resync soon
                if not await self._wait_turn():
                    continue  # not due yet: renew the lease first
                self._last_start = time.monotonic()
                self._wake.clear()
                joined = await self.hub.coordinator.count(self._lease)
                polls = self.polls
                try:
                    self.hub.gate()
                except ServiceError as error:
                    # The health checker says the scheduler is down.
                    await self._end(error, token)
                    return
                try:
                    view = await self._poll()
                except ServiceError as error:
                    failures += 1
                    if failures >= MAX_FAILED_POLLS:
                        await self._end(error, token)
                        return
                    log.warning("poll of %s's jobs failed (will retry): %s", self.user, error)
                    continue
                failures = 0
                observed = time.time()
                joining = [j for j in self.joining if j.polls <= polls]
                changed = self._publish(view, observed, joining)
                if changed or joining:
                    self.interval = self.hub.min_interval
                else:
                    self.interval = min(self.interval * BACKOFF, self.hub.max_interval)
                await self._share(
                    sharing.View(self.hub.coordinator.replica, joined, observed, (*view.values(),)),
                    token,
                )
        except Exception:
            log.exception("the job poller of %s failed", self.user)
            self.fail_all(ServiceError(ErrorKind.INTERNAL, "the job watch failed", "WATCH_FAILED"))
        finally:
            for listening in self._listening:
                listening.close()
            self.hub.forget(self)
            if token is not None and self.holding:
                with contextlib.suppress(Exception):
                    await self.hub.coordinator.release(self._lease, token)

    async def _wait_turn(self) -> bool:
        """Sleep until the interval is up, or until woken, but ``min_interval`` at least.

        False when the lease must be renewed first (every ``_tick`` seconds).
        """
        earliest = self._last_start + self.hub.min_interval
        renew = None if self._tick is None else time.monotonic() + self._tick
        while True:
            now = time.monotonic()
            due = self._last_start + self.interval
            if now >= due:
                return True
            if self._wake.is_set():
                if now < earliest:
                    if renew is not None and renew < earliest:
                        await asyncio.sleep(renew - now)
                        return False
                    await asyncio.sleep(earliest - now)
                return True
            if renew is not None and now >= renew:
                return False
            until = due if renew is None else min(due, renew)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - now):
                    await self._wake.wait()

    async def _follow(self) -> None:
        """Another replica polls: tell it what our watchers name, then wait a tick."""
        assert self._tick is not None  # only shared leases can be held elsewhere
        named = tuple(sorted({i for w in self._followers() for i in w.job_ids}))
        soon, self._want_soon = self._want_soon, False
        want = sharing.Want(self.hub.coordinator.replica, named, soon)
        channel = sharing.want_channel(self.hub.system, self.user)
        await self.hub.coordinator.publish(channel, sharing.encode_want(want), None)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._tick):
                await self._wake.wait()

    def _followers(self) -> list[Subscription]:
        return [*self.watchers, *(j.watcher for j in self.joining)]

    async def _share(self, result: sharing.View | sharing.Failure, token: int) -> None:
        """Publish ``result`` to the other replicas, while the lease is still ours."""
        if not self.hub.coordinator.shared:
            return
        channel = sharing.jobs_channel(self.hub.system, self.user)
        await self.hub.coordinator.publish(
            channel, sharing.encode_result(result), (self._lease, token)
        )

    async def _end(self, error: ServiceError, token: int) -> None:
        """End every watch of the user, here and on the other replicas."""
        self.fail_all(error)
        failure = sharing.Failure(
            self.hub.coordinator.replica, error.code, error.message, error.reason
        )
        await self._share(failure, token)

    def _heard_result(self, data: bytes) -> None:
        """Apply another replica's poll answer (or its end of the watches)."""
        result = sharing.decode_result(data)
        if result.sender == self.hub.coordinator.replica:
            return
        if isinstance(result, sharing.Failure):
            self.fail_all(result.error())
            self.task.cancel()
            return
        joining = [j for j in self.joining if j.joined <= result.joined]
        view = {job.job_id: job for job in result.jobs}
        self._publish(view, result.observed, joining)

    def _heard_want(self, data: bytes) -> None:
        """Note the jobs another replica's watchers name; poll soon if it asks."""
        want = sharing.decode_want(data)
        if want.sender == self.hub.coordinator.replica:
            return
        expiry = time.monotonic() + self.hub.coordinator.lease_ttl
        self.remote_named[want.sender] = (frozenset(want.named), expiry)
        if want.soon and self.holding:
            self.nudge()

    async def _poll(self) -> dict[int, Job]:
        """One snapshot of the user's jobs and of every job a watcher here or elsewhere named."""
        named = {i for watcher in self.watchers for i in watcher.job_ids}
        named |= {i for j in self.joining for i in j.watcher.job_ids}
        now = time.monotonic()
        for sender, (ids, expiry) in list(self.remote_named.items()):
            if expiry < now:
                del self.remote_named[sender]
            else:
                named |= ids
        run = self.hub.runner(self.user)

        def count() -> None:
            self.commands += 1
            self.hub.commands_run += 1
            POLL_COMMANDS.labels(self.hub.system).inc()

        async def counted(argv: Sequence[str], *, stdin: bytes | None = None) -> Output:
            count()
            return await run(argv, stdin=stdin)

        self.polls += 1
        self.hub.polls += 1
        POLLS.labels(self.hub.system).inc()
        # A REST plug-in's requests are counted with the commands (see .tally).
        with tallied(count):
            return await self.hub.scheduler.snapshot(counted, self.user, named)

    def _publish(self, view: Mapping[int, Job], observed: float, joining: list[_Joiner]) -> bool:
        """Send the changes in ``view`` to the watchers, baselines to ``joining``.

        Returns whether any job of the view changed state (or appeared).
        """
        settled = bool(self.known)
        if self.since is None:
            self.since = observed
        changes = []
        for job_id, job in view.items():
            before = self.known.get(job_id)
            if before is None or _state_changed(before, job):
                event = JobEvent(observed, job, None if before is None else before.status)
                changes.append(event)
                self._remember(event)
            self.known[job_id] = job
        for event in changes:
            for watcher in list(self.watchers):
                if watcher.wants(event.job) and not watcher.put(event):
                    self.remove(watcher)
        for joiner in joining:
            if joiner not in self.joining:  # gone meanwhile
                continue
            self.joining.remove(joiner)
            watcher = joiner.watcher
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
            self.watchers.add(watcher)
            jobs = {i: job for i, job in sorted(view.items()) if watcher.wants(job)}
            history = {i: tuple(self.history[i]) for i in jobs if i in self.history}
            watcher.put(Baseline(observed, jobs, self.since, history))
        # The first answer only sets what "before" means.
        return bool(changes) and settled

    def _remember(self, event: JobEvent) -> None:
        """Keep ``event`` in its job's history; a change dropped from it narrows ``since``."""
        history = self.history.setdefault(event.job.job_id, [])
        history.append(event)
        if len(history) > MAX_HISTORY:
            dropped = history.pop(0)
            self.since = max(self.since or dropped.observed, dropped.observed)

    def fail_all(self, error: ServiceError) -> None:
        """End every watch of this poller with ``error``."""
        for watcher in self._followers():
            watcher.fail(error)
        self.watchers.clear()
        self.joining.clear()
