"""Every RPC of the four services through hpcgate.client, blocking and asyncio alike.

One table of steps, each naming the RPCs it reaches (a stub method, or a
client helper built on them) and checking what the cluster did. The same
table runs through :class:`Client` and through :class:`AsyncClient`; a
check below fails when the descriptors hold an RPC no step reaches.

The server runs in the test's event loop, so the steps run in a worker
thread: the blocking client directly, the asyncio client's calls sent back
into the loop (``run_coroutine_threadsafe``), as a program of its own would
await them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import LiveService
from hpcgate.client import AsyncClient, Client, NotFound
from hpcgate.client.channel import SERVICES, STREAMS
from hpcgate.v1 import filesystem_pb2, scheduler_pb2, status_pb2, transfer_pb2
from hpcgate.v1.options_pb2 import UploadedFile

F, S, ST, T = filesystem_pb2, scheduler_pb2, status_pb2, transfer_pb2
FILES = {"Status": ST, "Filesystem": F, "Scheduler": S, "Transfer": T}
ACCOUNT = "proj1"
TEXT = b"hello\nworld\n"
WAIT = 120.0  # seconds a step waits for the cluster before it fails


@dataclass
class Ctx:
    """What a step needs: how to call the client, where to work, what earlier steps left."""

    call: Callable[..., Any]  # call("filesystem.Stat", request) or call("upload", a, b)
    system: str
    remote: str
    local: Path
    job_id: int = 0

    def path(self, name: str) -> str:
        return f"{self.remote}/{name}"

    def wait_job(self, state: int) -> None:
        """Wait until the step's job reached ``state`` (polled: no timed assertion)."""
        deadline = time.monotonic() + WAIT
        while True:
            (job,) = self.call(
                "scheduler.GetJob", S.GetJobRequest(system_name=self.system, job_id=self.job_id)
            ).jobs
            if job.status.normalized_state == state:
                return
            assert time.monotonic() < deadline, job.status
            time.sleep(0.5)

    def finished(self, started: Any) -> None:
        """Follow a transfer job to its end over WatchTransfer: it must have succeeded."""
        watch = T.WatchTransferRequest(system_name=self.system, job_id=started.transfer_job.job_id)
        events = self.call("transfer.WatchTransfer", watch)
        last = events[-1].transfer
        assert last.phase == T.TRANSFER_PHASE_SUCCEEDED, last.message
        request = T.GetTransferRequest(system_name=self.system, job_id=last.transfer_job.job_id)
        assert self.call("transfer.GetTransfer", request).transfer.phase == last.phase

    def stat(self, name: str) -> filesystem_pb2.FileStat:
        request = F.StatRequest(system_name=self.system, path=self.path(name))
        output: filesystem_pb2.FileStat = self.call("filesystem.Stat", request).output
        return output

    def gone(self, name: str) -> None:
        with pytest.raises(NotFound):
            self.stat(name)


@dataclass(frozen=True)
class Step:
    """One row: the RPCs ("Service.Method") it reaches, and what it does and checks."""

    reaches: tuple[str, ...]
    run: Callable[[Ctx], None]


def _status(ctx: Ctx) -> None:
    names = [s.name for s in ctx.call("status.ListSystems", ST.ListSystemsRequest()).systems]
    assert names == [ctx.system]
    liveness = ctx.call("status.GetLiveness", ST.GetLivenessRequest())
    assert liveness.healthcheck_runs, liveness
    on: dict[str, Any] = {"system_name": ctx.system}
    assert ctx.call("status.ListNodes", ST.ListNodesRequest(**on)).nodes
    partitions = ctx.call("status.ListPartitions", ST.ListPartitionsRequest(**on)).partitions
    assert "debug" in {p.name for p in partitions}
    reservations = ctx.call("status.ListReservations", ST.ListReservationsRequest(**on))
    assert [r.end_time > r.start_time > 0 for r in reservations.reservations] == [True]
    info = ctx.call("status.GetUserInfo", ST.GetUserInfoRequest(**on))
    assert info.user.name == "alice" and ACCOUNT in {a.name for a in info.accounts}


def _write_and_read(ctx: Ctx) -> None:
    on: dict[str, Any] = {"system_name": ctx.system}
    text = ctx.path("t.txt")
    ctx.call(
        "filesystem.Upload",
        F.UploadRequest(**on, path=ctx.remote, file=UploadedFile(filename="t.txt", content=TEXT)),
    )
    made = ctx.call("filesystem.Mkdir", F.MkdirRequest(**on, path=ctx.path("d/e"), parent=True))
    assert made.output.type == "d"
    listing = ctx.call("filesystem.Ls", F.LsRequest(**on, path=ctx.remote))
    assert {entry.name for entry in listing.output} == {"t.txt", "d"}
    streamed = ctx.call("filesystem.LsStream", F.LsStreamRequest(**on, path=ctx.remote))
    assert [e.name for reply in streamed for e in reply.output] == [e.name for e in listing.output]
    head = ctx.call("filesystem.Head", F.HeadRequest(**on, path=text, lines=1))
    assert head.output.content == "hello\n"
    tail = ctx.call("filesystem.Tail", F.TailRequest(**on, path=text, lines=1))
    assert tail.output.content == "world\n"
    assert ctx.call("filesystem.View", F.ViewRequest(**on, path=text)).output == TEXT.decode()
    checksum = ctx.call("filesystem.Checksum", F.ChecksumRequest(**on, path=text))
    assert checksum.output.checksum == hashlib.sha256(TEXT).hexdigest()
    kind = ctx.call("filesystem.FileType", F.FileTypeRequest(**on, path=text)).output
    assert "text" in kind, kind
    assert ctx.stat("t.txt").size == len(TEXT)
    assert ctx.call("filesystem.Download", F.DownloadRequest(**on, path=text)).data == TEXT
    many = F.DownloadManyRequest(**on, paths=[ctx.path("missing"), text])
    by_index = {reply.index: reply for reply in ctx.call("filesystem.DownloadMany", many)}
    assert by_index[1].body.data == TEXT
    assert by_index[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]


def _change(ctx: Ctx) -> None:
    on: dict[str, Any] = {"system_name": ctx.system}
    text = ctx.path("t.txt")
    chmod = ctx.call("filesystem.Chmod", F.ChmodRequest(**on, path=text, mode="640"))
    assert chmod.output.permissions == "rw-r-----"
    assert ctx.stat("t.txt").mode & 0o777 == 0o640
    chown = ctx.call("filesystem.Chown", F.ChownRequest(**on, path=text, group="hpcproj"))
    assert (chown.output.user, chown.output.group) == ("alice", "hpcproj")
    link = ctx.call(
        "filesystem.Symlink", F.SymlinkRequest(**on, path=text, link_path=ctx.path("l"))
    )
    assert link.output.link_target == text
    ctx.call("filesystem.Rm", F.RmRequest(**on, path=ctx.path("l")))
    ctx.gone("l")


def _archive(ctx: Ctx) -> None:
    on: dict[str, Any] = {"system_name": ctx.system}
    archive = ctx.path("d.tar.gz")
    ctx.call(
        "filesystem.Compress",
        F.CompressRequest(**on, source_path=ctx.path("d"), target_path=archive),
    )
    assert ctx.stat("d.tar.gz").size > 0
    ctx.call(
        "filesystem.Mkdir", F.MkdirRequest(**on, path=ctx.path("x"))
    )  # Extract's target exists
    ctx.call(
        "filesystem.Extract", F.ExtractRequest(**on, source_path=archive, target_path=ctx.path("x"))
    )
    assert ctx.stat("x/d/e").mode & 0o170000 == 0o040000  # the directory came back


def _streams(ctx: Ctx) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    (ctx.local / "up.bin").write_bytes(data)
    reply = ctx.call("upload", ctx.local / "up.bin", ctx.path("up.bin"))
    assert reply.sha256 == hashlib.sha256(data).hexdigest()
    back = ctx.call("download", ctx.path("up.bin"), ctx.local / "back.bin")
    assert Path(back).read_bytes() == data
    bulk = ctx.call("download_many", [ctx.path("up.bin"), ctx.path("t.txt")], ctx.local / "bulk")
    assert not bulk.errors and (ctx.local / "bulk" / "t.txt").read_bytes() == TEXT


def _jobs(ctx: Ctx) -> None:
    job = S.JobDescriptionModel(
        script="#!/bin/bash\nsleep 120\n", working_directory=ctx.remote, name="rpc-table"
    )
    submitted = ctx.call("scheduler.SubmitJob", S.SubmitJobRequest(system_name=ctx.system, job=job))
    ctx.job_id = submitted.job_id
    this: dict[str, Any] = {"system_name": ctx.system, "job_id": ctx.job_id}
    listed = ctx.call("scheduler.ListJobs", S.ListJobsRequest(system_name=ctx.system)).jobs
    assert ctx.job_id in {j.job_id for j in listed}
    (meta,) = ctx.call("scheduler.GetJobMetadata", S.GetJobMetadataRequest(**this)).jobs
    assert "sleep 120" in meta.script
    ctx.wait_job(S.JOB_STATE_RUNNING)
    ctx.call("scheduler.AttachJob", S.AttachJobRequest(**this, command="true"))
    watch = S.WatchJobsRequest(
        system_name=ctx.system, job_ids=[ctx.job_id], send_initial=True, max_events=1
    )
    (initial,) = ctx.call("scheduler.WatchJobs", watch)
    assert initial.event_type == S.JOB_EVENT_TYPE_INITIAL
    assert initial.job.status.normalized_state == S.JOB_STATE_RUNNING
    ctx.call("scheduler.CancelJob", S.CancelJobRequest(**this))
    ctx.wait_job(S.JOB_STATE_CANCELLED)


def _staged(ctx: Ctx) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    (ctx.local / "staged.bin").write_bytes(data)
    status = ctx.call("upload_staged", ctx.local / "staged.bin", ctx.path("staged.bin"))
    assert status.phase == T.TRANSFER_PHASE_SUCCEEDED
    back = ctx.call("download_staged", ctx.path("staged.bin"), ctx.local / "staged.back")
    assert Path(back).read_bytes() == data


def _transfer_jobs(ctx: Ctx) -> None:
    on: dict[str, Any] = {"system_name": ctx.system, "account": ACCOUNT}
    src, copy, moved = ctx.path("t.txt"), ctx.path("copy.txt"), ctx.path("moved.txt")
    ctx.finished(
        ctx.call("transfer.Cp", T.TransferCpRequest(**on, source_path=src, target_path=copy))
    )
    assert ctx.stat("copy.txt").size == len(TEXT)
    ctx.finished(
        ctx.call("transfer.Mv", T.TransferMvRequest(**on, source_path=copy, target_path=moved))
    )
    ctx.gone("copy.txt")
    assert ctx.stat("moved.txt").size == len(TEXT)
    archive = ctx.path("t.tar.gz")
    compress = T.TransferCompressRequest(**on, source_path=ctx.path("d"), target_path=archive)
    ctx.finished(ctx.call("transfer.Compress", compress))
    ctx.call("filesystem.Mkdir", F.MkdirRequest(system_name=ctx.system, path=ctx.path("y")))
    extract = T.TransferExtractRequest(**on, source_path=archive, target_path=ctx.path("y"))
    ctx.finished(ctx.call("transfer.Extract", extract))
    assert ctx.stat("y/d/e").mode & 0o170000 == 0o040000
    ctx.finished(ctx.call("transfer.Rm", T.TransferRmRequest(**on, path=ctx.path("y"))))
    ctx.gone("y")


STEPS = [
    Step(
        (
            "Status.ListSystems",
            "Status.GetLiveness",
            "Status.ListNodes",
            "Status.ListPartitions",
            "Status.ListReservations",
            "Status.GetUserInfo",
        ),
        _status,
    ),
    Step(
        (
            "Filesystem.Upload",
            "Filesystem.Mkdir",
            "Filesystem.Ls",
            "Filesystem.LsStream",
            "Filesystem.Head",
            "Filesystem.Tail",
            "Filesystem.View",
            "Filesystem.Checksum",
            "Filesystem.FileType",
            "Filesystem.Stat",
            "Filesystem.Download",
            "Filesystem.DownloadMany",
        ),
        _write_and_read,
    ),
    Step(("Filesystem.Chmod", "Filesystem.Chown", "Filesystem.Symlink", "Filesystem.Rm"), _change),
    Step(("Filesystem.Compress", "Filesystem.Extract"), _archive),
    # upload / download / download_many: the client's helpers over the streams.
    Step(
        ("Filesystem.UploadStream", "Filesystem.DownloadStream", "Filesystem.BulkDownload"),
        _streams,
    ),
    Step(
        (
            "Scheduler.SubmitJob",
            "Scheduler.ListJobs",
            "Scheduler.GetJob",
            "Scheduler.GetJobMetadata",
            "Scheduler.AttachJob",
            "Scheduler.WatchJobs",
            "Scheduler.CancelJob",
        ),
        _jobs,
    ),
    # upload_staged / download_staged: Transfer.Upload or .Download, then WatchTransfer.
    Step(("Transfer.Upload", "Transfer.Download", "Transfer.WatchTransfer"), _staged),
    Step(
        (
            "Transfer.Cp",
            "Transfer.Mv",
            "Transfer.Compress",
            "Transfer.Extract",
            "Transfer.Rm",
            "Transfer.GetTransfer",
        ),
        _transfer_jobs,
    ),
]


def _rpcs() -> set[str]:
    return {
        f"{service}.{method}"
        for service in SERVICES
        for method in FILES[service].DESCRIPTOR.services_by_name[service].methods_by_name
    }


def _check_the_table() -> None:
    """Each RPC of the descriptors is reached by exactly one step."""
    reached = [rpc for step in STEPS for rpc in step.reaches]
    assert len(reached) == len(set(reached)), "an RPC is claimed by two steps"
    assert set(reached) == _rpcs()


def _target(client: Any, name: str) -> Any:
    for part in name.split("."):
        client = getattr(client, part)
    return client


def _is_stream(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1] in STREAMS


def _sync_caller(client: Client) -> Callable[..., Any]:
    def call(name: str, *args: Any) -> Any:
        result = _target(client, name)(*args)
        return list(result) if _is_stream(name) else result

    return call


def _async_caller(client: AsyncClient, loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    async def one(name: str, args: tuple[Any, ...]) -> Any:
        result = _target(client, name)(*args)
        if _is_stream(name):
            return [item async for item in result]
        return await result

    def call(name: str, *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(one(name, args), loop).result(WAIT)

    return call


def _run_all(ctx: Ctx) -> None:
    _check_the_table()
    for step in STEPS:
        step.run(ctx)


def _options(live: LiveService) -> dict[str, Any]:
    # stage_above=None: upload/download stay on the streams; the staged steps ask for S3.
    return {"system": live.system, "account": ACCOUNT, "stage_above": None}


async def test_every_rpc_through_the_blocking_client(
    live: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    def run() -> None:
        with Client(live.grpc_target, live.token("alice"), **_options(live)) as client:
            _run_all(Ctx(_sync_caller(client), live.system, remote_dir, tmp_path))

    await asyncio.to_thread(run)


async def test_every_rpc_through_the_asyncio_client(
    live: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    async with AsyncClient(live.grpc_target, live.token("alice"), **_options(live)) as client:
        call = _async_caller(client, asyncio.get_running_loop())
        await asyncio.to_thread(_run_all, Ctx(call, live.system, remote_dir, tmp_path))
