"""WatchJobs on the real Slurm of the loopback cluster: events, bounds, the shared poller.

Transition times come from sacct (run over SSH as the job's owner), not from
the test's own clock. The job that must reach TIMEOUT is submitted when the
module starts (Slurm's smallest limit is a minute, and slurmctld checks limits
every 30 s) and checked by the last test, so its wait overlaps the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from integration.test_scheduler import (
    cancel_quietly,
    eventually,
    ssh_output,
    stub,
    submit,
    workdir,
)

from cluster_fixture import Cluster
from conftest import PLUGINS, LiveService, live_per_plugin
from hpcgate.server.errors import ErrorKind
from hpcgate.server.scheduler.slurmrest.jobs import SlurmRestJobs
from hpcgate.server.scheduler.watch import WatchHub
from hpcgate.v1 import scheduler_pb2

INITIAL = scheduler_pb2.JOB_EVENT_TYPE_INITIAL
CHANGE = scheduler_pb2.JOB_EVENT_TYPE_CHANGE
PENDING = scheduler_pb2.JOB_STATE_PENDING
RUNNING = scheduler_pb2.JOB_STATE_RUNNING
COMPLETING = scheduler_pb2.JOB_STATE_COMPLETING
COMPLETED = scheduler_pb2.JOB_STATE_COMPLETED
# The order a successful job's states come in.
LIFECYCLE = [PENDING, RUNNING, COMPLETING, COMPLETED]
# A watch in these tests never needs longer than this.
WATCH_LIMIT = 120.0


@pytest.fixture(scope="module", params=PLUGINS)
def live(request: pytest.FixtureRequest, cluster: Cluster) -> LiveService:
    """Every test here runs once per scheduler plug-in (CLI over SSH, slurmrestd)."""
    del cluster  # (both services run on it)
    return live_per_plugin(request)


def _rest_requests(watch_hub: WatchHub) -> int:
    """The slurmrestd requests made for alice so far (0 on the CLI plug-in)."""
    adapter = watch_hub.scheduler
    return adapter.requests_sent("alice") if isinstance(adapter, SlurmRestJobs) else 0


def hub(live: LiveService) -> WatchHub:
    return live.running.runtime.system(live.system).watch


def request(
    live: LiveService, job_ids: Iterable[int] = (), **fields: Any
) -> scheduler_pb2.WatchJobsRequest:
    return scheduler_pb2.WatchJobsRequest(system_name=live.system, job_ids=list(job_ids), **fields)


def open_watch(live: LiveService, user: str, job_ids: Iterable[int] = (), **fields: Any) -> Any:
    """A WatchJobs call as ``user`` (iterate it for the events)."""
    return stub(live).WatchJobs(request(live, job_ids, **fields), metadata=live.metadata(user))


async def collect(
    call: Any, until: Callable[[scheduler_pb2.WatchJobsResponse], bool] | None = None
) -> list[scheduler_pb2.WatchJobsResponse]:
    """The events of ``call`` until it ends (or ``until`` holds, then cancel it)."""
    events = []
    async with asyncio.timeout(WATCH_LIMIT):
        async for event in call:
            events.append(event)
            if until is not None and until(event):
                call.cancel()
                break
    return events


async def sacct_times(cluster: Cluster, user: str, job_id: int) -> dict[str, int]:
    """Submit, start and end of a finished job, in epoch seconds, from sacct."""

    async def read() -> str:
        return await ssh_output(
            cluster,
            user,
            f"SLURM_TIME_FORMAT=%s sacct -n -P -X -j {job_id} -o Submit,Start,End,State",
        )

    line = await eventually(
        read, lambda out: out.strip() and "Unknown" not in out, 30, "sacct recording the end"
    )
    submit_at, start, end, _ = line.strip().split("|")
    return {"submit": int(submit_at), "start": int(start), "end": int(end)}


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait (bounded) until ``check()`` holds."""

    async def probe() -> bool:
        return check()

    await eventually(probe, bool, within, what)


def no_pollers(live: LiveService) -> Callable[[], bool]:
    return lambda: not hub(live).pollers


def seconds(stamp: Any) -> float:
    return float(stamp.seconds + stamp.nanos / 1e9)


def assert_lifecycle_order(events: list[scheduler_pb2.WatchJobsResponse]) -> None:
    """States only move forward, and each change names the state before it."""
    states = [e.job.status.normalized_state for e in events]
    ranks = [LIFECYCLE.index(s) for s in states]
    assert ranks == sorted(ranks), states
    assert len(set(states)) == len(states), f"a repeated state is no change: {states}"
    for before, after in itertools.pairwise(events):
        assert after.event_type == CHANGE
        assert after.previous_normalized_state == before.job.status.normalized_state
        assert after.previous_state == before.job.status.state


@pytest.fixture(scope="module")
async def overtime_job(cluster: Cluster) -> AsyncIterator[int]:
    """A job that outruns its one-minute limit (started first, checked last).

    One job for both plug-ins, submitted by sbatch when the module starts: by
    the time the second plug-in's pass checks it, it has long timed out, so
    the suite waits out Slurm's limit once rather than once per plug-in.
    """
    command = (
        f"cd {workdir('bob')} && sbatch --parsable --partition=debug --time=1 --wrap 'sleep 600'"
    )
    job_id = int((await ssh_output(cluster, "bob", command)).strip().split(";")[0])
    yield job_id
    await ssh_output(cluster, "bob", f"scancel {job_id} || true")


async def test_submit_then_watch_in_order_and_on_time(
    live: LiveService, cluster: Cluster, overtime_job: int
) -> None:
    """Each change arrives within one poll interval plus 1 s of when sacct says it happened."""
    config = live.running.runtime.system(live.system).config.scheduler
    # A watch on all of alice's jobs, open before the submission: it sees the job appear.
    everything = open_watch(live, "alice")
    await everything.initial_metadata()
    job_id = await submit(live, "alice", "sleep 3")
    named = open_watch(live, "alice", [job_id], send_initial=True)
    done = await collect(named)  # ends by itself: the one named job is terminal
    appeared = await collect(
        everything,
        lambda e: e.job.job_id == job_id and e.job.status.normalized_state == COMPLETED,
    )
    seen_all = [e for e in appeared if e.job.job_id == job_id]

    assert done[0].event_type == INITIAL
    assert done[0].previous_normalized_state == scheduler_pb2.JOB_STATE_UNSPECIFIED
    assert not done[0].HasField("previous_state")
    assert done[0].job.status.normalized_state in {PENDING, RUNNING}
    assert done[-1].job.status.normalized_state == COMPLETED
    assert done[-1].job.status.exit_code == 0
    assert_lifecycle_order(done)
    assert seen_all[0].event_type == CHANGE  # new to the watch: a change from nothing
    assert seen_all[0].previous_normalized_state == scheduler_pb2.JOB_STATE_UNSPECIFIED
    assert_lifecycle_order(seen_all)
    assert [e.job.status.normalized_state for e in seen_all][-1] == COMPLETED

    # On time: compare each change with the moment sacct gives for it.
    times = await sacct_times(cluster, "alice", job_id)
    when = {PENDING: times["submit"], RUNNING: times["start"], COMPLETED: times["end"]}
    allowed = config.poll_max_interval + 1.0
    lags = []
    for event in [e for e in done if e.event_type == CHANGE] + seen_all:
        state = event.job.status.normalized_state
        if state in when:
            lag = seconds(event.event_time) - when[state]
            lags.append(lag)
            # sacct's seconds are truncated: an event may be stamped up to 1 s "early".
            assert -1.0 <= lag <= allowed, (state, lag)
    assert len(lags) >= 3  # the new job, RUNNING and COMPLETED at least
    print(f"\nwatch lags behind sacct (s): {[round(lag, 2) for lag in lags]}")


async def test_exit_code_and_cancel_reach_the_watch(live: LiveService, overtime_job: int) -> None:
    failing = await submit(live, "alice", "sleep 1; exit 3")
    sleeping = await submit(live, "alice", "sleep 300")
    call = open_watch(live, "alice", [failing, sleeping], send_initial=True)
    await call.initial_metadata()
    await stub(live).CancelJob(
        scheduler_pb2.CancelJobRequest(system_name=live.system, job_id=sleeping),
        metadata=live.metadata("alice"),
    )
    events = await collect(call)  # ends once both are terminal
    last = {e.job.job_id: e.job for e in events}
    assert last[failing].status.state == "FAILED"
    assert last[failing].status.normalized_state == scheduler_pb2.JOB_STATE_FAILED
    assert last[failing].status.exit_code == 3
    assert last[sleeping].status.normalized_state == scheduler_pb2.JOB_STATE_CANCELLED
    assert last[sleeping].status.state.startswith("CANCELLED")


async def test_unknown_job_is_not_found(live: LiveService) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(open_watch(live, "alice", [4000000000]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await until(no_pollers(live), 5, "the poller ending")


async def test_bounds_end_the_stream(live: LiveService) -> None:
    job_id = await submit(live, "alice", "sleep 30")
    try:
        events = await collect(open_watch(live, "alice", [job_id], send_initial=True, max_events=1))
        assert [e.event_type for e in events] == [INITIAL]
        started = time.monotonic()
        events = await collect(
            open_watch(live, "alice", max_duration=duration_pb2.Duration(seconds=1))
        )
        assert 0.9 <= time.monotonic() - started < 10
        assert all(e.event_type == CHANGE for e in events)
    finally:
        await cancel_quietly(live, "alice", job_id)


async def test_200_watchers_share_one_poller(live: LiveService) -> None:
    """The scheduler commands follow the poll intervals, not the number of watchers."""
    watch_hub = hub(live)
    config = live.running.runtime.system(live.system).config.scheduler
    job_ids = await asyncio.gather(*(submit(live, "alice", "sleep 2") for _ in range(20)))
    commands, polls = watch_hub.commands_run, watch_hub.polls
    requests = _rest_requests(watch_hub)
    started = time.monotonic()
    calls = [open_watch(live, "alice", [job_ids[i % 20]], send_initial=True) for i in range(200)]
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    assert list(watch_hub.pollers) == ["alice"]
    assert watch_hub.pollers["alice"].watchers == 200
    results = await asyncio.gather(*(collect(call) for call in calls))
    elapsed = time.monotonic() - started
    commands, polls = watch_hub.commands_run - commands, watch_hub.polls - polls
    requests = _rest_requests(watch_hub) - requests

    for i, events in enumerate(results):
        assert {e.job.job_id for e in events} == {job_ids[i % 20]}
        assert events[-1].job.status.normalized_state == COMPLETED
        assert_lifecycle_order(events)
    intervals = elapsed / config.poll_min_interval
    print(
        f"\n200 watchers, 20 jobs: {commands} scheduler commands or requests"
        f" ({requests} to slurmrestd) in {polls} polls"
        f" over {elapsed:.1f} s ({intervals:.0f} minimum intervals)"
    )
    # One poller, never more often than the minimum interval ...
    assert polls <= intervals + 1
    # ... and one set of commands per poll: one squeue while slurmctld knows the jobs
    # (slurm-rest: one GET of the jobs, counted with the commands; no command at all).
    assert commands <= polls
    if isinstance(watch_hub.scheduler, SlurmRestJobs):
        assert requests == commands == polls > 0
    await until(no_pollers(live), 5, "the poller ending")


async def test_two_users_each_see_only_their_own_jobs(live: LiveService) -> None:
    watches = {user: open_watch(live, user) for user in ("alice", "bob")}
    await asyncio.gather(*(call.initial_metadata() for call in watches.values()))
    assert set(hub(live).pollers) == {"alice", "bob"}
    jobs = {user: await submit(live, user, "sleep 1") for user in ("alice", "bob")}

    async def own_job_done(user: str) -> list[scheduler_pb2.WatchJobsResponse]:
        return await collect(
            watches[user],
            lambda e: e.job.job_id == jobs[user] and e.job.status.normalized_state == COMPLETED,
        )

    seen = dict(zip(watches, await asyncio.gather(*map(own_job_done, watches)), strict=True))
    for user, events in seen.items():
        assert {e.job.user for e in events} == {user}
        assert jobs[user] in {e.job.job_id for e in events}
        other = jobs["bob" if user == "alice" else "alice"]
        assert other not in {e.job.job_id for e in events}


def _accepts_calls(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is grpc's own, waiting for the server's next call (always one)."""
    accepting = ("_request_call", "_request_registered_call")
    return any(frame.f_code.co_name in accepting for frame in task.get_stack())


async def test_disconnecting_clients_leave_no_poller_or_task(live: LiveService) -> None:
    watch_hub = hub(live)
    job_id = await submit(live, "alice", "sleep 60")
    tasks_before = asyncio.all_tasks()
    try:
        calls = [open_watch(live, "alice", [job_id]) for _ in range(5)]
        calls += [open_watch(live, "alice") for _ in range(5)]
        await asyncio.gather(*(call.initial_metadata() for call in calls))
        assert watch_hub.pollers["alice"].watchers == 10
        started = {t for t in asyncio.all_tasks() - tasks_before if not _accepts_calls(t)}
        pollers = [t for t in started if t.get_name().startswith("job-poller:")]
        assert len(pollers) == 1
        assert len(started) >= 11  # the poller, and each call's handler on the server
        for call in calls:
            call.cancel()

        def left() -> list[str]:
            return sorted(t.get_name() for t in started if not t.done())

        with contextlib.suppress(AssertionError):
            await until(lambda: not left(), 10, "every task of the watches ending")
        assert not left(), f"tasks left behind: {left()}"
        assert not watch_hub.pollers
    finally:
        await cancel_quietly(live, "alice", job_id)


async def test_scheduler_going_down_ends_the_watch_unavailable(
    live: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller asks the health gate before every poll (slurmctld itself keeps running)."""
    from hpcgate.server.errors import ServiceError

    watch_hub = hub(live)
    call = open_watch(live, "alice")
    await call.initial_metadata()

    def down() -> None:
        raise ServiceError(ErrorKind.UNAVAILABLE, "scheduler down", "SERVICE_UNHEALTHY")

    monkeypatch.setattr(watch_hub, "gate", down)
    watch_hub.nudge("alice")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await until(no_pollers(live), 5, "the poller ending")


# -- REST: Server-Sent Events and NDJSON ---------------------------------------------


async def _rest_events(
    live: LiveService, job_id: int, accept: str | None
) -> tuple[str, list[dict[str, Any]]]:
    headers = live.headers("alice")
    if accept:
        headers["Accept"] = accept
    params = {"jobIds": str(job_id), "sendInitial": "true"}
    async with (
        httpx.AsyncClient(base_url=live.rest_url, timeout=WATCH_LIMIT) as client,
        client.stream(
            "GET", f"/compute/{live.system}/jobs/watch", params=params, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line]
        kind = response.headers["content-type"]
    if accept is None:
        # Every SSE event is an id line and a data line (ids resume watches);
        # a slow job may also see heartbeat comments.
        lines = [line for line in lines if line != ": keepalive"]
        assert all(line.startswith(("id: ", "data: ")) for line in lines), lines
        ids = [line.removeprefix("id: ") for line in lines if line.startswith("id: ")]
        lines = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert ids == [json.loads(line)["eventId"] for line in lines]
    return kind, [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [(None, "text/event-stream"), ("application/x-ndjson", "application/x-ndjson")],
)
async def test_rest_watch_as_sse_and_ndjson(
    live: LiveService, accept: str | None, media_type: str
) -> None:
    job_id = await submit(live, "alice", "sleep 1")
    kind, events = await _rest_events(live, job_id, accept)
    assert kind.startswith(media_type)
    assert events[0]["eventType"] == "JOB_EVENT_TYPE_INITIAL"
    assert events[-1]["job"]["status"]["state"] == "COMPLETED"
    assert events[-1]["job"]["status"]["normalizedState"] == "JOB_STATE_COMPLETED"
    assert {e["job"]["jobId"] for e in events} == {str(job_id)}  # a string, as in FirecREST


async def test_rest_watch_errors_and_disconnects(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=30) as client:
        url = f"/compute/{live.system}/jobs/watch"
        missing = await client.get(
            url, params={"jobIds": "4000000000"}, headers=live.headers("alice")
        )
        assert missing.status_code == 404, missing.text
        assert missing.json()["data"]["reason"] == "JOB_NOT_FOUND"
        # A client that goes away mid-stream takes the poller with it.
        async with client.stream("GET", url, headers=live.headers("alice")) as response:
            assert response.status_code == 200
            assert list(hub(live).pollers) == ["alice"]
    await until(no_pollers(live), 10, "the poller ending")


async def test_over_time_limit_gives_timeout(live: LiveService, overtime_job: int) -> None:
    """Runs last: the job submitted when the module started outlives its limit."""
    events = await collect(open_watch(live, "bob", [overtime_job], send_initial=True))
    final = events[-1].job
    assert final.status.state == "TIMEOUT"
    assert final.status.normalized_state == scheduler_pb2.JOB_STATE_TIMEOUT
    assert final.time.limit == 1
