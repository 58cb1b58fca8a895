"""The staging area and the data-moving scripts against an S3 server in this process.

:class:`Staging` opens uploads and downloads, records them, reports their
state and aborts what can no longer finish; the ingress and egress scripts
(run by bash here, as a Slurm job would) move and verify the bytes. Nothing
of this needs the cluster: a moto server on loopback is the store.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer

from hpcgate.server.config import SystemConfig, parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.jobs import Job, JobDescription, JobState, JobStatus
from hpcgate.server.transfer import progress, scripts, service
from hpcgate.server.transfer.jobs import Submitter, log_paths
from hpcgate.server.transfer.progress import Phase
from hpcgate.server.transfer.records import Lost, ObjectState, UploadPlan
from hpcgate.server.transfer.s3 import part_count, plan_parts
from hpcgate.server.transfer.staging import Staging

MIB = 1024 * 1024
PART = 5 * MIB


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def system(endpoint: str, **s3: Any) -> SystemConfig:
    keys = {"access_key": {"value": "testing"}, "secret_key": {"value": "testing"}}
    config = {
        "name": "Cluster",
        "ssh": {"host": "h", "known_hosts_entry": "x"},
        "filesystems": [{"path": "/", "default_work_dir": True}],
        "s3": {"endpoint": endpoint, "max_part_size": PART, **keys, **s3},
        "data_operation": {"datatransfer_jobs_directives": ["#SBATCH --account={account}"]},
    }
    return parse_config({"systems": [config]}).systems[0]


class Clock:
    """A settable clock for the staging area's deadlines."""

    def __init__(self) -> None:
        self.now = 1_000_000_000.0

    def __call__(self) -> float:
        return self.now


def staging_for(endpoint: str, clock: Clock | None = None, **s3: Any) -> Staging:
    config = system(endpoint, **s3).s3
    assert config is not None
    return Staging("Cluster", config) if clock is None else Staging("Cluster", config, clock)


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)


async def put_all(plan: UploadPlan, data: bytes, part_size: int | None = None) -> None:
    """What a client does: PUT the parts, POST the completion."""
    size = part_size or plan.manifest.part_size
    count = part_count(len(data), size)
    async with httpx.AsyncClient() as client:
        etags = []
        for n in range(count):
            reply = await client.put(plan.part_urls[n], content=data[n * size : (n + 1) * size])
            etags.append(reply.headers["ETag"])
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags, 1)
        )
        done = await client.post(
            plan.complete_url, content=f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"
        )
        assert done.status_code == 200, done.text


def ingress(plan: UploadPlan, target: Path, give_up_at: int | None = None) -> str:
    m = plan.manifest
    return scripts.ingress(
        [],
        target=str(target),
        size=m.size,
        part_size=m.part_size,
        parts=m.parts,
        give_up_at=int(m.deadline) if give_up_at is None else give_up_at,
        head_url=plan.head_url,
        get_url=plan.get_url,
        abort_url=plan.abort_url,
        parts_url=plan.parts_url,
    )


async def test_bucket_created_with_the_lifecycle_rule(endpoint: str) -> None:
    staging = staging_for(endpoint, lifecycle_days=3)
    plan = await staging.open_upload("carol", "/data/x.bin", 11 * MIB, PART)
    assert plan.manifest.bucket == "hpcgate-carol"
    assert len(plan.part_urls) == 3
    client = staging.clients.private
    rules = client.get_bucket_lifecycle_configuration(Bucket="hpcgate-carol")["Rules"]
    assert rules[0]["Expiration"] == {"Days": 3}
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 7
    # A second upload reuses the bucket.
    again = await staging.open_upload("carol", "/data/x.bin", 1, PART)
    assert again.manifest.bucket == plan.manifest.bucket
    assert again.manifest.key != plan.manifest.key


async def test_a_bucket_deleted_behind_our_back_is_made_again(endpoint: str) -> None:
    staging = staging_for(endpoint, bucket_prefix="gone")
    first = await staging.open_upload("carol", "/data/x", 1, PART)
    client = staging.clients.private
    await staging.abort(first.manifest)
    for item in client.list_objects_v2(Bucket="gone-carol").get("Contents", []):
        client.delete_object(Bucket="gone-carol", Key=item["Key"])
    client.delete_bucket(Bucket="gone-carol")
    again = await staging.open_upload("carol", "/data/x", 1, PART)
    assert (await staging.inspect(again.manifest)).state is ObjectState.UPLOADING


async def test_public_endpoint_in_client_urls_private_in_job_urls(endpoint: str) -> None:
    public = "http://s3.example.org:9000"
    staging = staging_for(endpoint, public_endpoint=public)
    plan = await staging.open_upload("carol", "/data/y", 10, PART)
    assert all(u.startswith(f"{public}/hpcgate-carol/") for u in plan.part_urls)
    assert plan.complete_url.startswith(public)
    for url in (plan.head_url, plan.get_url, plan.abort_url):
        assert url.startswith(f"{endpoint}/hpcgate-carol/")
    download = await staging.open_download("carol", "/data/y", 10, PART)
    assert download.download_url.startswith(public)
    assert all(u.startswith(endpoint) for u in download.part_urls)


@pytest.mark.parametrize("size", [0, 1, PART + 1, 3 * PART + 17])
async def test_ingress_and_egress_round_trip(endpoint: str, tmp_path: Path, size: int) -> None:
    staging = staging_for(endpoint)
    data = os.urandom(size)
    target = tmp_path / "in.bin"
    plan = await staging.open_upload("dave", str(target), size, PART)
    job = asyncio.create_task(asyncio.to_thread(bash, ingress(plan, target)))
    await put_all(plan, data)
    result = await job
    assert result.returncode == 0, result.stdout + result.stderr
    assert "File was successfully uploaded" in result.stdout
    assert target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    view = await staging.inspect(plan.manifest)
    assert view.state is ObjectState.COMPLETE and view.etag is not None
    assert view.etag.endswith(f"-{plan.manifest.parts}")

    part_size = plan_parts(size, PART, "sourcePath", service.MAX_DOWNLOAD_PARTS)
    download = await staging.open_download("dave", str(target), size, part_size)
    m = download.manifest
    result = bash(
        scripts.egress(
            [],
            source=str(target),
            size=size,
            part_size=part_size,
            part_urls=download.part_urls,
            complete_url=download.complete_url,
            abort_url=download.abort_url,
            delete_url=download.delete_url,
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Multipart file upload successfully completed" in result.stdout
    async with httpx.AsyncClient() as client:
        assert (await client.get(download.download_url)).content == data
        fresh = await staging.download_url(m)
        assert (await client.get(fresh)).content == data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_parts_of_another_size_fail_verification_and_leave_the_target(
    endpoint: str, tmp_path: Path
) -> None:
    """An object assembled from parts other than announced is refused, target untouched."""
    staging = staging_for(endpoint)
    data = os.urandom(2 * PART + 2)
    target = tmp_path / "kept.bin"
    target.write_bytes(b"previous")
    plan = await staging.open_upload("dave", str(target), len(data), PART)
    # Two parts (5 MiB + 1, 5 MiB + 1) where three of 5 MiB were announced.
    await put_all(plan, data, part_size=PART + 1)
    result = bash(ingress(plan, target))
    assert result.returncode == 1
    assert "successfully" not in result.stdout and "FAILED" in result.stdout
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["kept.bin"]


async def test_an_upload_not_completed_in_time_is_aborted(endpoint: str, tmp_path: Path) -> None:
    staging = staging_for(endpoint)
    target = tmp_path / "never.bin"
    plan = await staging.open_upload("dave", str(target), 10, PART)
    result = bash(ingress(plan, target, give_up_at=0))
    assert result.returncode == 1
    assert "aborted (HTTP 204)" in result.stdout and "successfully" not in result.stdout
    assert os.listdir(tmp_path) == []
    assert (await staging.inspect(plan.manifest)).state is ObjectState.ABSENT


async def test_a_cancelled_ingress_aborts_its_upload(endpoint: str, tmp_path: Path) -> None:
    """scancel sends SIGTERM: the waiting job aborts the upload and says it failed."""
    staging = staging_for(endpoint)
    plan = await staging.open_upload("dave", str(tmp_path / "x"), 10, PART)
    job = await asyncio.create_subprocess_exec(
        "bash", "-c", ingress(plan, tmp_path / "x"), stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(0.5)  # waiting for the client now
    job.terminate()
    out = (await asyncio.wait_for(job.communicate(), 30))[0].decode()
    assert job.returncode == 1
    assert "stopped by a signal" in out and "aborted (HTTP 204)" in out
    assert (await staging.inspect(plan.manifest)).state is ObjectState.ABSENT


async def test_egress_refuses_a_file_that_changed_and_aborts(endpoint: str, tmp_path: Path) -> None:
    staging = staging_for(endpoint)
    source = tmp_path / "grows.bin"
    source.write_bytes(b"12345")
    download = await staging.open_download("dave", str(source), 4, PART)
    result = bash(
        scripts.egress(
            [],
            source=str(source),
            size=4,
            part_size=PART,
            part_urls=download.part_urls,
            complete_url=download.complete_url,
            abort_url=download.abort_url,
            delete_url=download.delete_url,
        )
    )
    assert result.returncode == 1 and "ask again" in result.stdout
    assert (await staging.inspect(download.manifest)).state is ObjectState.ABSENT


async def test_records_link_jobs_to_their_transfers(endpoint: str) -> None:
    staging = staging_for(endpoint)
    plan = await staging.open_upload("erin", "/data/z", 10, PART)
    await staging.link(plan.manifest, 4242)
    assert await staging.find("erin", 4242) == plan.manifest
    assert await staging.find("erin", 4243) is None
    # Not erin's record: frank's own bucket, which does not exist (a transfer of
    # his would have made it, so a job of his naming one is lost).
    assert isinstance(await staging.find("frank", 4242), Lost)
    view = await staging.inspect(plan.manifest)
    assert view.state is ObjectState.UPLOADING and view.parts_uploaded == 0


async def test_settle_aborts_what_nothing_will_finish(endpoint: str) -> None:
    clock = Clock()
    staging = staging_for(endpoint, clock, ingress_timeout=60)
    plan = await staging.open_upload("erin", "/data/w", 10, PART)
    view = await staging.inspect(plan.manifest)
    assert (await staging.settle(plan.manifest, view, job_ended=False)) == view
    clock.now += 61  # past its deadline
    assert (await staging.settle(plan.manifest, view, False)).state is ObjectState.ABSENT
    assert (await staging.inspect(plan.manifest)).state is ObjectState.ABSENT
    other = await staging.open_upload("erin", "/data/w", 10, PART)
    view = await staging.inspect(other.manifest)
    assert (await staging.settle(other.manifest, view, job_ended=True)).state is ObjectState.ABSENT


async def test_sweep_aborts_expired_uploads_only(endpoint: str) -> None:
    clock = Clock()
    clock.now = time.time()  # moto stamps uploads with the real time: start from there
    staging = staging_for(endpoint, clock, ingress_timeout=60, bucket_prefix="sweep")
    upload = await staging.open_upload("gina", "/data/u", 10, PART)
    download = await staging.open_download("gina", "/data/d", 10, PART)
    client = staging.clients.private
    foreign = client.create_multipart_upload(Bucket="sweep-gina", Key="not/a/staged/key")

    def open_keys() -> set[str]:
        uploads = client.list_multipart_uploads(Bucket="sweep-gina").get("Uploads", [])
        return {u["Key"] for u in uploads}

    real_now = clock.now
    assert await staging.sweep() == 0
    clock.now = real_now + 60 + 61  # the upload's deadline and the grace are past
    assert await staging.sweep() == 1
    assert open_keys() == {download.manifest.key, "not/a/staged/key"}
    clock.now = real_now + 8 * 24 * 3600  # past every download's job URLs too
    assert await staging.sweep() == 1
    assert open_keys() == {"not/a/staged/key"}  # never touches what is not ours
    client.abort_multipart_upload(
        Bucket="sweep-gina", Key="not/a/staged/key", UploadId=foreign["UploadId"]
    )
    assert upload.manifest.key not in open_keys()


@dataclass(frozen=True)
class Output:
    exit_status: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class FakeCluster:
    """A Submitter's cluster side that records whatever reaches it."""

    commands: list[list[str]] = field(default_factory=list)
    submitted: list[JobDescription] = field(default_factory=list)

    async def run(self, argv: Any, *, stdin: bytes | None = None) -> Any:
        self.commands.append(list(argv))
        return Output()

    async def submit(self, run: Any, user: str, job: JobDescription) -> int:
        self.submitted.append(job)
        return 77


async def test_bad_input_reaches_neither_the_cluster_nor_s3(endpoint: str) -> None:
    config = system(endpoint, bucket_prefix="untouched")
    assert config.s3 is not None
    staging = Staging(config.name, config.s3)
    fake = FakeCluster()
    sub = Submitter(config, fake, fake.run, "hank")  # type: ignore[arg-type]
    refused = [
        service.upload(sub, staging, "/data/f", 10, None),  # {account} needs one
        service.upload(sub, staging, "/data/f", 10, "a b"),
        service.upload(sub, staging, "/data/f", 6 * 1024**4, "p"),
        service.rm(sub, "/", "p"),
        service.compress(
            sub, "/a", "/b", match_pattern=None, dereference=False, compression="zip", account="p"
        ),
        service.extract(sub, "/a", "/b", "rar", "p"),
    ]
    for attempt in refused:
        with pytest.raises(ServiceError) as caught:
            await attempt
        assert caught.value.fields, caught.value
    assert fake.commands == [] and fake.submitted == []
    buckets = staging.clients.private.list_buckets()["Buckets"]
    assert not [b for b in buckets if b["Name"].startswith("untouched")]


async def test_a_refused_submission_aborts_its_upload(endpoint: str) -> None:
    config = system(endpoint)
    assert config.s3 is not None
    staging = Staging(config.name, config.s3)

    class Refusing(FakeCluster):
        async def submit(self, run: Any, user: str, job: JobDescription) -> int:
            raise ServiceError(ErrorKind.PERMISSION_DENIED, "no", "NO")

    fake = Refusing()
    sub = Submitter(config, fake, fake.run, "ivan")  # type: ignore[arg-type]
    with pytest.raises(ServiceError):
        await service.upload(sub, staging, "/data/f", 10, "proj")
    checks = [c for c in fake.commands if c[0] != "realpath"]  # not the roots' learning
    assert checks[0][:2] == ["sh", "-c"]  # the target was checked first
    uploads = staging.clients.private.list_multipart_uploads(Bucket="hpcgate-ivan")
    assert uploads.get("Uploads", []) == []


def _empty_and_delete(staging: Staging, bucket: str) -> None:
    """What a store that lost its state shows: no uploads, no objects, no bucket."""
    client = staging.clients.private
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


async def test_ingress_gives_up_within_seconds_when_the_bucket_is_gone(
    endpoint: str, tmp_path: Path
) -> None:
    """Without the check it would wait for the client until its deadline (an hour)."""
    staging = staging_for(endpoint, bucket_prefix="lost")
    target = tmp_path / "never.bin"
    plan = await staging.open_upload("erin", str(target), 10, PART)
    await staging.link(plan.manifest, 41)
    assert await staging.find("erin", 41) == plan.manifest
    _empty_and_delete(staging, plan.manifest.bucket)
    result = bash(ingress(plan, target, give_up_at=int(time.time()) + 3600))
    assert result.returncode == 1
    assert "the upload is gone from S3" in result.stdout, result.stdout
    assert os.listdir(tmp_path) == []
    lost = await staging.find("erin", 41)
    assert isinstance(lost, Lost) and "is gone from S3" in lost.reason


async def test_ingress_gives_up_when_its_upload_was_aborted(endpoint: str, tmp_path: Path) -> None:
    staging = staging_for(endpoint)
    plan = await staging.open_upload("erin", str(tmp_path / "x"), 10, PART)
    assert await staging.abort(plan.manifest)
    result = bash(ingress(plan, tmp_path / "x", give_up_at=int(time.time()) + 3600))
    assert result.returncode == 1 and "the upload is gone from S3" in result.stdout


async def test_a_lost_record_beside_the_job_link_is_lost(endpoint: str) -> None:
    staging = staging_for(endpoint)
    plan = await staging.open_upload("erin", "/data/y", 10, PART)
    await staging.link(plan.manifest, 42)
    client = staging.clients.private
    client.delete_object(
        Bucket=plan.manifest.bucket, Key=f".hpcgate/objects/{plan.manifest.transfer_id}.json"
    )
    assert isinstance(await staging.find("erin", 42), Lost)
    assert await staging.find("erin", 43) is None  # no link: not a staged transfer


async def test_s3_down_is_unavailable_without_the_endpoint(endpoint: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    staging = staging_for(f"http://127.0.0.1:{port}")
    with pytest.raises(ServiceError) as caught:
        await staging.find("erin", 1)
    assert caught.value.code == ErrorKind.UNAVAILABLE
    assert caught.value.reason == "S3_UNAVAILABLE"
    assert "127.0.0.1" not in caught.value.message and str(port) not in caught.value.message


@dataclass
class LocalCluster(FakeCluster):
    """A cluster side that runs commands here (as the job's user would) and records cancels."""

    running: list[Job] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    async def run(self, argv: Any, *, stdin: bytes | None = None) -> Any:
        self.commands.append(list(argv))
        done = await asyncio.to_thread(subprocess.run, list(argv), capture_output=True)
        return Output(done.returncode, done.stdout, done.stderr)

    async def job(self, run: Any, user: str, job_id: int) -> list[Job]:
        return [job for job in self.running if job.job_id == job_id]

    async def cancel(self, run: Any, user: str, job_id: int) -> None:
        self.cancelled.append(job_id)


async def test_an_object_absent_by_its_jobs_doing_is_not_taken_for_lost(
    endpoint: str, tmp_path: Path
) -> None:
    """S3 lists neither the upload nor the object while it completes a large one.

    The egress job is held in its CompleteMultipartUpload POST (a listener that
    takes it and does not answer) while the upload is no longer listed, as S3
    shows a completion in flight: the job's log says it is completing, so the
    transfer runs on. When the completion fails, the job says why and aborts:
    that reason is the transfer's, and the ending job is not cancelled. A job
    whose log says neither (none yet) has lost its object: cancelled.
    """
    config = system(endpoint)
    assert config.s3 is not None
    staging = Staging(config.name, config.s3)
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(PART + 5))
    plan = await staging.open_download("judy", str(source), PART + 5, PART)
    lost = await staging.open_download("judy", str(source), PART + 5, PART)
    job_id, lost_id = 4711, 4712
    await staging.link(plan.manifest, job_id)
    await staging.link(lost.manifest, lost_id)
    running = JobStatus(state="RUNNING", normalized_state=JobState.RUNNING)
    jobs = [Job(n, "OutgressFileTransfer", running, user="judy") for n in (job_id, lost_id)]
    cluster = LocalCluster(running=[replace(j, working_directory=str(tmp_path)) for j in jobs])
    sub = Submitter(config, cluster, cluster.run, "judy")  # type: ignore[arg-type]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        script = scripts.egress(
            [],
            source=str(source),
            size=PART + 5,
            part_size=PART,
            part_urls=plan.part_urls,
            complete_url=f"http://127.0.0.1:{listener.getsockname()[1]}/complete",
            abort_url=plan.abort_url,
            delete_url=plan.delete_url,
        )
        output_log, _ = log_paths(str(tmp_path), job_id)
        # The job's output goes to its log, as Slurm's does.
        redirected = 'exec bash -c "$1" >"$0"'
        egress = await asyncio.create_subprocess_exec("sh", "-c", redirected, output_log, script)
        held, _ = await asyncio.to_thread(listener.accept)  # the job is completing now
        assert await staging.abort(plan.manifest)  # what S3 lists meanwhile: nothing

        state = await progress.get(sub, staging, job_id)
        assert state.phase is Phase.RUNNING, state.message
        assert "completing" in state.message and cluster.cancelled == []

        held.close()  # the completion fails; the job says so and ends
        assert await asyncio.wait_for(egress.wait(), 60) == 1
    state = await progress.get(sub, staging, job_id)  # its end not polled yet
    assert state.phase is Phase.FAILED, state.message
    assert state.message.startswith("the job failed: completing the multipart upload failed")
    assert cluster.cancelled == []

    assert await staging.abort(lost.manifest)
    state = await progress.get(sub, staging, lost_id)
    assert state.phase is Phase.FAILED and "gone from S3" in state.message, state.message
    assert cluster.cancelled == [lost_id]


async def test_egress_sends_a_part_again_when_s3_stored_other_bytes(
    endpoint: str, tmp_path: Path
) -> None:
    """A store answering a part's PUT with another ETag than the bytes' MD5: sent again.

    A front for the first part's presigned URL answers its first PUT with a
    wrong ETag (what S3 says when it stored other bytes) and passes the next
    one on to the store: the job resends that part and the download is whole.
    """
    staging = staging_for(endpoint)
    source = tmp_path / "source.bin"
    data = os.urandom(PART + 7)
    source.write_bytes(data)
    download = await staging.open_download("kim", str(source), len(data), PART)
    stored = download.part_urls[0]
    puts: list[int] = []

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            assert "Transfer-Encoding" not in self.headers  # a part has a known length
            body = self.rfile.read(int(self.headers["Content-Length"]))
            puts.append(len(body))
            etag = '"' + "0" * 32 + '"'  # the MD5 of other bytes
            if len(puts) > 1:
                octets = {"Content-Type": "application/octet-stream"}  # not a form
                passed = urllib.request.Request(stored, data=body, method="PUT", headers=octets)
                with urllib.request.urlopen(passed) as answer:
                    etag = answer.headers["ETag"]
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    front = ThreadingHTTPServer(("127.0.0.1", 0), Front)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        script = scripts.egress(
            [],
            source=str(source),
            size=len(data),
            part_size=PART,
            part_urls=[f"http://127.0.0.1:{front.server_address[1]}/p1", *download.part_urls[1:]],
            complete_url=download.complete_url,
            abort_url=download.abort_url,
            delete_url=download.delete_url,
        )
        result = await asyncio.to_thread(bash, script)
    finally:
        front.shutdown()
        front.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "than were read; sending it again" in result.stdout
    assert puts == [PART, PART]
    async with httpx.AsyncClient() as client:
        assert (await client.get(download.download_url)).content == data
