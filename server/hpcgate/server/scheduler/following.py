"""One watch, from its first poll to its end: what it reports and when it stops.

A watcher (:class:`~.watch.Subscription`) gets its jobs' changes from the
user's poller; :func:`follow` turns them into the events one WatchJobs
stream reports: the snapshot of the baseline (if asked for), then each
change, until the named jobs have all ended, the watch's time is up, or its
event budget is spent (:class:`WatchBounds`).

A watch can resume after an event it received (:func:`resume_point` reads
the event's id back): when the poller has followed the user's jobs since
before that event, the stream begins with every change it saw since then;
otherwise (the poller started later: the stream was its last watcher, or
the client came back to another replica) with a resync, the snapshot of
every watched job. A client may see an event twice, never
miss a state.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from hpcgate.server.errors import invalid_argument
from hpcgate.server.scheduler.jobs import Job, JobStatus
from hpcgate.server.scheduler.watch import Baseline, Subscription

T = TypeVar("T")


class Kind(enum.Enum):
    """Whether an event is part of the snapshot or a change seen later."""

    INITIAL = "INITIAL"
    CHANGE = "CHANGE"


@dataclass(frozen=True)
class Sighting:
    """One event of a watch: ``job`` as seen at ``observed``, after ``previous``."""

    kind: Kind
    observed: float  # epoch seconds
    job: Job
    previous: JobStatus | None = None


@dataclass
class WatchBounds:
    """When a watch ends besides the end of its jobs: a deadline and an event budget."""

    deadline: float | None  # time.monotonic()
    events_left: int | None

    @classmethod
    def of(cls, max_duration: float | None, max_events: int | None) -> WatchBounds:
        """The bounds a request sets (0 events: no budget); a negative duration is invalid."""
        deadline = None
        if max_duration is not None:
            if max_duration < 0:
                raise invalid_argument("maxDuration", "must not be negative")
            deadline = time.monotonic() + max_duration
        return cls(deadline, max_events or None)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def spend(self) -> bool:
        """Count one event sent; True when the budget is used up."""
        if self.events_left is None:
            return False
        self.events_left -= 1
        return self.events_left <= 0

    async def within(self, waiting: Awaitable[T]) -> T | None:
        """Await ``waiting`` unless the watch's time is up first (then None)."""
        try:
            return await asyncio.wait_for(waiting, self.remaining())
        except TimeoutError:
            return None


def _millis(epoch: float) -> int:
    return round(epoch * 1000)


def event_id(seen: Sighting) -> str:
    """The id of ``seen``, to resume after it: observation time (ms) and job id."""
    return f"{_millis(seen.observed)}-{seen.job.job_id}"


def resume_point(last_event_id: str) -> int:
    """When the event named by ``last_event_id`` was observed (epoch milliseconds)."""
    millis, dash, job = last_event_id.partition("-")
    if not (dash and millis.isdigit() and job.isdigit()):
        raise invalid_argument("lastEventId", f"{last_event_id!r} is no event id of this watch")
    return int(millis)


def _opening(baseline: Baseline, send_initial: bool, resume: int | None) -> list[Sighting]:
    """What a watch sends before the changes: a replay, a resync or the asked-for snapshot."""
    since = baseline.since
    if resume is not None and since is not None and _millis(since) <= resume:
        # Every change since ``resume`` passed through this poller.
        replay = [e for h in baseline.history.values() for e in h if _millis(e.observed) >= resume]
        replay.sort(key=lambda e: (e.observed, e.job.job_id))
        return [Sighting(Kind.CHANGE, e.observed, e.job, e.previous) for e in replay]
    if resume is not None or send_initial:
        return [Sighting(Kind.INITIAL, baseline.observed, job) for job in baseline.jobs.values()]
    return []


async def follow(
    watcher: Subscription,
    baseline: Baseline,
    bounds: WatchBounds,
    send_initial: bool,
    resume: int | None = None,
) -> AsyncIterator[Sighting]:
    """The opening (:func:`_opening`), then the changes, until a named job set is done."""
    named = bool(watcher.job_ids)
    open_jobs = {i for i, job in baseline.jobs.items() if not job.status.normalized_state.terminal}
    for seen in _opening(baseline, send_initial, resume):
        yield seen
        if bounds.spend():
            return
    while open_jobs or not named:
        event = await bounds.within(watcher.next_event())
        if event is None:
            return
        yield Sighting(Kind.CHANGE, event.observed, event.job, event.previous)
        if event.job.status.normalized_state.terminal:
            open_jobs.discard(event.job.job_id)
        if bounds.spend():
            return
