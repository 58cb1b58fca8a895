"""Scenario 5: 1,000 concurrent WatchJobs streams on one user's 10 jobs.

The design promise is one poller per (system, user): the number of
scheduler commands must not grow with the number of watchers. The server
counts its scheduler commands in a Prometheus metric; the harness scrapes
the server's metrics port around each window and reports commands per
second and, when the server also counts its polls, commands per poll. A
server without such a metric gets "not available" for those figures (the
commands run on the cluster, out of the harness's sight). The server's CPU
share comes from /proc.

The 10 jobs are ``sleep 10``, ``sleep 20``, ... ``sleep 100``, so states
keep changing while the windows are measured; afterwards the harness
cancels what still runs, and every stream must then end by itself with a
terminal state for each of the 10 jobs.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field

import asyncssh
import httpx
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

from bench.context import Context
from bench.measure import describe, measure_many, unimplemented_is_not_available
from bench.model import Figure, NotAvailableError, Status, WrongBytesError
from bench.procfs import CpuMeter
from bench.remote import output
from bench.stack import Metadata
from hpcgate.server.ssh import retry_channel_open
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc

SCENARIO = "watch_fanout"
WATCHERS = 1000
JOBS = 10
WINDOW = 10.0  # seconds per measured window: at least one poll at the slowest interval
SETTLE_TIMEOUT = 120.0
STREAM_BOUND = 900  # max_duration of each stream: none outlives a stuck run
# Metric families that count the scheduler commands and the polls; counters
# are read from *_total, histograms and summaries from *_count.
COMMANDS = re.compile(r"scheduler.*command|command.*scheduler|slurm.*command")
POLLS = re.compile(r"(scheduler|watch|job).*poll|poll.*(scheduler|watch|job)")
TERMINAL = {
    scheduler_pb2.JOB_STATE_COMPLETED,
    scheduler_pb2.JOB_STATE_FAILED,
    scheduler_pb2.JOB_STATE_CANCELLED,
    scheduler_pb2.JOB_STATE_TIMEOUT,
    scheduler_pb2.JOB_STATE_NODE_FAIL,
    scheduler_pb2.JOB_STATE_PREEMPTED,
    scheduler_pb2.JOB_STATE_OUT_OF_MEMORY,
    scheduler_pb2.JOB_STATE_BOOT_FAIL,
    scheduler_pb2.JOB_STATE_DEADLINE,
    scheduler_pb2.JOB_STATE_REVOKED,
}


def count_metric(metrics_text: str, pattern: re.Pattern[str]) -> tuple[str, float] | None:
    """The first matching family (counters first) and its total over all labels."""
    families = [f for f in text_string_to_metric_families(metrics_text) if pattern.search(f.name)]
    families.sort(key=lambda family: family.type != "counter")
    for family in families:
        suffix = "_total" if family.type == "counter" else "_count"
        samples = [s.value for s in family.samples if s.name.endswith(suffix)]
        if samples:
            return family.name, sum(samples)
    return None


async def scrape(url: str) -> str:
    """The Prometheus text of the server's metrics port."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.text


@dataclass
class _Watchers:
    """The streams, and what they have received so far."""

    stub: scheduler_pb2_grpc.SchedulerAsyncStub
    request: scheduler_pb2.WatchJobsRequest
    metadata: Metadata
    initial: int = 0
    events: int = 0
    tasks: list[asyncio.Task[dict[int, int]]] = field(default_factory=list)

    async def _one(self) -> dict[int, int]:
        """One stream until the server ends it; returns each job's last normalised state."""
        states: dict[int, int] = {}
        async for event in self.stub.WatchJobs(self.request, metadata=self.metadata):
            self.events += 1
            if event.event_type == scheduler_pb2.JOB_EVENT_TYPE_INITIAL:
                self.initial += 1
            states[event.job.job_id] = event.job.status.normalized_state
        return states

    def start(self, count: int) -> None:
        self.tasks = [asyncio.create_task(self._one()) for _ in range(count)]

    async def settled(self, expected_initial: int) -> None:
        """Wait until every stream has had its initial snapshots (all are open)."""
        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        while self.initial < expected_initial:
            failed = [t for t in self.tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception() or RuntimeError("watch failed")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.initial} of {expected_initial} initial events")
            await asyncio.sleep(0.1)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


async def _probe(ctx: Context) -> None:
    """Fail fast (NotAvailableError) when WatchJobs is not built, before submitting jobs."""
    stub = scheduler_pb2_grpc.SchedulerStub(ctx.channel)
    request = scheduler_pb2.WatchJobsRequest(
        system_name=ctx.stack.system, max_duration=duration_pb2.Duration(seconds=1)
    )
    with unimplemented_is_not_available():
        async for _ in stub.WatchJobs(request, metadata=ctx.stack.metadata(), timeout=30):
            pass


async def _submit(conn: asyncssh.SSHClientConnection, workdir: str) -> list[int]:
    """Submit the 10 jobs as alice with sbatch (one SSH command)."""
    sbatch = (
        "sbatch --parsable --job-name=hpcgate-bench-watch --output=/dev/null --time=5 "
        '--wrap="sleep $((i * 10))"'
    )
    command = f"cd {shlex.quote(workdir)} && for i in $(seq {JOBS}); do {sbatch} || exit 1; done"
    return [int(line.split(b";")[0]) for line in (await output(conn, command)).split()]


async def _scancel(conn: asyncssh.SSHClientConnection, job_ids: list[int]) -> None:
    if job_ids:
        await retry_channel_open(
            conn, lambda: conn.run("scancel " + " ".join(str(j) for j in job_ids), check=False)
        )


def _check(results: list[dict[int, int]], job_ids: list[int]) -> None:
    """Every stream must have seen every job end."""
    for index, states in enumerate(results):
        unfinished = [j for j in job_ids if states.get(j) not in TERMINAL]
        if unfinished:
            raise WrongBytesError(
                f"watch {index} ended without a terminal state for jobs {unfinished}"
            )


def _figures() -> dict[str, Figure]:
    params = {"watchers": WATCHERS, "jobs": JOBS, "window_s": WINDOW}

    def figure(name: str, unit: str) -> Figure:
        return Figure(SCENARIO, name, unit, dict(params))

    return {
        "commands": figure("scheduler commands per second", "cmd/s"),
        "polls": figure("polls per second", "poll/s"),
        "per_poll": figure("scheduler commands per poll", "cmd/poll"),
        "cpu": figure("server CPU share", "% of a core"),
        "events": figure("events delivered per second", "events/s"),
    }


async def _measure(ctx: Context, watchers: _Watchers, figures: dict[str, Figure]) -> None:
    """Warm-up window, then the measured ones; counts the server lacks are not available."""
    meter = CpuMeter({"server": ctx.stack.pids["server"]})
    metric_names: dict[str, str] = {}

    async def window() -> dict[str, float]:
        before, events = await scrape(ctx.stack.metrics_url), watchers.events
        meter.start()
        await asyncio.sleep(WINDOW)
        cpu = meter.stop()["server"]
        after = await scrape(ctx.stack.metrics_url)
        rates = {}
        for key, pattern in (("commands", COMMANDS), ("polls", POLLS)):
            start, end = count_metric(before, pattern), count_metric(after, pattern)
            rates[key] = 0.0 if start is None or end is None else (end[1] - start[1]) / WINDOW
            if end is not None:
                metric_names[key] = end[0]
        return {
            **rates,
            "cpu": 100 * cpu / WINDOW,
            "events": (watchers.events - events) / WINDOW,
        }

    counted = {key: figures[key] for key in ("commands", "polls", "cpu", "events")}
    await measure_many(counted, ctx.plan, window)
    commands, polls, per_poll = figures["commands"], figures["polls"], figures["per_poll"]
    per_poll.samples = [c / p for c, p in zip(commands.samples, polls.samples, strict=True) if p]
    per_poll.status, per_poll.detail = commands.status, commands.detail
    needs = {"commands": {"commands"}, "polls": {"polls"}, "per_poll": {"commands", "polls"}}
    for key, counts in needs.items():
        figure, missing = figures[key], sorted(counts - metric_names.keys())
        if figure.status != Status.OK:
            continue
        if missing:
            figure.samples.clear()
            figure.status = Status.NOT_AVAILABLE
            figure.detail = f"the server exposes no metric counting {' and '.join(missing)}"
        else:
            figure.extra["metrics"] = sorted(metric_names.values())


async def run(ctx: Context) -> list[Figure]:
    """Submit the jobs, open the streams, measure windows, cancel, check every stream."""
    figures = _figures()
    try:
        await _probe(ctx)
    except NotAvailableError as error:
        return _all(figures, Status.NOT_AVAILABLE, str(error))
    except Exception as error:
        return _all(figures, Status.FAILED, f"WatchJobs probe: {describe(error)}")

    job_ids: list[int] = []
    watchers: _Watchers | None = None
    try:
        job_ids = await _submit(await ctx.ssh.get(), ctx.dataset.root)
        request = scheduler_pb2.WatchJobsRequest(
            system_name=ctx.stack.system,
            job_ids=job_ids,
            send_initial=True,
            max_duration=duration_pb2.Duration(seconds=STREAM_BOUND),
        )
        stub = scheduler_pb2_grpc.SchedulerStub(ctx.channel)
        watchers = _Watchers(stub, request, ctx.stack.metadata())
        watchers.start(WATCHERS)
        await watchers.settled(WATCHERS * JOBS)
        await _measure(ctx, watchers, figures)
        await _scancel(await ctx.ssh.get(), job_ids)
        results = await asyncio.wait_for(asyncio.gather(*watchers.tasks), SETTLE_TIMEOUT)
        _check(results, job_ids)
    except Exception as error:
        return _all(figures, Status.FAILED, describe(error))
    finally:
        if watchers is not None:
            watchers.cancel()
        await _scancel(await ctx.ssh.get(), job_ids)
    return list(figures.values())


def _all(figures: dict[str, Figure], status: Status, detail: str) -> list[Figure]:
    for figure in figures.values():
        figure.samples.clear()
        figure.status, figure.detail = status, detail
    return list(figures.values())
