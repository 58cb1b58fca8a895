"""The Scheduler service's unary RPCs against the real Slurm of the loopback cluster.

Jobs are short (``sleep`` of a second or two) and go to the ``debug``
partition; every wait for a state is a bounded loop. The helpers here are
shared with ``test_watch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cluster_fixture import Cluster
from conftest import PLUGINS, LiveService, StaticToken, live_per_plugin
from hpcgate.server.errors import ErrorKind
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc

JOB_NAME = "a|b c ü"
TERMINAL = {
    scheduler_pb2.JOB_STATE_COMPLETED,
    scheduler_pb2.JOB_STATE_FAILED,
    scheduler_pb2.JOB_STATE_CANCELLED,
    scheduler_pb2.JOB_STATE_TIMEOUT,
    scheduler_pb2.JOB_STATE_NODE_FAIL,
    scheduler_pb2.JOB_STATE_OUT_OF_MEMORY,
}


@pytest.fixture(scope="module", params=PLUGINS)
def live(request: pytest.FixtureRequest, cluster: Cluster) -> LiveService:
    """Every test here runs once per scheduler plug-in (CLI over SSH, slurmrestd)."""
    del cluster  # (both services run on it)
    return live_per_plugin(request)


def stub(live: LiveService) -> scheduler_pb2_grpc.SchedulerAsyncStub:
    return scheduler_pb2_grpc.SchedulerStub(live.channel)


def workdir(user: str) -> str:
    return f"/scratch/{user}"


def script(body: str, *directives: str) -> str:
    """A batch script for the debug partition running ``body``."""
    lines = ["#!/bin/bash", "#SBATCH --partition=debug", *(f"#SBATCH {d}" for d in directives)]
    return "\n".join([*lines, body, ""])


async def submit(live: LiveService, user: str, body: str, *directives: str, **job: Any) -> int:
    """Submit ``body`` as ``user`` over gRPC; returns the job id."""
    description = scheduler_pb2.JobDescriptionModel(
        working_directory=workdir(user), script=script(body, *directives), **job
    )
    reply = await stub(live).SubmitJob(
        scheduler_pb2.SubmitJobRequest(system_name=live.system, job=description),
        metadata=live.metadata(user),
    )
    assert reply.job_id > 0
    return reply.job_id


async def get_job(live: LiveService, user: str, job_id: int) -> scheduler_pb2.JobModel:
    reply = await stub(live).GetJob(
        scheduler_pb2.GetJobRequest(system_name=live.system, job_id=job_id),
        metadata=live.metadata(user),
    )
    (job,) = [j for j in reply.jobs if j.job_id == job_id]
    return job


async def eventually(
    probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], within: float, what: str
) -> Any:
    """``await probe()`` until ``check`` holds of its result; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s; last: {value}")
        await asyncio.sleep(0.5)


async def running(live: LiveService, user: str, job_id: int, within: float = 30) -> Any:
    """The job once Slurm runs it."""
    return await eventually(
        lambda: get_job(live, user, job_id),
        lambda job: job.status.normalized_state == scheduler_pb2.JOB_STATE_RUNNING,
        within,
        f"job {job_id} running",
    )


async def finished(
    live: LiveService, user: str, job_id: int, *, steps: bool = False, within: float = 60
) -> Any:
    """The job once it is terminal (and, with ``steps``, its steps are in sacct, ended too).

    sacct lists a step as soon as it starts: the job's end can be recorded
    before its batch step's, which then still shows exit code 0.
    """

    def ended(job: Any) -> bool:
        if job.status.normalized_state not in TERMINAL:
            return False
        tasks = [t.status.normalized_state for t in job.tasks]
        return not steps or (len(tasks) > 0 and all(state in TERMINAL for state in tasks))

    return await eventually(
        lambda: get_job(live, user, job_id),
        ended,
        within,
        f"job {job_id} ending",
    )


async def cancel_quietly(live: LiveService, user: str, job_id: int) -> None:
    """Cancel a job a test left behind (it may have ended already)."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub(live).CancelJob(
            scheduler_pb2.CancelJobRequest(system_name=live.system, job_id=job_id),
            metadata=live.metadata(user),
        )


def details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """(ErrorInfo reason, {field: description}) of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", {}
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = {v.field: v.description for v in bad.field_violations}
    return reason, fields


async def ssh_output(cluster: Cluster, user: str, command: str) -> str:
    """Run ``command`` on the cluster as ``user`` (to read what a job wrote)."""
    async with cluster.connect(user) as conn:
        result = await conn.run(command, check=True)
    return str(result.stdout)


@pytest.fixture
async def rest(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.rest_url, timeout=60) as client:
        yield client


# -- submit, get, list ---------------------------------------------------------------


async def test_name_with_bar_space_unicode_round_trips(
    live: LiveService, rest: httpx.AsyncClient
) -> None:
    job_id = await submit(live, "alice", "sleep 1", name=JOB_NAME)
    job = await get_job(live, "alice", job_id)
    assert job.name == JOB_NAME
    assert job.user == "alice"
    assert job.partition == "debug"
    assert job.account == "proj1"
    assert job.working_directory == workdir("alice")
    assert job.status.normalized_state in {
        scheduler_pb2.JOB_STATE_PENDING,
        scheduler_pb2.JOB_STATE_RUNNING,
        scheduler_pb2.JOB_STATE_COMPLETING,
        scheduler_pb2.JOB_STATE_COMPLETED,
    }
    # List, filtered by that name, over gRPC and over REST.
    reply = await stub(live).ListJobs(
        scheduler_pb2.ListJobsRequest(system_name=live.system, name=JOB_NAME),
        metadata=live.metadata("alice"),
    )
    assert job_id in [j.job_id for j in reply.jobs]
    assert {j.name for j in reply.jobs} == {JOB_NAME}
    response = await rest.get(
        f"/compute/{live.system}/jobs",
        params={"name": JOB_NAME, "timeWindow": "1h"},
        headers=live.headers("alice"),
    )
    assert response.status_code == 200, response.text
    listed = {j["jobId"]: j for j in response.json()["jobs"]}
    assert listed[str(job_id)]["name"] == JOB_NAME
    # Once finished the record comes from sacct (merged): the name still survives.
    done = await finished(live, "alice", job_id)
    assert done.name == JOB_NAME
    assert done.status.state == "COMPLETED"
    assert done.status.exit_code == 0
    response = await rest.get(
        f"/compute/{live.system}/jobs/{job_id}", headers=live.headers("alice")
    )
    assert response.json()["jobs"][0]["name"] == JOB_NAME


async def test_list_own_jobs_or_all_users(live: LiveService) -> None:
    alice_job = await submit(live, "alice", "sleep 1")
    bob_job = await submit(live, "bob", "sleep 1")

    async def listed(user: str, allusers: bool) -> dict[int, str]:
        reply = await stub(live).ListJobs(
            scheduler_pb2.ListJobsRequest(system_name=live.system, allusers=allusers),
            metadata=live.metadata(user),
        )
        return {j.job_id: j.user for j in reply.jobs}

    own = await listed("bob", allusers=False)
    assert bob_job in own and alice_job not in own
    assert set(own.values()) == {"bob"}
    everyone = await listed("bob", allusers=True)
    assert {alice_job, bob_job} <= everyone.keys()
    # Filter by account: bob's jobs are all proj1, so proj2 lists none of his.
    reply = await stub(live).ListJobs(
        scheduler_pb2.ListJobsRequest(system_name=live.system, account="proj2"),
        metadata=live.metadata("bob"),
    )
    assert list(reply.jobs) == []


async def test_exit_code_3_is_failed_with_exit_code(live: LiveService) -> None:
    job_id = await submit(live, "alice", "exit 3")
    job = await finished(live, "alice", job_id, steps=True)
    assert job.status.state == "FAILED"
    assert job.status.normalized_state == scheduler_pb2.JOB_STATE_FAILED
    assert job.status.exit_code == 3
    assert job.status.interrupt_signal == 0
    (batch,) = [t for t in job.tasks if t.id == f"{job_id}.batch"]
    assert batch.status.exit_code == 3
    assert batch.status.normalized_state == scheduler_pb2.JOB_STATE_FAILED


async def test_environment_values_arrive_intact(live: LiveService, cluster: Cluster) -> None:
    """Commas, quotes, spaces and newlines in values: what --export cannot carry."""
    out = f"{workdir('alice')}/env-{uuid.uuid4().hex}.txt"
    values = {"PLAIN": "x", "COMMA": "a,b,c", "QUOTES": 'it\'s "q"', "LINES": "one\ntwo"}
    env = struct_pb2.Value()
    env.struct_value.update(values)
    body = "for v in PLAIN COMMA QUOTES LINES; do printf '%s=%s\\0' $v \"${!v}\"; done > " + out
    job_id = await submit(live, "alice", body, env=env)
    await finished(live, "alice", job_id)
    text = await ssh_output(cluster, "alice", f"cat {out}; rm -f {out}")
    found = dict(item.split("=", 1) for item in text.split("\0") if item)
    assert found == values


async def test_list_form_environment_and_default(live: LiveService, cluster: Cluster) -> None:
    out = f"{workdir('alice')}/env-{uuid.uuid4().hex}.txt"
    env = struct_pb2.Value()
    env.list_value.extend(["FOO=bar=baz"])
    job_id = await submit(live, "alice", f'echo "$FOO" > {out}', env=env)
    await finished(live, "alice", job_id)
    assert (await ssh_output(cluster, "alice", f"cat {out}; rm -f {out}")).strip() == "bar=baz"
    # No env: FirecREST's default variable is set.
    job_id = await submit(live, "alice", f'echo "$F7T_version" > {out}')
    await finished(live, "alice", job_id)
    assert (await ssh_output(cluster, "alice", f"cat {out}; rm -f {out}")).strip() == "v2.0.0"


async def test_script_path_and_streams(
    live: LiveService, cluster: Cluster, rest: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex
    path = f"{workdir('alice')}/job-{tag}.sh"
    stdin = f"{workdir('alice')}/in-{tag}.txt"
    stdout = f"{workdir('alice')}/out {tag}.txt"  # a space in the path
    await ssh_output(
        cluster,
        "alice",
        f"printf '#!/bin/bash\\ncat; echo done\\n' > {path}; echo hello > {stdin}",
    )
    response = await rest.post(
        f"/compute/{live.system}/jobs",
        json={
            "job": {
                "scriptPath": path,
                "workingDirectory": workdir("alice"),
                "standardInput": stdin,
                "standardOutput": stdout,
                "name": "from-path",
                "partition": "debug",
            }
        },
        headers=live.headers("alice"),
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["jobId"]
    assert isinstance(job_id, str)  # FirecREST's type
    metadata = await rest.get(
        f"/compute/{live.system}/jobs/{job_id}/metadata", headers=live.headers("alice")
    )
    assert metadata.status_code == 200, metadata.text
    (entry,) = metadata.json()["jobs"]
    assert entry["jobId"] == job_id
    assert entry["script"] == "#!/bin/bash\ncat; echo done\n"
    assert entry["standardInput"] == stdin
    assert entry["standardOutput"] == stdout
    await finished(live, "alice", int(job_id))
    output = await ssh_output(cluster, "alice", f"cat '{stdout}'; rm -f '{stdout}' {stdin} {path}")
    assert output == "hello\ndone\n"


async def test_metadata_of_inline_script(live: LiveService) -> None:
    body = "sleep 1  # marker ü"
    job_id = await submit(live, "alice", body, "--output=/dev/null")
    reply = await stub(live).GetJobMetadata(
        scheduler_pb2.GetJobMetadataRequest(system_name=live.system, job_id=job_id),
        metadata=live.metadata("alice"),
    )
    (entry,) = reply.jobs
    assert entry.script == script(body, "--output=/dev/null")
    assert entry.standard_output == "/dev/null"
    assert entry.standard_error == "/dev/null"  # Slurm: stderr goes with stdout


# -- cancel, attach ----------------------------------------------------------------


async def test_cancel_gives_cancelled(live: LiveService, rest: httpx.AsyncClient) -> None:
    job_id = await submit(live, "alice", "sleep 120")
    response = await rest.delete(
        f"/compute/{live.system}/jobs/{job_id}", headers=live.headers("alice")
    )
    assert response.status_code == 204, response.text
    job = await finished(live, "alice", job_id)
    assert job.status.normalized_state == scheduler_pb2.JOB_STATE_CANCELLED
    assert job.status.state.startswith("CANCELLED")
    # Who cancelled comes from sacct, which may lag slurmctld a little.
    await eventually(
        lambda: get_job(live, "alice", job_id),
        lambda j: j.kill_request_user == "alice",
        30,
        "sacct recording the cancellation",
    )
    # Cancelling again changes nothing and is no error (as FirecREST).
    again = await rest.delete(
        f"/compute/{live.system}/jobs/{job_id}", headers=live.headers("alice")
    )
    assert again.status_code == 204


async def test_cancel_of_someone_elses_job_is_forbidden(live: LiveService) -> None:
    job_id = await submit(live, "alice", "sleep 60")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(live).CancelJob(
                scheduler_pb2.CancelJobRequest(system_name=live.system, job_id=job_id),
                metadata=live.metadata("bob"),
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await cancel_quietly(live, "alice", job_id)


async def test_attach_runs_inside_the_allocation(
    live: LiveService, cluster: Cluster, rest: httpx.AsyncClient
) -> None:
    job_id = await submit(live, "alice", "sleep 60")
    try:
        await running(live, "alice", job_id)
        out = f"{workdir('alice')}/attach-{uuid.uuid4().hex}.txt"
        response = await rest.put(
            f"/compute/{live.system}/jobs/{job_id}/attach",
            json={"command": f'echo "in $SLURM_JOB_ID" > {out}'},
            headers=live.headers("alice"),
        )
        assert response.status_code == 204, response.text
        assert (await ssh_output(cluster, "alice", f"cat {out}; rm -f {out}")) == f"in {job_id}\n"
    finally:
        await cancel_quietly(live, "alice", job_id)
    await finished(live, "alice", job_id)
    response = await rest.put(
        f"/compute/{live.system}/jobs/{job_id}/attach",
        json={"command": "true"},
        headers=live.headers("alice"),
    )
    assert response.status_code == 400, response.text  # FAILED_PRECONDITION: not running


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/metadata"), ("DELETE", ""), ("PUT", "/attach")],
)
async def test_unknown_job_is_404(
    live: LiveService, rest: httpx.AsyncClient, method: str, suffix: str
) -> None:
    response = await rest.request(
        method,
        f"/compute/{live.system}/jobs/4000000000{suffix}",
        json={"command": "true"} if method == "PUT" else None,
        headers=live.headers("alice"),
    )
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["message"] == "Job not found."  # FirecREST's words, which clients match on
    assert body["data"]["reason"] == "JOB_NOT_FOUND"


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"script": "#!/bin/bash\n"}, "job.workingDirectory"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "relative"}, "job.workingDirectory"),
        ({"workingDirectory": "/scratch/alice"}, "job.script"),
        ({"scriptPath": "x.sh", "workingDirectory": "/scratch/alice"}, "job.scriptPath"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "env": 3}, "job.env"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "env": {"1X": "y"}}, "job.env"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "env": ["NOEQUALS"]}, "job.env"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "env": {"A": 1}}, "job.env"),
        ({"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "name": ""}, "job.name"),
        # Refused by sbatch itself: the field comes from Slurm's message.
        ({"script": "echo no shebang\n", "workingDirectory": "/tmp"}, "job.script"),
        (
            {"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "partition": "nope"},
            "job.partition",
        ),
        (
            {"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "reservation": "nope"},
            "job.reservation",
        ),
        (
            {"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "constraints": "gpu"},
            "job.constraints",
        ),
    ],
)
async def test_bad_submission_is_400_naming_the_field(
    live: LiveService, rest: httpx.AsyncClient, job: dict[str, Any], field: str
) -> None:
    response = await rest.post(
        f"/compute/{live.system}/jobs", json={"job": job}, headers=live.headers("alice")
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert [v["field"] for v in body["data"]["fieldViolations"]] == [field], body


async def test_a_comma_in_a_variable_sbatch_reads(
    live: LiveService, rest: httpx.AsyncClient
) -> None:
    """PATH reaches a CLI job through sbatch's --export only, which cannot carry a comma.

    The CLI plug-in refuses it naming the field; slurmrestd takes the
    environment as data, so the slurm-rest plug-in submits the job.
    """
    job = {"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "env": {"PATH": "/a,/b"}}
    response = await rest.post(
        f"/compute/{live.system}/jobs", json={"job": job}, headers=live.headers("alice")
    )
    if live.running.runtime.system(live.system).config.scheduler.type == "slurm":
        assert response.status_code == 400, response.text
        assert response.json()["data"]["fieldViolations"][0]["field"] == "job.env"
    else:
        assert response.status_code == 201, response.text
        await cancel_quietly(live, "alice", int(response.json()["jobId"]))


async def test_sbatch_refusal_carries_slurms_message(live: LiveService) -> None:
    request = scheduler_pb2.SubmitJobRequest(
        system_name=live.system,
        job=scheduler_pb2.JobDescriptionModel(working_directory="/tmp", script="echo hi\n"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(live).SubmitJob(request, metadata=live.metadata("alice"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "This does not look like a batch script" in (caught.value.details() or "")
    assert details(caught.value)[0] == "JOB_REJECTED"


async def test_association_limit_is_permission_denied(
    live: LiveService, rest: httpx.AsyncClient
) -> None:
    # proj2 is alice's account only: bob's association does not exist.
    response = await rest.post(
        f"/compute/{live.system}/jobs",
        json={"job": {"script": "#!/bin/bash\n", "workingDirectory": "/tmp", "account": "proj2"}},
        headers=live.headers("bob"),
    )
    assert response.status_code == 403, response.text
    assert "Invalid account" in response.json()["message"]


@pytest.mark.parametrize("window", ["2h", "1d", "forever"])
async def test_unknown_time_window_is_400(
    live: LiveService, rest: httpx.AsyncClient, window: str
) -> None:
    response = await rest.get(
        f"/compute/{live.system}/jobs", params={"timeWindow": window}, headers=live.headers("alice")
    )
    assert response.status_code == 400
    assert response.json()["data"]["fieldViolations"][0]["field"] == "timeWindow"


async def test_scheduler_down_is_503_through_the_health_gate(
    live: LiveService, rest: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the health checker reports when slurmctld stops (without stopping it)."""
    from hpcgate.server.errors import ServiceError

    health = live.running.runtime.system(live.system).health

    def down(*service_types: str) -> None:
        if "scheduler" in service_types:
            raise ServiceError(ErrorKind.UNAVAILABLE, "scheduler down", "SERVICE_UNHEALTHY")

    monkeypatch.setattr(health, "require", down)
    response = await rest.get(f"/compute/{live.system}/jobs", headers=live.headers("alice"))
    assert response.status_code == 503


# -- the official client -------------------------------------------------------------


async def test_pyfirecrest_runs_unchanged(live: LiveService) -> None:
    from firecrest.v2 import AsyncFirecrest

    client = AsyncFirecrest(live.rest_url, authorization=StaticToken(live.token("alice")))
    try:
        body = "#!/bin/bash\n#SBATCH --partition=debug\nsleep 30\n"
        submitted = await client.submit(
            live.system,
            working_dir=workdir("alice"),
            script_str=body,
            env_vars={"GREETING": "hello, world"},
            account="proj2",
        )
        job_id = submitted["jobId"]
        info = await client.job_info(live.system, job_id)
        assert info[0]["jobId"] == job_id
        assert info[0]["account"] == "proj2"
        assert info[0]["status"]["state"] in {"PENDING", "RUNNING"}
        listed = await client.job_info(live.system, time_window="1h")
        assert job_id in [j["jobId"] for j in listed]
        metadata = await client.job_metadata(live.system, job_id)
        assert metadata[0]["script"] == body
        await client.cancel_job(live.system, job_id)
        job = await finished(live, "alice", int(job_id))
        assert job.status.normalized_state == scheduler_pb2.JOB_STATE_CANCELLED
    finally:
        await client.close_session()


async def test_a_just_started_job_is_listed_with_the_steps_get_shows(live: LiveService) -> None:
    """sacct's time window lags a started job for seconds; the list still has its steps."""
    name = f"listed-{uuid.uuid4().hex[:8]}"
    job_id = await submit(live, "alice", "sleep 30", name=name)
    try:
        job = await eventually(
            lambda: get_job(live, "alice", job_id),
            lambda job: job.status.state == "RUNNING" and len(job.tasks) > 0,
            60,
            "the job running with its batch step accounted",
        )
        reply = await stub(live).ListJobs(
            scheduler_pb2.ListJobsRequest(system_name=live.system, name=name),
            metadata=live.metadata("alice"),
        )
        (listed,) = [j for j in reply.jobs if j.job_id == job_id]
        assert [t.name for t in listed.tasks] == [t.name for t in job.tasks]
    finally:
        await stub(live).CancelJob(
            scheduler_pb2.CancelJobRequest(system_name=live.system, job_id=job_id),
            metadata=live.metadata("alice"),
        )
