"""How a transfer stands: its job's state and its staged object, told as one phase.

:func:`describe` combines a transfer's job with its object: the job says
whether the transfer runs, ended well or failed; the object says how far a
client's upload (or the job's staging) has come. :func:`get` tells it once,
:func:`watch` at each change. Starting transfers is :mod:`.service`'s job.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.jobs import Job, JobState, JobStatus
from hpcgate.server.scheduler.watch import Subscription
from hpcgate.server.transfer.jobs import (
    OPERATIONS,
    Submitter,
    TransferJob,
    log_paths,
    work_directory,
)
from hpcgate.server.transfer.records import Lost, Manifest, ObjectState, ObjectView
from hpcgate.server.transfer.scripts import COMPLETING, FAILED
from hpcgate.server.transfer.staging import Staging, s3_unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class Phase(enum.Enum):
    """Where a transfer stands (``hpcgate.v1.TransferPhase`` without prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    WAITING_FOR_CLIENT = "WAITING_FOR_CLIENT"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


# Job states in which a job has not started (or waits to start again).
_WAITING = frozenset(
    {
        JobState.UNSPECIFIED,
        JobState.PENDING,
        JobState.CONFIGURING,
        JobState.REQUEUED,
        JobState.SUSPENDED,
        JobState.STOPPED,
    }
)


@dataclass(frozen=True)
class TransferState:
    """A transfer job together with its staged object, as seen now."""

    job: TransferJob
    operation: str
    phase: Phase
    job_status: JobStatus
    message: str
    manifest: Manifest | None = None
    object: ObjectView | None = None
    # A fresh presigned GET, for a download that is ready (differs every time).
    download_url: str | None = None

    def same_as(self, other: TransferState | None) -> bool:
        """Whether nothing but the freshly signed URL differs from ``other``."""
        return other is not None and replace(self, download_url=None) == replace(
            other, download_url=None
        )


def phase_of(operation: str, status: JobStatus, view: ObjectView | None) -> tuple[Phase, str]:
    """The phase of a transfer from its job's status and its object, and why."""
    state = status.normalized_state
    if state.terminal:
        if state is JobState.COMPLETED and not status.exit_code:
            if operation == "download" and view is not None:
                if view.state is not ObjectState.COMPLETE:
                    return Phase.SUCCEEDED, "the file was staged, but is no longer in the bucket"
                return Phase.SUCCEEDED, "the file is ready to download"
            return Phase.SUCCEEDED, "the job completed successfully"
        code = "" if status.exit_code is None else f", exit code {status.exit_code}"
        return Phase.FAILED, f"the job ended {status.state}{code}: its logs say why"
    if operation == "upload" and view is not None and view.state is ObjectState.UPLOADING:
        return Phase.WAITING_FOR_CLIENT, (
            f"waiting for the client to upload the parts and complete the upload "
            f"({view.parts_uploaded} parts, {view.bytes_uploaded} bytes so far)"
        )
    if view is not None and view.state is ObjectState.ABSENT:
        # Aborted, expired or lost with the store's state: nothing can finish it.
        return Phase.FAILED, "the staged object is gone from S3"
    if state in _WAITING:
        return Phase.QUEUED, f"the job is {status.state}"
    if operation == "download" and view is not None and view.state is ObjectState.UPLOADING:
        return Phase.RUNNING, (
            f"staging the file ({view.parts_uploaded} parts, {view.bytes_uploaded} bytes so far)"
        )
    return Phase.RUNNING, f"the job is {status.state}"


def _own_transfer(sub: Submitter, jobs: Sequence[Job], job_id: int) -> tuple[Job, str]:
    """The caller's transfer job ``job_id`` among ``jobs`` and its operation; NOT_FOUND."""
    job = next((j for j in jobs if j.job_id == job_id), None)
    operation = OPERATIONS.get(job.name) if job is not None else None
    if job is None or operation is None or (job.user is not None and job.user != sub.user):
        raise ServiceError(
            ErrorKind.NOT_FOUND,
            f"job {job_id} is not one of your transfers",
            "TRANSFER_NOT_FOUND",
        )
    return job, operation


# What S3 holds of a staged transfer: its manifest, proof that it is lost, or
# nothing (not a staged transfer).
Records = Manifest | Lost | None


@dataclass(frozen=True)
class _Lookup:
    """A transfer's records, or why S3 could not be asked (it is down)."""

    records: Records
    s3_down: str | None = None

    @property
    def manifest(self) -> Manifest | None:
        return self.records if isinstance(self.records, Manifest) else None


async def _s3(call: Awaitable[T]) -> tuple[T | None, str | None]:
    """``await call``, or (None, why) when S3 is not answering: Slurm still knows the job."""
    try:
        return await call, None
    except ServiceError as error:
        if not s3_unavailable(error):
            raise
        return None, error.message


async def _lookup(staging: Staging | None, sub: Submitter, operation: str, job_id: int) -> _Lookup:
    """The staging records of an upload's or download's job (none for other operations)."""
    if staging is None or operation not in ("upload", "download"):
        return _Lookup(None)
    found, down = await _s3(staging.find(sub.user, job_id))
    return _Lookup(found, down)


async def _cancel(sub: Submitter, job_id: int) -> str:
    """Cancel a transfer's job that can no longer succeed; what happened, for the message."""
    try:
        await sub.jobs.cancel(sub.run, sub.user, job_id)
    except ServiceError as error:
        log.warning("transfer job %d: cannot cancel it: %s", job_id, error.message)
        return f"; cancelling its job failed: {error.message}"
    log.info("transfer job %d cancelled: its staged state is gone from S3", job_id)
    return "; its job was cancelled"


async def _last_said(sub: Submitter, output_log: str) -> str | None:
    """The last line a transfer job logged, without its time stamp (None: unreadable)."""
    try:
        output = await sub.run(["tail", "-n", "1", "--", output_log])
    except ServiceError as error:
        log.warning("cannot read the transfer log %s: %s", output_log, error.message)
        return None
    if output.exit_status != 0:
        return None
    return output.stdout.decode(errors="replace").strip().split(" ", 1)[-1]


async def _absent_by_job(sub: Submitter, output_log: str) -> tuple[Phase, str] | None:
    """The phase of a running transfer whose object is absent by its job's own doing.

    The job's log tells: it is completing the upload (S3 lists neither the
    open upload nor the object meanwhile: seconds, for a large object), or it
    failed and its exit aborted what it staged (the poller has not seen it end
    yet). None when the log says neither: then the object was lost.
    """
    said = await _last_said(sub, output_log)
    if said == COMPLETING:
        return Phase.RUNNING, "the job is completing the staged object in S3"
    if said is not None and said.startswith(FAILED):
        return Phase.FAILED, f"the job failed: {said.removeprefix(FAILED)}"
    return None


async def describe(
    sub: Submitter, staging: Staging | None, job: Job, operation: str, lookup: _Lookup
) -> TransferState:
    """The state of the transfer that ``job`` carries out, its object inspected now.

    An open multipart upload that nothing can finish any more (its job ended,
    or its time is up) is aborted on the way. A transfer whose bucket, record
    or object S3 no longer holds has failed, and its job, if it still waits
    or runs, is cancelled (it would wait for the client until its deadline).
    An object absent by its job's doing (the job logs that it is completing
    the upload, or that it failed) is not lost: such a job is not cancelled.
    While S3 is down, the job's state alone tells the phase.
    """
    manifest, view, s3_down = lookup.manifest, None, lookup.s3_down
    workdir = job.working_directory or work_directory(sub.config, sub.user)
    output_log, error_log = log_paths(workdir, job.job_id)
    running = not job.status.normalized_state.terminal
    if manifest is not None and staging is not None:
        seen, s3_down = await _s3(staging.inspect(manifest))
        if seen is not None:
            view = await staging.settle(manifest, seen, not running)
    if isinstance(lookup.records, Lost):
        phase, message = Phase.FAILED, f"{lookup.records.reason}: the transfer cannot finish"
    else:
        phase, message = phase_of(operation, job.status, view)
    ending = False  # the job has failed and is ending by itself
    if phase is Phase.FAILED and running and manifest is not None and staging is not None:
        if staging.expired(manifest):
            # Its time is up (settle aborted it): the job gives up by itself now
            # and says so in its log, as it does whenever a client never completes.
            phase, message = Phase.RUNNING, "the transfer's time is up; its job is giving up"
        elif (by_job := await _absent_by_job(sub, output_log)) is not None:
            phase, message = by_job
            ending = phase is Phase.FAILED
        elif not await staging.stays_absent(manifest):
            view = await staging.inspect(manifest)  # it was a completion in flight
            phase, message = phase_of(operation, job.status, view)
    if phase is Phase.FAILED and running and not ending:
        message += await _cancel(sub, job.job_id)
    if s3_down is not None:
        message += f" ({s3_down}: the staged object's state is unknown)"
    url = None
    if (
        staging is not None
        and manifest is not None
        and operation == "download"
        and phase is Phase.SUCCEEDED
        and view is not None
        and view.state is ObjectState.COMPLETE
    ):
        url = await staging.download_url(manifest)
    transfer_job = TransferJob(job.job_id, sub.config.name, workdir, output_log, error_log)
    return TransferState(transfer_job, operation, phase, job.status, message, manifest, view, url)


async def get(sub: Submitter, staging: Staging | None, job_id: int) -> TransferState:
    """The state of the caller's transfer job ``job_id`` (NOT_FOUND for anything else)."""
    job, operation = _own_transfer(sub, await sub.jobs.job(sub.run, sub.user, job_id), job_id)
    lookup = await _lookup(staging, sub, operation, job_id)
    return await describe(sub, staging, job, operation, lookup)


async def watch(
    sub: Submitter,
    staging: Staging | None,
    watcher: Subscription,
    job_id: int,
    min_interval: float,
    max_interval: float,
) -> AsyncIterator[TransferState]:
    """The transfer's state now, then each change, until it succeeded or failed.

    Job states come from ``watcher`` (the user's job poller, shared with every
    watch of the user); the object, while it can change without the job
    changing (a client uploading, a job staging), is inspected every
    ``min_interval`` seconds, backing off to ``max_interval`` while nothing
    changes. Records S3 could not be asked for (it was down) are asked for
    again at each poll.
    """
    baseline = await watcher.baseline()
    job, operation = _own_transfer(sub, list(baseline.jobs.values()), job_id)
    lookup = await _lookup(staging, sub, operation, job_id)
    last: TransferState | None = None
    interval = min_interval
    while True:
        if lookup.s3_down is not None:
            lookup = await _lookup(staging, sub, operation, job_id)
        state = await describe(sub, staging, job, operation, lookup)
        if not state.same_as(last):
            yield state
            last, interval = state, min_interval
        else:
            interval = min(interval * 2, max_interval)
        if state.phase.terminal:
            return
        try:
            polling = lookup.manifest is not None or lookup.s3_down is not None
            event = await asyncio.wait_for(watcher.next_event(), interval if polling else None)
        except TimeoutError:
            continue
        if event.job.job_id == job_id:
            job = event.job
