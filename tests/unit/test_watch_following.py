"""When a watch ends: its named jobs done, its time up, or its event budget spent."""

from __future__ import annotations

import asyncio

import pytest

from hpcgate.server.errors import ServiceError
from hpcgate.server.scheduler.following import Kind, WatchBounds, follow
from hpcgate.server.scheduler.jobs import Job, JobState, JobStatus
from hpcgate.server.scheduler.watch import Baseline, JobEvent, Subscription

RUNNING = JobStatus("RUNNING", JobState.RUNNING)
DONE = JobStatus("COMPLETED", JobState.COMPLETED)


def job(job_id: int, status: JobStatus = RUNNING) -> Job:
    return Job(job_id=job_id, name="j", status=status, user="alice")


async def kinds(
    watcher: Subscription, baseline: Baseline, bounds: WatchBounds, initial: bool
) -> list[tuple[Kind, int]]:
    return [(s.kind, s.job.job_id) async for s in follow(watcher, baseline, bounds, initial)]


async def test_a_named_watch_ends_when_its_jobs_have_ended() -> None:
    watcher = Subscription("alice", frozenset({1, 2}))
    baseline = Baseline(10.0, {1: job(1), 2: job(2, DONE)})
    watcher.put(JobEvent(11.0, job(1, DONE), RUNNING))
    watcher.put(JobEvent(12.0, job(3)))  # never read: the watch is over
    seen = await kinds(watcher, baseline, WatchBounds.of(None, None), initial=True)
    assert seen == [(Kind.INITIAL, 1), (Kind.INITIAL, 2), (Kind.CHANGE, 1)]


async def test_the_event_budget_counts_the_snapshot_too() -> None:
    watcher = Subscription("alice", frozenset())
    baseline = Baseline(10.0, {1: job(1)})
    watcher.put(JobEvent(11.0, job(2)))
    watcher.put(JobEvent(12.0, job(3)))
    seen = await kinds(watcher, baseline, WatchBounds.of(None, 2), initial=True)
    assert seen == [(Kind.INITIAL, 1), (Kind.CHANGE, 2)]


async def test_an_unnamed_watch_ends_when_its_time_is_up() -> None:
    watcher = Subscription("alice", frozenset())
    watcher.put(JobEvent(11.0, job(2)))
    started = asyncio.get_running_loop().time()
    seen = await kinds(watcher, Baseline(10.0, {}), WatchBounds.of(0.2, 0), initial=True)
    assert seen == [(Kind.CHANGE, 2)]
    # asyncio runs a timer up to its clock's resolution early: allow a little.
    assert asyncio.get_running_loop().time() - started >= 0.19


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ServiceError) as error:
        WatchBounds.of(-1.0, None)
    assert set(error.value.fields) == {"maxDuration"}
