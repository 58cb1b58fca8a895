"""Other users' jobs, exactly as far as Slurm shows them to the caller (issue 14, item 7).

alice has a running, a pending and a finished job, each with a name, working
directory and output path that carry this module's tag. bob asks about them
through every route (get, metadata, allusers list, watch, cancel, attach; REST
and gRPC), and over SSH asks Slurm itself.

Without ``PrivateData`` (the cluster's default) Slurm shows bob her jobs, and
hpcgate shows him the same. With ``PrivateData=jobs`` switched on (for the
tests that take the ``private`` fixture: one short window, always closed
again) Slurm hides them from bob, and every answer hpcgate gives bob about her
job is the answer it gives about a job that does not exist: bob learns nothing,
not even that the job is there.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from integration.test_scheduler import (
    cancel_quietly,
    details,
    eventually,
    finished,
    get_job,
    script,
    stub,
)

from cluster_fixture import Cluster
from conftest import PLUGINS, LiveService, live_per_plugin
from hpcgate.v1 import scheduler_pb2
from private_data import private_jobs

TAG = f"privacy-{uuid.uuid4().hex[:10]}"
# An id no job has (Slurm's ids here count up from 1), still one Slurm accepts.
NO_SUCH_JOB = 3_999_999
# How long a watch that wrongly found the job may run before the test sees it.
WATCH_BOUND_S = 5


@pytest.fixture(scope="module", params=PLUGINS)
def live(request: pytest.FixtureRequest, cluster: Cluster) -> LiveService:
    """Every test here runs once per scheduler plug-in: slurmrestd applies PrivateData too."""
    del cluster  # (both services run on it)
    return live_per_plugin(request)


@dataclass(frozen=True)
class AlicesJobs:
    """alice's jobs; their names and paths carry TAG, so any leak of them shows."""

    running: int
    pending: int
    finished: int
    workdir: str

    @property
    def ids(self) -> tuple[int, int, int]:
        return (self.running, self.pending, self.finished)

    def output(self, job_id: int) -> str:
        return f"{self.workdir}/out-{job_id}.txt"


async def _submit(live: LiveService, workdir: str, kind: str, body: str, *directives: str) -> int:
    description = scheduler_pb2.JobDescriptionModel(
        working_directory=workdir,
        name=f"{TAG}-{kind}",
        standard_output=f"{workdir}/out-%j.txt",
        script=script(body, *directives),
    )
    reply = await stub(live).SubmitJob(
        scheduler_pb2.SubmitJobRequest(system_name=live.system, job=description),
        metadata=live.metadata("alice"),
    )
    return reply.job_id


@pytest.fixture(scope="module")
async def alices(live: LiveService, cluster: Cluster) -> AsyncIterator[AlicesJobs]:
    """alice's three jobs, in their states (submitted while Slurm shows them to all)."""
    workdir = f"{cluster.users['alice']['scratch']}/{TAG}"
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "--", workdir]), check=True)
    ids: list[int] = []
    try:
        for kind, body, directives in (
            ("running", "sleep 300", ()),
            ("pending", "true", ("--begin=now+1hour",)),
            ("finished", "true", ()),
        ):
            ids.append(await _submit(live, workdir, kind, body, *directives))
        running, pending, done = ids
        jobs = AlicesJobs(running, pending, done, workdir)
        await eventually(
            lambda: get_job(live, "alice", jobs.running),
            lambda job: job.status.normalized_state == scheduler_pb2.JOB_STATE_RUNNING,
            60,
            "alice's job running",
        )
        await finished(live, "alice", jobs.finished)
        yield jobs
    finally:
        for job_id in ids:
            await cancel_quietly(live, "alice", job_id)
        async with cluster.connect("alice") as conn:
            await conn.run(shlex.join(["rm", "-rf", "--", workdir]), check=True)


@pytest.fixture(scope="module")
def private(alices: AlicesJobs) -> Iterator[None]:
    """``PrivateData=jobs`` from the first test that asks until the module ends."""
    with private_jobs():
        yield


@pytest.fixture
async def rest(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=60) as client:
        yield client


async def as_bob(cluster: Cluster, command: str) -> tuple[int, str]:
    """(exit status, stdout and stderr) of ``command`` run by bob over SSH."""
    async with cluster.connect("bob") as conn:
        result = await conn.run(command, check=False)
    return int(result.exit_status or 0), f"{result.stdout}{result.stderr}"


async def slurm_private_data(cluster: Cluster) -> str:
    """What slurmctld runs with, as ``scontrol show config`` tells bob."""
    _, shown = await as_bob(cluster, "scontrol show config")
    (line,) = [line for line in shown.splitlines() if line.split("=")[0].strip() == "PrivateData"]
    return line.partition("=")[2].strip()


# -- the default: Slurm shows bob alice's jobs, and so does hpcgate --------------------


async def test_without_private_data_bob_sees_what_slurm_shows_him(
    live: LiveService, cluster: Cluster, alices: AlicesJobs, rest: httpx.AsyncClient
) -> None:
    assert await slurm_private_data(cluster) == "none"
    status, shown = await as_bob(cluster, f"scontrol show job {alices.running}")
    assert status == 0, shown
    assert f"WorkDir={alices.workdir}" in shown
    assert f"StdOut={alices.output(alices.running)}" in shown

    job = await get_job(live, "bob", alices.running)
    assert (job.name, job.user, job.working_directory) == (
        f"{TAG}-running",
        "alice",
        alices.workdir,
    )
    reply = await stub(live).GetJobMetadata(
        scheduler_pb2.GetJobMetadataRequest(system_name=live.system, job_id=alices.running),
        metadata=live.metadata("bob"),
    )
    assert [(m.job_id, m.standard_output) for m in reply.jobs] == [
        (alices.running, alices.output(alices.running))
    ]
    assert not any(m.HasField("script") for m in reply.jobs)  # Slurm keeps it from bob
    listed = await rest.get(
        f"/compute/{live.system}/jobs", params={"allusers": "true"}, headers=live.headers("bob")
    )
    assert listed.status_code == 200, listed.text
    assert {str(i) for i in alices.ids} <= {j["jobId"] for j in listed.json()["jobs"]}
    events = [
        event
        async for event in stub(live).WatchJobs(
            scheduler_pb2.WatchJobsRequest(
                system_name=live.system, job_ids=[alices.running], send_initial=True, max_events=1
            ),
            metadata=live.metadata("bob"),
        )
    ]
    assert [(e.job.job_id, e.job.working_directory) for e in events] == [
        (alices.running, alices.workdir)
    ]
    # Slurm lets bob see the job but not touch it.
    cancelled = await rest.delete(
        f"/compute/{live.system}/jobs/{alices.running}", headers=live.headers("bob")
    )
    assert cancelled.status_code == 403, cancelled.text
    assert cancelled.json()["data"]["reason"] == "JOB_NOT_OWNED"


# -- PrivateData=jobs: Slurm hides them from bob, and so does hpcgate ------------------


async def test_slurm_itself_hides_alices_jobs_from_bob(
    cluster: Cluster, alices: AlicesJobs, private: None
) -> None:
    """What bob gets over SSH: the ceiling for what hpcgate may show him."""
    assert await slurm_private_data(cluster) == "jobs"
    ids = ",".join(map(str, alices.ids))
    _, queued = await as_bob(cluster, "squeue --noheader --states=all --format=%i")
    assert not set(queued.split()) & {str(i) for i in alices.ids}, queued
    for job_id in alices.ids:
        status, shown = await as_bob(cluster, f"scontrol show job {job_id}")
        assert status != 0 and "Invalid job id" in shown, shown
    _, accounted = await as_bob(
        cluster, f"sacct --noheader --parsable2 --allocations --format=JobID --jobs={ids}"
    )
    assert accounted.strip() == ""
    _, everyone = await as_bob(
        cluster, "sacct --noheader --parsable2 --allusers --format=JobID,JobName,WorkDir"
    )
    assert TAG not in everyone
    # alice still sees them: the jobs are there, hidden from bob only.
    async with cluster.connect("alice") as conn:
        own = await conn.run(f"squeue --noheader --states=all --format=%i --jobs={ids}")
    assert set(str(own.stdout).split()) == {str(i) for i in alices.ids}


def _same_but_id(answer: Any, job_id: int) -> str:
    """``answer`` with the job id written as ``<id>``, to compare two jobs' answers."""
    return re.sub(rf"\b{job_id}\b", "<id>", str(answer))


async def _rest_answer(
    rest: httpx.AsyncClient, live: LiveService, route: str, job_id: int
) -> tuple[int, str]:
    """bob's (status, body) for one job route."""
    base = f"/compute/{live.system}/jobs"
    if route == "watch":
        params = {"jobIds": str(job_id), "maxDuration": f"{WATCH_BOUND_S}s"}
        response = await rest.get(f"{base}/watch", params=params, headers=live.headers("bob"))
    else:
        method, suffix = {
            "get": ("GET", ""),
            "metadata": ("GET", "/metadata"),
            "cancel": ("DELETE", ""),
            "attach": ("PUT", "/attach"),
        }[route]
        response = await rest.request(
            method,
            f"{base}/{job_id}{suffix}",
            json={"command": "true"} if route == "attach" else None,
            headers=live.headers("bob"),
        )
    return response.status_code, response.text


ROUTES = ("get", "metadata", "cancel", "attach", "watch")


@pytest.mark.parametrize("route", ROUTES)
async def test_rest_tells_bob_nothing_of_alices_jobs(
    live: LiveService, alices: AlicesJobs, private: None, rest: httpx.AsyncClient, route: str
) -> None:
    status, body = await _rest_answer(rest, live, route, NO_SUCH_JOB)
    assert status == 404, body
    if route != "watch":
        assert json.loads(body)["message"] == "Job not found.", body
    for job_id in alices.ids:
        answer = await _rest_answer(rest, live, route, job_id)
        assert _same_but_id(answer, job_id) == _same_but_id((status, body), NO_SUCH_JOB)
        assert TAG not in answer[1]


async def _grpc_answer(live: LiveService, route: str, job_id: int) -> tuple[Any, ...]:
    """bob's (code, message, reason, details) for one job RPC; fails if it succeeds."""
    system, auth = live.system, live.metadata("bob")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: stub(live).GetJob(
            scheduler_pb2.GetJobRequest(system_name=system, job_id=job_id), metadata=auth
        ),
        "metadata": lambda: stub(live).GetJobMetadata(
            scheduler_pb2.GetJobMetadataRequest(system_name=system, job_id=job_id), metadata=auth
        ),
        "cancel": lambda: stub(live).CancelJob(
            scheduler_pb2.CancelJobRequest(system_name=system, job_id=job_id), metadata=auth
        ),
        "attach": lambda: stub(live).AttachJob(
            scheduler_pb2.AttachJobRequest(system_name=system, job_id=job_id, command="true"),
            metadata=auth,
        ),
    }

    async def watch() -> list[scheduler_pb2.WatchJobsResponse]:
        request = scheduler_pb2.WatchJobsRequest(
            system_name=system,
            job_ids=[job_id],
            send_initial=True,
            max_duration=duration_pb2.Duration(seconds=WATCH_BOUND_S),
        )
        return [event async for event in stub(live).WatchJobs(request, metadata=auth)]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (watch() if route == "watch" else calls[route]())
    error = caught.value
    return (error.code(), error.details(), *details(error))


@pytest.mark.parametrize("route", ROUTES)
async def test_grpc_tells_bob_nothing_of_alices_jobs(
    live: LiveService, alices: AlicesJobs, private: None, route: str
) -> None:
    expected = await _grpc_answer(live, route, NO_SUCH_JOB)
    assert expected[0] == grpc.StatusCode.NOT_FOUND
    for job_id in alices.ids:
        answer = await _grpc_answer(live, route, job_id)
        assert _same_but_id(answer, job_id) == _same_but_id(expected, NO_SUCH_JOB)
        assert TAG not in str(answer)


async def test_allusers_lists_leave_out_alices_jobs(
    live: LiveService, alices: AlicesJobs, private: None, rest: httpx.AsyncClient
) -> None:
    listed = await rest.get(
        f"/compute/{live.system}/jobs", params={"allusers": "true"}, headers=live.headers("bob")
    )
    assert listed.status_code == 200, listed.text
    assert TAG not in listed.text
    assert not {str(i) for i in alices.ids} & {j["jobId"] for j in listed.json()["jobs"]}
    reply = await stub(live).ListJobs(
        scheduler_pb2.ListJobsRequest(system_name=live.system, allusers=True),
        metadata=live.metadata("bob"),
    )
    assert not set(alices.ids) & {job.job_id for job in reply.jobs}
    assert TAG not in str(reply)
    # alice's own list still has them.
    own = await stub(live).ListJobs(
        scheduler_pb2.ListJobsRequest(system_name=live.system), metadata=live.metadata("alice")
    )
    assert set(alices.ids) <= {job.job_id for job in own.jobs}


async def test_alices_open_watch_feeds_bob_nothing(
    live: LiveService, alices: AlicesJobs, private: None
) -> None:
    """Her poller knows her jobs; bob's watches (named or all his jobs) get none of it."""
    hub = live.running.runtime.system(live.system).watch
    hers = stub(live).WatchJobs(
        scheduler_pb2.WatchJobsRequest(
            system_name=live.system, job_ids=list(alices.ids), send_initial=True
        ),
        metadata=live.metadata("alice"),
    )
    try:
        initial = [await hers.read() for _ in alices.ids]
        assert {cast(Any, event).job.job_id for event in initial} == set(alices.ids)
        assert "alice" in hub.pollers
        # A poller of bob's own runs his commands: named, her job is not found ...
        named = await _grpc_answer(live, "watch", alices.running)
        assert named[0] == grpc.StatusCode.NOT_FOUND
        # ... and a watch of all his jobs shows none of hers.
        everything = stub(live).WatchJobs(
            scheduler_pb2.WatchJobsRequest(
                system_name=live.system,
                send_initial=True,
                max_duration=duration_pb2.Duration(seconds=3),
            ),
            metadata=live.metadata("bob"),
        )
        seen = [event async for event in everything]
        assert not set(alices.ids) & {event.job.job_id for event in seen}
        assert TAG not in str(seen)
    finally:
        hers.cancel()
    await asyncio.sleep(0)  # let the cancelled stream leave its poller
