"""Wire fidelity of the compute endpoints: what FirecREST v2's server sends, on real Slurm.

The key sets and JSON types are those of FirecREST's pydantic models
(``lib/scheduler_clients/models.py``: JobModel, JobStatus, JobTime, JobTask,
JobMetadataModel; ``compute/models.py``: PostJobSubmissionResponse), which
FastAPI writes with every field present and None as null.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from firecrest import FirecrestException
from firecrest.v2 import AsyncFirecrest
from integration.test_scheduler import finished, script, stub, workdir

from conftest import LiveService, StaticToken
from hpcgate.v1 import scheduler_pb2

pytestmark = pytest.mark.asyncio

UNKNOWN = 4000000000  # a valid uint32 that Slurm never handed out here
NOT_FOUND = "Job not found."

_INT_OR_NULL = (int, type(None))
_STR_OR_NULL = (str, type(None))
# FirecREST's keys and JSON types, per model. hpcgate may add keys of its own.
JOB = {
    "jobId": str,
    "name": str,
    "status": dict,
    "tasks": (list, type(None)),
    "time": dict,
    "account": _STR_OR_NULL,
    "allocationNodes": int,
    "cluster": str,
    "group": _STR_OR_NULL,
    "nodes": str,
    "partition": str,
    "killRequestUser": _STR_OR_NULL,
    "user": _STR_OR_NULL,
    "workingDirectory": str,
    "priority": _INT_OR_NULL,
}
STATUS = {
    "state": str,
    "stateReason": _STR_OR_NULL,
    "exitCode": _INT_OR_NULL,
    "interruptSignal": _INT_OR_NULL,
}
TIME = dict.fromkeys(("elapsed", "start", "end", "suspended", "limit"), _INT_OR_NULL)
TASK = {"id": str, "name": str, "status": dict, "time": dict}
METADATA = {
    "jobId": str,
    "script": _STR_OR_NULL,
    "standardInput": _STR_OR_NULL,
    "standardOutput": _STR_OR_NULL,
    "standardError": _STR_OR_NULL,
}


def conforms(obj: dict[str, Any], model: dict[str, Any], where: str) -> None:
    """Every key of ``model`` is in ``obj`` (none left out) with its JSON type."""
    missing = model.keys() - obj.keys()
    assert not missing, f"{where}: keys left out: {sorted(missing)}"
    for key, kind in model.items():
        value = obj[key]
        # bool is an int in Python, never in FirecREST's JSON.
        assert isinstance(value, kind) and not isinstance(value, bool), (where, key, value)


def job_conforms(job: dict[str, Any]) -> None:
    conforms(job, JOB, "job")
    conforms(job["status"], STATUS, "job.status")
    conforms(job["time"], TIME, "job.time")
    for task in job["tasks"] or ():
        conforms(task, TASK, "task")
        conforms(task["status"], STATUS, "task.status")
        conforms(task["time"], TIME, "task.time")


@pytest.fixture
async def rest(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live.rest_url, headers=live.headers("alice"), timeout=60
    ) as client:
        yield client


def jobs(live: LiveService, suffix: str = "") -> str:
    return f"/compute/{live.system}/jobs{suffix}"


async def test_job_objects_carry_every_firecrest_key_with_its_type(
    live: LiveService, rest: httpx.AsyncClient
) -> None:
    # Held, so it stays pending: the times Slurm does not know yet are null, not left out.
    body = {"job": {"workingDirectory": workdir("alice"), "script": script("true", "--hold")}}
    submitted = await rest.post(jobs(live), json=body)
    assert submitted.status_code == 201, submitted.text
    conforms(submitted.json(), {"jobId": str}, "submission")
    job_id = submitted.json()["jobId"]
    try:
        pending = await rest.get(jobs(live, f"/{job_id}"))
        assert pending.status_code == 200, pending.text
        (job,) = pending.json()["jobs"]
        assert job["jobId"] == job_id and job["status"]["state"] == "PENDING"
        job_conforms(job)
        assert job["time"]["end"] in (None, 0)

        listed = await rest.get(jobs(live), params={"timeWindow": "1h"})
        assert listed.status_code == 200, listed.text
        mine = [j for j in listed.json()["jobs"] if j["jobId"] == job_id]
        assert len(mine) == 1
        for entry in listed.json()["jobs"]:
            job_conforms(entry)

        metadata = await rest.get(jobs(live, f"/{job_id}/metadata"))
        assert metadata.status_code == 200, metadata.text
        (entry,) = metadata.json()["jobs"]
        conforms(entry, METADATA, "metadata")
        assert entry["jobId"] == job_id
    finally:
        cancelled = await rest.delete(jobs(live, f"/{job_id}"))
        assert cancelled.status_code == 204, cancelled.text

    # Ended, now from sacct too.
    await finished(live, "alice", int(job_id))
    ended = await rest.get(jobs(live, f"/{job_id}"))
    (job,) = ended.json()["jobs"]
    job_conforms(job)
    assert job["status"]["state"].startswith("CANCELLED")


async def test_finished_job_with_steps_conforms(live: LiveService, rest: httpx.AsyncClient) -> None:
    body = {"job": {"workingDirectory": workdir("alice"), "script": script("srun true")}}
    submitted = await rest.post(jobs(live), json=body)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["jobId"]
    await finished(live, "alice", int(job_id), steps=True)
    (job,) = (await rest.get(jobs(live, f"/{job_id}"))).json()["jobs"]
    job_conforms(job)
    assert job["tasks"], "sacct's steps are the job's tasks"
    assert all(isinstance(job["time"][k], int) for k in ("start", "end", "elapsed"))


@pytest.mark.parametrize(
    ("rpc", "request_message"),
    [
        ("GetJob", scheduler_pb2.GetJobRequest(job_id=UNKNOWN)),
        ("GetJobMetadata", scheduler_pb2.GetJobMetadataRequest(job_id=UNKNOWN)),
        ("CancelJob", scheduler_pb2.CancelJobRequest(job_id=UNKNOWN)),
        ("AttachJob", scheduler_pb2.AttachJobRequest(job_id=UNKNOWN, command="true")),
    ],
)
async def test_unknown_job_over_grpc_says_firecrests_words(
    live: LiveService, rpc: str, request_message: Any
) -> None:
    request_message.system_name = live.system
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub(live), rpc)(request_message, metadata=live.metadata("alice"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == NOT_FOUND


async def test_pyfirecrest_wait_for_an_unknown_job_gives_up_with_404(live: LiveService) -> None:
    """pyfirecrest retries while the message says "Job not found", then raises the 404."""
    client = AsyncFirecrest(live.rest_url, StaticToken(live.token("alice")))
    try:
        with pytest.raises(FirecrestException) as caught:
            await client.wait_for_job(live.system, str(UNKNOWN), not_found_timeout=0.5)
    finally:
        await client.close_session()
    response = caught.value.responses[-1]
    assert response.status_code == 404
    assert response.json()["message"] == NOT_FOUND
