"""The Transfer service on the loopback cluster: real Slurm jobs, a real S3 server.

Uploads go the way FirecREST clients send them: a REST request with
pyfirecrest's snake_case keys, the parts PUT straight to S3 on the presigned
URLs, the completion POSTed there too; a Slurm job then ingests the object.
Downloads come back through a job and a presigned GET. The service here runs
with 5 MiB parts, transfer jobs on the debug partition charged to
``{account}``, and (for the abandoned upload) a short ingress timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shlex
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import pytest
from botocore.config import Config

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.server.transfer.s3 import bucket_name
from hpcgate.v1 import scheduler_pb2, transfer_pb2, transfer_pb2_grpc
from localsite import SYSTEM, local_config

MIB = 1024 * 1024
PART = 5 * MIB
ACCOUNT = "proj1"
DIRECTIVES = ["#SBATCH --partition=debug", "#SBATCH --account={account}"]
SUCCEEDED = transfer_pb2.TRANSFER_PHASE_SUCCEEDED
FAILED = transfer_pb2.TRANSFER_PHASE_FAILED


async def _serve(cluster: Cluster, directory: Path, **s3: Any) -> AsyncIterator[LiveService]:
    """A service on the loopback cluster with these S3 settings and the transfer directives."""
    issuer = DevIssuer.generate()
    jwks = directory / f"jwks-{uuid.uuid4().hex[:8]}.json"
    issuer.write_jwks(jwks)
    base = local_config(cluster.raw, jwks)["systems"][0]["s3"]
    settings = live_settings(
        cluster,
        jwks,
        s3={**base, **s3},
        data_operation={"datatransfer_jobs_directives": DIRECTIVES},
    )
    async for service in start_service(settings):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


@pytest.fixture(scope="module")
async def xfer(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """The service with 5 MiB parts (64 MiB is 13 parts); abandoned uploads end in 2 minutes."""
    directory = tmp_path_factory.mktemp("xfer")
    async for service in _serve(cluster, directory, max_part_size=PART, ingress_timeout=120):
        yield service


@pytest.fixture(scope="module")
async def impatient(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """The service whose ingress jobs wait only 2 s for the client to complete an upload."""
    directory = tmp_path_factory.mktemp("impatient")
    async for service in _serve(cluster, directory, max_part_size=PART, ingress_timeout=2):
        yield service


@pytest.fixture(scope="module")
async def workdir(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh directory of alice's; removed afterwards with the transfer jobs' logs."""
    path = f"/scratch/alice/transfer-{uuid.uuid4().hex[:10]}"
    started = int(time.time()) - 1
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "-m", "0750", "--", path]), check=True)
        try:
            yield path
        finally:
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)
            # The logs of the jobs started meanwhile (transfer jobs log into ~alice).
            logs = ["find", ".", "-maxdepth", "1", "-name", ".hpcgate-transfer-*"]
            await conn.run(shlex.join([*logs, "-newermt", f"@{started}", "-delete"]))


def s3_client(cluster: Cluster) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint,
        region_name=cluster.s3.region,
        aws_access_key_id=cluster.s3.access_key,
        aws_secret_access_key=cluster.s3.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


async def request(
    service: LiveService, user: str, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    headers = {**service.headers(user), **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(base_url=service.rest_url, timeout=60) as client:
        return await client.request(
            method, f"/filesystem/{SYSTEM}{path}", headers=headers, **kwargs
        )


async def start_upload(
    service: LiveService, path: str, size: int, user: str = "alice", account: str = ACCOUNT
) -> dict[str, Any]:
    """POST transfer/upload as pyfirecrest sends it (snake_case keys); the 201 body."""
    body = {
        "path": path,
        "account": account,
        "transfer_directives": {"file_size": size, "transfer_method": "s3"},
    }
    response = await request(service, user, "POST", "/transfer/upload", json=body)
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def put_parts(
    client: httpx.AsyncClient, directives: dict[str, Any], data: bytes, parts: int | None = None
) -> list[str]:
    """PUT the parts of ``data`` on their presigned URLs, concurrently; their ETags."""
    size = directives["maxPartSize"]
    urls = directives["partsUploadUrls"][:parts]

    async def put(index: int, url: str) -> str:
        response = await client.put(url, content=data[index * size : (index + 1) * size])
        assert response.status_code == 200, response.text
        return response.headers["ETag"]

    return list(await asyncio.gather(*(put(i, url) for i, url in enumerate(urls))))


async def complete(client: httpx.AsyncClient, directives: dict[str, Any], etags: list[str]) -> None:
    """POST S3's CompleteMultipartUpload document to the presigned complete URL."""
    parts = "".join(
        f"<Part><ETag>{etag}</ETag><PartNumber>{n}</PartNumber></Part>"
        for n, etag in enumerate(etags, 1)
    )
    document = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"
    response = await client.post(directives["completeUploadUrl"], content=document)
    assert response.status_code == 200, response.text


async def watch(
    service: LiveService, job_id: int | str, user: str = "alice"
) -> list[transfer_pb2.TransferStatus]:
    """Every state WatchTransfer sends for the transfer, until it ends.

    ``job_id`` may be REST's string (FirecREST's type) or gRPC's number.
    """
    stub = transfer_pb2_grpc.TransferStub(service.channel)
    call = stub.WatchTransfer(
        transfer_pb2.WatchTransferRequest(system_name=SYSTEM, job_id=int(job_id)),
        metadata=service.metadata(user),
        timeout=120,
    )
    return [reply.transfer async for reply in call]


async def get(
    service: LiveService, job_id: int | str, user: str = "alice"
) -> transfer_pb2.TransferStatus:
    stub = transfer_pb2_grpc.TransferStub(service.channel)
    reply = await stub.GetTransfer(
        transfer_pb2.GetTransferRequest(system_name=SYSTEM, job_id=int(job_id)),
        metadata=service.metadata(user),
    )
    return reply.transfer


async def view(service: LiveService, path: str, user: str = "alice") -> str:
    """A file's text through ops/view, as pyfirecrest reads a transfer job's log."""
    response = await request(service, user, "GET", "/ops/view", params={"path": path})
    assert response.status_code == 200, response.text
    text: str = response.json()["output"]
    return text


async def sha256(service: LiveService, path: str) -> str:
    response = await request(service, "alice", "GET", "/ops/checksum", params={"path": path})
    assert response.status_code == 200, response.text
    checksum: str = response.json()["output"]["checksum"]
    return checksum


async def exists(cluster: Cluster, path: str, user: str = "alice") -> bool:
    async with cluster.connect(user) as conn:
        result = await conn.run(shlex.join(["test", "-e", path]))
        return bool(result.exit_status == 0)


async def listing(cluster: Cluster, directory: str) -> list[str]:
    async with cluster.connect("alice") as conn:
        result = await conn.run(shlex.join(["ls", "-A", "--", directory]), check=True)
        return str(result.stdout).split()


async def round_trip(service: LiveService, directory: str, size: int) -> dict[str, float]:
    """Upload ``size`` random bytes, check them on the cluster, download them back."""
    data = os.urandom(size)
    target = f"{directory}/file-{size}.bin"
    timings: dict[str, float] = {}
    start = time.monotonic()
    reply = await start_upload(service, target, size)
    directives = reply["transferDirectives"]
    assert directives["transferMethod"] == "s3"
    assert directives["maxPartSize"] == PART
    assert len(directives["partsUploadUrls"]) == max(1, math.ceil(size / PART)), size
    job = reply["transferJob"]
    assert job["system"] == SYSTEM and job["workingDirectory"] == "/home/alice"
    async with httpx.AsyncClient(timeout=120) as client:
        await complete(client, directives, await put_parts(client, directives, data))
        timings["upload to S3"] = time.monotonic() - start
        states = await watch(service, job["jobId"])
        timings["upload end to end"] = time.monotonic() - start
        assert states[-1].phase == SUCCEEDED, (size, states[-1])
        assert states[-1].object.state == transfer_pb2.TRANSFER_OBJECT_STATE_COMPLETE
        log = await view(service, job["logs"]["outputLog"])
        assert "File was successfully" in log, log
        assert "verified end to end" in log, log
        assert await sha256(service, target) == hashlib.sha256(data).hexdigest(), size

        start = time.monotonic()
        body = {"source_path": target, "account": ACCOUNT, "transfer_directives": {}}
        body["transfer_directives"] = {"transferMethod": "s3"}
        response = await request(service, "alice", "POST", "/transfer/download", json=body)
        assert response.status_code == 201, response.text
        download = response.json()
        states = await watch(service, download["transferJob"]["jobId"])
        assert states[-1].phase == SUCCEEDED, (size, states[-1])
        log = await view(service, download["transferJob"]["logs"]["outputLog"])
        assert "Multipart file upload successfully completed" in log, log
        fetched = await client.get(download["transferDirectives"]["downloadUrl"])
        timings["download end to end"] = time.monotonic() - start
        assert fetched.status_code == 200
        assert fetched.content == data, size
        # GetTransfer hands out a fresh URL for the staged file, as good as the first.
        again = await get(service, download["transferJob"]["jobId"])
        assert (await client.get(again.transfer_directives.download_url)).content == data
    return timings


SIZES = [0, 1, MIB - 1, MIB, MIB + 1, 64 * MIB]


async def test_round_trips_byte_for_byte(xfer: LiveService, workdir: str) -> None:
    """0 B to 64 MiB (13 parts) up through presigned parts and back through a presigned GET."""
    results = await asyncio.gather(*(round_trip(xfer, workdir, size) for size in SIZES))
    for size, timings in zip(SIZES, results, strict=True):
        shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items())
        print(f"{size} bytes: {shown}")


async def test_watch_follows_an_upload_from_client_to_file(xfer: LiveService, workdir: str) -> None:
    data = os.urandom(2 * PART + 10)
    target = f"{workdir}/watched.bin"
    reply = await start_upload(xfer, target, len(data))
    job_id = reply["transferJob"]["jobId"]
    assert isinstance(job_id, str)  # FirecREST's type
    directives = reply["transferDirectives"]
    stub = transfer_pb2_grpc.TransferStub(xfer.channel)
    call = stub.WatchTransfer(
        transfer_pb2.WatchTransferRequest(system_name=SYSTEM, job_id=int(job_id)),
        metadata=xfer.metadata("alice"),
        timeout=120,
    )
    seen: list[transfer_pb2.TransferStatus] = []
    async with httpx.AsyncClient(timeout=60) as client:
        replies = aiter(call)
        first = (await anext(replies)).transfer
        seen.append(first)
        assert first.phase == transfer_pb2.TRANSFER_PHASE_WAITING_FOR_CLIENT, first
        assert first.object.parts == 3 and first.object.parts_uploaded == 0
        etags = await put_parts(client, directives, data)
        await complete(client, directives, etags)
        seen += [message.transfer async for message in replies]
    assert seen[-1].phase == SUCCEEDED
    assert seen[-1].job_state == scheduler_pb2.JOB_STATE_COMPLETED
    assert seen[-1].exit_code == 0
    assert seen[-1].object.etag.endswith("-3")
    # REST has it too, as FirecREST-style JSON.
    response = await request(xfer, "alice", "GET", f"/transfer/{job_id}")
    assert response.status_code == 200, response.text
    body = response.json()["transfer"]
    assert body["phase"] == "TRANSFER_PHASE_SUCCEEDED"
    assert body["operation"] == "upload"
    assert body["object"]["size"] == len(data)  # a number, not a string
    assert body["transferJob"]["logs"]["outputLog"] == reply["transferJob"]["logs"]["outputLog"]
    # And the watch, as NDJSON: a finished transfer's final state, then the end.
    response = await request(
        xfer,
        "alice",
        "GET",
        f"/transfer/{job_id}/watch",
        headers={"Accept": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["transfer"]["phase"] for line in lines] == ["TRANSFER_PHASE_SUCCEEDED"]


async def wait_job(service: LiveService, reply: dict[str, Any]) -> str:
    """Wait for a transfer job to end successfully; its output log."""
    states = await watch(service, reply["transferJob"]["jobId"])
    log = await view(service, reply["transferJob"]["logs"]["outputLog"])
    assert states[-1].phase == SUCCEEDED, (states[-1], log)
    return log


async def test_cp_mv_compress_extract_rm_as_jobs(
    xfer: LiveService, workdir: str, cluster: Cluster
) -> None:
    tree = f"{workdir}/tree"
    async with cluster.connect("alice") as conn:
        script = (
            'set -e; mkdir -p "$1/sub dir"; printf one >"$1/a.txt"; '
            'printf two >"$1/sub dir/b.dat"; ln -s a.txt "$1/link"'
        )
        await conn.run(shlex.join(["sh", "-c", script, "sh", tree]), check=True)

    async def post(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await request(
            xfer, "alice", "POST", f"/transfer/{operation}", json={**body, "account": ACCOUNT}
        )
        assert response.status_code == 201, response.text
        reply: dict[str, Any] = response.json()
        assert set(reply["transferJob"]) == {"jobId", "system", "workingDirectory", "logs"}
        return reply

    # Independent jobs run side by side; each wave needs the previous one's results.
    cp, compress, matching = await asyncio.gather(
        post("cp", {"sourcePath": tree, "targetPath": f"{workdir}/copy"}),
        post(
            "compress",
            {"source_path": tree, "target_path": f"{workdir}/tree.tar.xz", "compression": "xz"},
        ),
        post(
            "compress",
            {
                "sourcePath": tree,
                "targetPath": f"{workdir}/only-dat.tar",
                "compression": "none",
                "matchPattern": ".*\\.dat",
            },
        ),
    )
    logs = await asyncio.gather(*(wait_job(xfer, reply) for reply in (cp, compress, matching)))
    assert "Files were successfully copied." in logs[0]
    assert "Files were successfully compressed." in logs[1]
    assert "Files were successfully compressed." in logs[2]
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "--", f"{workdir}/out"]), check=True)
    mv, extract = await asyncio.gather(
        post("mv", {"sourcePath": f"{workdir}/copy", "targetPath": f"{workdir}/moved"}),
        post(
            "extract",
            {
                "sourcePath": f"{workdir}/tree.tar.xz",
                "targetPath": f"{workdir}/out",
                "compression": "xz",
            },
        ),
    )
    moved, extracted = await asyncio.gather(wait_job(xfer, mv), wait_job(xfer, extract))
    assert "Files were successfully moved." in moved
    assert "Files were successfully extracted." in extracted

    async with cluster.connect("alice") as conn:
        check = await conn.run(
            shlex.join(
                [
                    "sh",
                    "-c",
                    'cd "$1" && cat moved/a.txt "moved/sub dir/b.dat" out/tree/a.txt '
                    '"out/tree/sub dir/b.dat" && readlink moved/link out/tree/link '
                    "&& tar -tf only-dat.tar && test ! -e copy",
                    "sh",
                    workdir,
                ]
            ),
            check=True,
        )
    assert str(check.stdout).split("\n") == [
        "onetwoonetwoa.txt",
        "a.txt",
        "tree/sub dir/b.dat",
        "",
    ]

    response = await request(
        xfer,
        "alice",
        "DELETE",
        "/transfer/rm",
        params={"path": f"{workdir}/moved", "account": ACCOUNT},
    )
    assert response.status_code == 200, response.text  # FirecREST: 200, not 201
    assert "Files were successfully removed." in await wait_job(xfer, response.json())
    assert not await exists(cluster, f"{workdir}/moved")


async def test_a_failing_job_says_so_and_never_claims_success(
    xfer: LiveService, workdir: str
) -> None:
    response = await request(
        xfer,
        "alice",
        "POST",
        "/transfer/cp",
        json={"sourcePath": f"{workdir}/missing", "targetPath": f"{workdir}/x", "account": ACCOUNT},
    )
    assert response.status_code == 201, response.text
    reply = response.json()
    states = await watch(xfer, reply["transferJob"]["jobId"])
    assert states[-1].phase == FAILED
    assert states[-1].exit_code == 1
    log = await view(xfer, reply["transferJob"]["logs"]["outputLog"])
    assert "FAILED" in log and "successfully" not in log
    errors = await view(xfer, reply["transferJob"]["logs"]["errorLog"])
    assert "No such file or directory" in errors


async def test_an_upload_never_completed_leaves_nothing_and_is_aborted(
    impatient: LiveService, workdir: str, cluster: Cluster
) -> None:
    target = f"{workdir}/abandoned.bin"
    data = os.urandom(PART + 1)
    reply = await start_upload(impatient, target, len(data))
    directives = reply["transferDirectives"]
    async with httpx.AsyncClient(timeout=60) as client:
        await put_parts(client, directives, data, parts=1)  # one part of two, never completed
    before = set(await listing(cluster, workdir))
    states = await watch(impatient, reply["transferJob"]["jobId"])
    assert states[-1].phase == FAILED, states[-1]
    assert states[-1].object.state == transfer_pb2.TRANSFER_OBJECT_STATE_ABSENT
    log = await view(impatient, reply["transferJob"]["logs"]["outputLog"])
    assert "aborted" in log and "successfully" not in log, log
    assert not await exists(cluster, target)
    assert set(await listing(cluster, workdir)) <= before  # no temporary file left either
    s3 = s3_client(cluster)
    key = states[-1].object.key
    uploads = s3.list_multipart_uploads(Bucket=states[-1].object.bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key] == []
    # The client's late completion finds nothing to complete.
    async with httpx.AsyncClient(timeout=60) as client:
        late = await client.post(directives["completeUploadUrl"], content=b"<x/>")
    assert late.status_code >= 400


async def test_bob_cannot_read_or_complete_alices_transfer(
    xfer: LiveService, workdir: str, cluster: Cluster
) -> None:
    """Bob cannot see, follow, stop, divert or read alice's transfer.

    Completing it takes the presigned URLs that only alice's reply carried:
    bob's own replies name only his bucket. (Refusing a forged URL is S3's
    signature check; the loopback S3 server does not check signatures.)
    """
    target = f"{workdir}/alices.bin"
    data = os.urandom(100)
    reply = await start_upload(xfer, target, len(data))
    job_id = reply["transferJob"]["jobId"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(xfer, job_id, user="bob")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    response = await request(xfer, "bob", "GET", f"/transfer/{job_id}")
    assert response.status_code == 404, response.text
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch(xfer, job_id, user="bob")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    async with httpx.AsyncClient(base_url=xfer.rest_url) as client:
        cancel = await client.delete(
            f"/compute/{SYSTEM}/jobs/{job_id}", headers=xfer.headers("bob")
        )
    assert cancel.status_code == 403, cancel.text

    # Nothing of bob's lands in alice's directory, or reads her file.
    body = {"path": target, "account": ACCOUNT, "transfer_directives": {"file_size": 100}}
    response = await request(xfer, "bob", "POST", "/transfer/upload", json=body)
    assert response.status_code == 403, response.text
    body = {"sourcePath": target, "account": ACCOUNT}
    response = await request(xfer, "bob", "POST", "/transfer/download", json=body)
    assert response.status_code == 403, response.text

    own = await start_upload(xfer, f"/scratch/bob/{uuid.uuid4().hex}.bin", 10, user="bob")
    try:
        urls = [
            *own["transferDirectives"]["partsUploadUrls"],
            own["transferDirectives"]["completeUploadUrl"],
        ]
        assert all(httpx.URL(u).path.startswith(f"/{bucket_name('hpcgate', 'bob')}/") for u in urls)
        alices = reply["transferDirectives"]["partsUploadUrls"]
        assert all(
            httpx.URL(u).path.startswith(f"/{bucket_name('hpcgate', 'alice')}/") for u in alices
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # and alice cannot see bob's
            await get(xfer, own["transferJob"]["jobId"], user="alice")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        async with httpx.AsyncClient(base_url=xfer.rest_url) as client:
            await client.delete(
                f"/compute/{SYSTEM}/jobs/{own['transferJob']['jobId']}", headers=xfer.headers("bob")
            )
        async with cluster.connect("bob") as conn:
            await conn.run(shlex.join(["rm", "-f", "--", *own["transferJob"]["logs"].values()]))

    # Alice's transfer is untouched by all this, and completes.
    async with httpx.AsyncClient(timeout=60) as client:
        directives = reply["transferDirectives"]
        await complete(client, directives, await put_parts(client, directives, data))
    await wait_job(xfer, reply)
    assert await sha256(xfer, target) == hashlib.sha256(data).hexdigest()


async def test_bad_input_is_400_naming_the_field(
    xfer: LiveService, workdir: str, cluster: Cluster
) -> None:
    """Refused before anything happens: no job, no file, no multipart upload."""
    name = f"never-{uuid.uuid4().hex}"
    target = f"{workdir}/{name}"
    upload = "/transfer/upload"

    def up(size: Any = 10, **changes: Any) -> dict[str, Any]:
        directives = {"transfer_method": "s3", "file_size": size}
        body = {"path": target, "account": ACCOUNT, "transfer_directives": directives}
        for key, value in changes.items():
            if key in directives:
                directives[key] = value
            else:
                body[key] = value
        return {k: v for k, v in body.items() if v is not None}

    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", upload, up(5 * 1024**4 + 1), "transferDirectives.fileSize"),
        ("POST", upload, up(-1), "transferDirectives.fileSize"),
        ("POST", upload, up(None), "transferDirectives.fileSize"),
        ("POST", upload, up(transfer_method="wormhole"), "transferDirectives.transferMethod"),
        # The body says "path" (the proto name of sourcePath): errors name it so.
        ("POST", upload, up(path="/etc/passwd"), "path"),
        ("POST", upload, up(path="relative/file"), "path"),
        ("POST", upload, up(path=workdir), "path"),  # a directory
        ("POST", upload, up(account=None), "account"),  # the directives need {account}
        ("POST", upload, up(account="proj1\n#SBATCH --uid=0"), "account"),
        ("POST", "/transfer/download", {"sourcePath": workdir, "account": ACCOUNT}, "sourcePath"),
        (
            "POST",
            "/transfer/compress",
            {
                "sourcePath": workdir,
                "targetPath": f"{target}.zip",
                "compression": "zip",
                "account": ACCOUNT,
            },
            "compression",
        ),
        ("POST", "/transfer/cp", {"sourcePath": workdir, "account": ACCOUNT}, "targetPath"),
        (
            "POST",
            "/transfer/mv",
            {"sourcePath": "/tmp/x", "targetPath": target, "account": ACCOUNT},
            "sourcePath",
        ),
        ("DELETE", "/transfer/rm", {"path": "/scratch", "account": ACCOUNT}, "path"),
        ("GET", "/transfer/0", {}, "jobId"),
    ]
    for method, path, body, field in cases:
        if method == "POST":
            response = await request(xfer, "alice", method, path, json=body)
        else:
            response = await request(xfer, "alice", method, path, params=body)
        assert response.status_code == 400, (path, body, response.text)
        violations = response.json()["data"]["fieldViolations"]
        assert [v["field"] for v in violations] == [field], (path, body, violations)

    assert not any(entry.startswith(name) for entry in await listing(cluster, workdir))
    uploads = s3_client(cluster).list_multipart_uploads(Bucket=bucket_name("hpcgate", "alice"))
    assert not [u for u in uploads.get("Uploads", []) if u["Key"].endswith("/" + name)]
