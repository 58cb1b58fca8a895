"""Staged transfers that lose S3: they fail with a reason and cancel their job.

A store that loses its state (moto restarted, a bucket deleted by hand) is
shown by emptying and deleting the bucket of a prefix only this module uses,
so no other test's transfers are touched. S3 down is moto SIGSTOPped for a
few seconds (always resumed): a transfer's status then comes from Slurm.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from integration.test_transfer import s3_client

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from faults import cluster_pid, eventually, paused
from hpcgate.server.transfer.staging import Staging
from hpcgate.v1 import transfer_pb2, transfer_pb2_grpc
from localsite import SYSTEM, local_config

PREFIX = "faults"
DIRECTIVES = ["#SBATCH --partition=debug", "#SBATCH --account={account}"]


@pytest.fixture(scope="module")
async def staged(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """Uploads wait an hour for their client; probes every second (S3's included)."""
    issuer = DevIssuer.generate()
    jwks: Path = tmp_path_factory.mktemp("staged") / "jwks.json"
    issuer.write_jwks(jwks)
    base = local_config(cluster.raw, jwks)["systems"][0]["s3"]
    settings = live_settings(
        cluster,
        jwks,
        s3={**base, "bucket_prefix": PREFIX, "ingress_timeout": 3600},
        data_operation={"datatransfer_jobs_directives": DIRECTIVES},
        probing={"interval": 1, "timeout": 2},
    )
    async for service in start_service(settings):
        await service.running.runtime.system(SYSTEM).health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


def _lose_bucket(cluster: Cluster, bucket: str) -> None:
    """What a store that lost its state shows: no uploads, no objects, no bucket."""
    s3 = s3_client(cluster)
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


async def _upload(service: LiveService) -> int:
    """An upload of alice's that no client will ever send; its job id."""
    body = {
        "path": f"/home/alice/never-{uuid.uuid4().hex[:8]}.bin",
        "account": "proj1",
        "transfer_directives": {"file_size": 10, "transfer_method": "s3"},
    }
    async with httpx.AsyncClient(base_url=service.rest_url, timeout=60) as client:
        response = await client.post(
            f"/filesystem/{SYSTEM}/transfer/upload", json=body, headers=service.headers("alice")
        )
    assert response.status_code == 201, response.text
    return int(response.json()["transferJob"]["jobId"])


async def _status(service: LiveService, job_id: int) -> transfer_pb2.TransferStatus:
    stub = transfer_pb2_grpc.TransferStub(service.channel)
    reply = await stub.GetTransfer(
        transfer_pb2.GetTransferRequest(system_name=SYSTEM, job_id=job_id),
        metadata=service.metadata("alice"),
        timeout=60,
    )
    return reply.transfer


async def test_a_transfer_whose_bucket_vanished_fails_and_cancels_its_job(
    staged: LiveService, cluster: Cluster
) -> None:
    job_id = await _upload(staged)
    before = await _status(staged, job_id)
    assert before.phase in {
        transfer_pb2.TRANSFER_PHASE_QUEUED,
        transfer_pb2.TRANSFER_PHASE_WAITING_FOR_CLIENT,
    }, before
    _lose_bucket(cluster, before.object.bucket)

    after = await _status(staged, job_id)
    assert after.phase == transfer_pb2.TRANSFER_PHASE_FAILED, after
    assert "gone from S3" in after.message, after.message
    # The job does not wait out its hour: cancelled here (or given up by itself).
    deadline = time.monotonic() + 30
    while (await _status(staged, job_id)).scheduler_state not in {"CANCELLED", "FAILED"}:
        assert time.monotonic() < deadline, "the transfer's job still waits for its client"
        await asyncio.sleep(0.2)


async def test_a_transfers_status_comes_from_slurm_while_s3_is_down(
    staged: LiveService,
) -> None:
    job_id = await _upload(staged)
    checker = staged.running.runtime.system(SYSTEM).health
    try:
        with paused(cluster_pid("s3")):
            await eventually(lambda: not checker.by_type().get("s3", True), 10, "s3 unhealthy")
            state = await _status(staged, job_id)
        assert state.phase in {
            transfer_pb2.TRANSFER_PHASE_QUEUED,
            transfer_pb2.TRANSFER_PHASE_RUNNING,
        }, state
        assert state.scheduler_state in {"PENDING", "RUNNING"}, state
        assert "s3 is unhealthy" in state.message, state.message
        # Back up, the object is seen again: still waiting for its client.
        await eventually(lambda: checker.by_type().get("s3", False), 10, "s3 healthy again")
        again = await _status(staged, job_id)
        assert again.object.state == transfer_pb2.TRANSFER_OBJECT_STATE_UPLOADING, again
    finally:
        async with httpx.AsyncClient(base_url=staged.rest_url, timeout=60) as client:
            await client.delete(f"/compute/{SYSTEM}/jobs/{job_id}", headers=staged.headers("alice"))


async def test_a_hung_store_holds_only_threads_of_its_own(staged: LiveService) -> None:
    """Calls stuck in a hung S3 leave asyncio's default executor free.

    That executor also resolves host names for new SSH connections and reads
    key files: were S3's blocking calls run there, 20 of them would hold all
    of its threads (min(32, cores + 4)) for botocore's read timeout.
    """
    config = staged.running.runtime.system(SYSTEM).config.s3
    assert config is not None
    staging = Staging("hung", config)  # no health gate: every call reaches the store
    loop = asyncio.get_running_loop()
    try:
        with paused(cluster_pid("s3")):
            stuck = [asyncio.create_task(staging.find("alice", n)) for n in range(20)]
            await asyncio.sleep(1.0)
            assert not any(task.done() for task in stuck), "S3 did not hang"
            assert await asyncio.wait_for(asyncio.to_thread(int, "7"), 3) == 7
            assert await asyncio.wait_for(loop.getaddrinfo("localhost", 22), 3)
            for task in stuck:
                task.cancel()
    finally:
        await staging.close()
