"""A watcher of jobs: what it follows and the queue its user's poller fills.

:mod:`.watch` describes how watchers are fed; :mod:`.following` turns one
watcher's queue into the events of its WatchJobs stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.jobs import Job, JobStatus

# Events a watcher may leave unread before it is dropped (RESOURCE_EXHAUSTED).
MAX_QUEUED_EVENTS = 10_000


@dataclass(frozen=True)
class JobEvent:
    """A state change one poll saw; ``previous`` is the status before (None: a new job)."""

    observed: float  # epoch seconds, when the poll's answer arrived
    job: Job
    previous: JobStatus | None = None


@dataclass(frozen=True)
class Baseline:
    """What the first poll after a watcher joined saw of the jobs it follows.

    ``history`` holds the poller's recent changes of each of those jobs,
    complete from ``since`` on (a resumed watch replays those after its
    last event).
    """

    observed: float
    jobs: Mapping[int, Job]
    since: float | None = None
    history: Mapping[int, Sequence[JobEvent]] = field(default_factory=dict)


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
