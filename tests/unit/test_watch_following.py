"""When a watch ends (its jobs done, its time up, its budget spent), and how it resumes."""

from __future__ import annotations

import asyncio

import pytest

from hpcgate.server.errors import ServiceError
from hpcgate.server.scheduler.following import (
    Kind,
    Sighting,
    WatchBounds,
    event_id,
    follow,
    resume_point,
)
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


def seen_of(events: list[Sighting]) -> list[tuple[Kind, int, float]]:
    return [(s.kind, s.job.job_id, s.observed) for s in events]


async def resumed(baseline: Baseline, last_event_id: str) -> list[Sighting]:
    """What a resumed watch of every job sends before the live changes."""
    watcher = Subscription("alice", frozenset())
    bounds = WatchBounds.of(0.05, None)  # ends once the opening is out
    return [s async for s in follow(watcher, baseline, bounds, False, resume_point(last_event_id))]


def history_baseline(since: float) -> Baseline:
    pending = JobStatus("PENDING", JobState.PENDING)
    history = {
        1: (JobEvent(5.0, job(1, pending)), JobEvent(11.0, job(1)), JobEvent(13.0, job(1, DONE))),
        2: (JobEvent(12.0, job(2)),),
    }
    return Baseline(14.0, {1: job(1, DONE), 2: job(2)}, since, history)


async def test_a_resume_replays_every_change_after_the_last_event_in_order() -> None:
    baseline = history_baseline(since=5.0)
    events = await resumed(baseline, "11000-1")
    # The event the client had comes again (same id), then the ones it missed.
    assert seen_of(events) == [
        (Kind.CHANGE, 1, 11.0),
        (Kind.CHANGE, 2, 12.0),
        (Kind.CHANGE, 1, 13.0),
    ]
    assert [event_id(s) for s in events] == ["11000-1", "12000-2", "13000-1"]


async def test_a_resume_from_before_the_poller_knew_is_a_resync() -> None:
    baseline = history_baseline(since=12.5)  # changes before 12.5 may be missing
    events = await resumed(baseline, "11000-1")
    assert seen_of(events) == [(Kind.INITIAL, 1, 14.0), (Kind.INITIAL, 2, 14.0)]
    # A fresh poller (no history at all) resyncs too.
    events = await resumed(Baseline(14.0, {2: job(2)}), "11000-1")
    assert seen_of(events) == [(Kind.INITIAL, 2, 14.0)]


@pytest.mark.parametrize("bad", ["", "12", "x-1", "12-", "-3", "1.5-2", "12-3-4"])
def test_a_malformed_event_id_names_the_field(bad: str) -> None:
    with pytest.raises(ServiceError) as error:
        resume_point(bad)
    assert set(error.value.fields) == {"lastEventId"}


def test_event_ids_round_trip() -> None:
    seen = Sighting(Kind.CHANGE, 1700000000.1234, job(42))
    assert event_id(seen) == "1700000000123-42"
    assert resume_point(event_id(seen)) == 1700000000123
