"""The Transfer service's domain: start transfers as jobs, and tell how they stand.

Upload and download go through the system's S3 staging area
(:mod:`.staging`): the server opens a multipart upload, presigns the URLs,
and submits the job that moves the bytes between the bucket and the
filesystem (:mod:`.scripts`). Copy, move, remove, compress and extract are
plain jobs. Everything a request can get wrong is checked before anything
changes: the account and directives, the sizes, the paths (by the caller),
and for upload and download the target's directory and the source file
(one command on the cluster each, as the caller).

:func:`describe` and :func:`watch` combine a transfer's job with its object:
the job says whether the transfer runs, ended well or failed; the object
says how far a client's upload (or the job's staging) has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import command_error
from hpcgate.server.filesystem.parse import tar_compression
from hpcgate.server.scheduler.jobmodels import Job, JobState, JobStatus
from hpcgate.server.scheduler.watch import Subscription
from hpcgate.server.transfer import scripts
from hpcgate.server.transfer.jobs import (
    OPERATIONS,
    Submitter,
    TransferJob,
    log_paths,
    work_directory,
)
from hpcgate.server.transfer.s3 import plan_parts
from hpcgate.server.transfer.staging import (
    DownloadPlan,
    Lost,
    Manifest,
    ObjectState,
    ObjectView,
    Staging,
    UploadPlan,
    s3_unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# A download's part URLs travel in its job script, whose size Slurm bounds
# (4 MB by default): downloads take at most this many parts, larger ones if
# needed. (An upload's parts are the client's business: up to S3's 10,000.)
MAX_DOWNLOAD_PARTS = 1000
UPLOAD_SIZE_FIELD = "transferDirectives.fileSize"

# Checks run on the cluster, as the caller, before an upload or download.
# Failures print the system's own words (stat's "Permission denied", "No
# such file or directory"), which :func:`command_error` classifies; exit
# status 3 means "not a regular file".
_TARGET_CHECK = """
dir=${1%/*}
dir=${dir:-/}
stat -L -c %F -- "$dir" >/dev/null || exit 1
[ -d "$dir" ] || { echo "$dir: Not a directory" >&2; exit 1; }
{ [ -w "$dir" ] && [ -x "$dir" ]; } || { echo "$dir: Permission denied" >&2; exit 1; }
[ -d "$1" ] && { echo "$1: Is a directory" >&2; exit 1; }
exit 0
"""
_SOURCE_CHECK = """
stat -L -c %F -- "$1" >/dev/null || exit 1
[ -f "$1" ] || { echo "$1: not a regular file" >&2; exit 3; }
[ -r "$1" ] || { echo "$1: Permission denied" >&2; exit 1; }
exec stat -L -c %s -- "$1"
"""


async def _check(sub: Submitter, script: str, field: str, path: str) -> bytes:
    """Run a check on ``path``; its stdout, or the error naming ``field`` when bad input."""
    argv = ["sh", "-c", script, "sh", path]
    output = await sub.run(argv)
    if output.exit_status == 0:
        return output.stdout
    if output.exit_status == 3:
        raise invalid_argument(field, f"{path}: not a regular file", "NOT_A_REGULAR_FILE")
    error = command_error(argv, output)
    if error.code == ErrorKind.INVALID_ARGUMENT:
        error.fields = {field: error.message}
    error.metadata.setdefault("path", path)
    raise error


async def _check_target(sub: Submitter, path: str) -> None:
    """The upload's target can be written: its directory exists and the caller may write it."""
    await _check(sub, _TARGET_CHECK, "sourcePath", path)


async def _source_size(sub: Submitter, path: str) -> int:
    """The size of the download's source: a regular file the caller may read."""
    printed = await _check(sub, _SOURCE_CHECK, "sourcePath", path)
    try:
        return int(printed.decode().strip())
    except ValueError:
        raise ServiceError(
            ErrorKind.INTERNAL, f"stat printed {printed[:100]!r}", "COMMAND_FAILED"
        ) from None


async def _submit_staged(
    sub: Submitter, staging: Staging, operation: str, script: str, account: str | None, m: Manifest
) -> TransferJob:
    """Submit a staged transfer's job and link it to its manifest.

    A refused submission aborts the multipart upload it would have used.
    """
    try:
        job = await sub.submit(operation, script, account)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(staging.abort(m))
        raise
    try:
        await staging.link(m, job.job_id)
    except ServiceError as error:  # the job runs anyway; only GetTransfer will not find it
        log.warning("transfer job %d: cannot record its manifest: %s", job.job_id, error.message)
    return job


async def upload(
    sub: Submitter, staging: Staging, path: str, size: int, account: str | None
) -> tuple[TransferJob, UploadPlan]:
    """Open an upload of ``size`` bytes to ``path`` and submit the job that ingests it."""
    directives = sub.directives(account)
    part_size = plan_parts(size, staging.config.max_part_size, UPLOAD_SIZE_FIELD)
    await _confine(sub, sourcePath=path).check_on_cluster(sub.run, [(path, False)])
    await _check_target(sub, path)
    plan = await staging.open_upload(sub.user, path, size, part_size)
    m = plan.manifest
    script = scripts.ingress(
        directives,
        target=path,
        size=size,
        part_size=part_size,
        parts=m.parts,
        give_up_at=int(m.deadline),
        head_url=plan.head_url,
        get_url=plan.get_url,
        abort_url=plan.abort_url,
        parts_url=plan.parts_url,
    )
    return await _submit_staged(sub, staging, "upload", script, account, m), plan


async def download(
    sub: Submitter, staging: Staging, path: str, account: str | None
) -> tuple[TransferJob, DownloadPlan]:
    """Submit the job that stages the file at ``path``; the plan holds the client's URL."""
    directives = sub.directives(account)
    await _confine(sub, sourcePath=path).check_on_cluster(sub.run, [(path, True)])
    size = await _source_size(sub, path)
    part_size = plan_parts(size, staging.config.max_part_size, "sourcePath", MAX_DOWNLOAD_PARTS)
    plan = await staging.open_download(sub.user, path, size, part_size)
    m = plan.manifest
    script = scripts.egress(
        directives,
        source=path,
        size=size,
        part_size=part_size,
        part_urls=plan.part_urls,
        complete_url=plan.complete_url,
        abort_url=plan.abort_url,
        delete_url=plan.delete_url,
    )
    return await _submit_staged(sub, staging, "download", script, account, m), plan


def _confine(sub: Submitter, **fields: str) -> Confine:
    """The system's confinement, knowing which field (keyword) named which path (value)."""
    return Confine.of(sub.config, {path: field for field, path in fields.items()})


def _roots(sub: Submitter) -> list[str]:
    return list(Confine.of(sub.config).roots)


async def _two_paths(sub: Submitter, source: str, target: str, follow_source: bool) -> None:
    """Refuse now a source or target leading outside (the job checks again when it runs)."""
    confine = _confine(sub, sourcePath=source, targetPath=target)
    await confine.check_on_cluster(sub.run, [(source, follow_source), (target, True)])


async def cp(
    sub: Submitter, source: str, target: str, dereference: bool, account: str | None
) -> TransferJob:
    """Copy ``source`` (a file or a tree) to ``target`` in a job."""
    directives = sub.directives(account)  # bad input is refused before the cluster is asked
    await _two_paths(sub, source, target, follow_source=True)
    script = scripts.cp(directives, source, target, dereference, roots=_roots(sub))
    return await sub.submit("cp", script, account)


async def mv(sub: Submitter, source: str, target: str, account: str | None) -> TransferJob:
    """Move ``source`` to ``target`` in a job."""
    directives = sub.directives(account)
    await _two_paths(sub, source, target, follow_source=False)
    script = scripts.mv(directives, source, target, roots=_roots(sub))
    return await sub.submit("mv", script, account)


async def rm(sub: Submitter, path: str, account: str | None) -> TransferJob:
    """Remove ``path`` (a file or a tree) in a job; a filesystem's root never."""
    roots = {fs.path.rstrip("/") or "/" for fs in sub.config.filesystems}
    if (path.rstrip("/") or "/") in roots:
        raise invalid_argument("path", f"{path!r} is a filesystem root", "PATH_IS_ROOT")
    directives = sub.directives(account)
    await _confine(sub, path=path).check_on_cluster(sub.run, [(path, False)])
    return await sub.submit("rm", scripts.rm(directives, path, roots=_roots(sub)), account)


async def compress(
    sub: Submitter,
    source: str,
    target: str,
    *,
    match_pattern: str | None,
    dereference: bool,
    compression: str,
    account: str | None,
) -> TransferJob:
    """Archive ``source`` into ``target`` in a job (see :func:`.scripts.compress`)."""
    if match_pattern is not None and "\x00" in match_pattern:
        raise invalid_argument("matchPattern", "must not contain NUL")
    directives = sub.directives(account)
    tar_compression(compression)  # refused before the cluster is asked
    await _two_paths(sub, source, target, follow_source=False)
    script = scripts.compress(
        directives,
        source,
        target,
        match_pattern=match_pattern,
        dereference=dereference,
        compression=compression,
        roots=_roots(sub),
    )
    return await sub.submit("compress", script, account)


async def extract(
    sub: Submitter, source: str, target: str, compression: str, account: str | None
) -> TransferJob:
    """Extract the archive ``source`` into the directory ``target`` in a job.

    The archive's members are judged now, as the Filesystem service's extract
    does (:func:`.archive.check`); the job checks its paths again when it runs.
    """
    directives = sub.directives(account)
    flags = tar_compression(compression)
    confine = _confine(sub, sourcePath=source, targetPath=target)
    await archive.check(sub.run, confine, source, target, flags)
    script = scripts.extract(directives, source, target, compression, roots=_roots(sub))
    return await sub.submit("extract", script, account)


# -- how a transfer stands ------------------------------------------------------------------


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
        await sub.jobs.cancel(sub.run, job_id)
    except ServiceError as error:
        log.warning("transfer job %d: cannot cancel it: %s", job_id, error.message)
        return f"; cancelling its job failed: {error.message}"
    log.info("transfer job %d cancelled: its staged state is gone from S3", job_id)
    return "; its job was cancelled"


async def describe(
    sub: Submitter, staging: Staging | None, job: Job, operation: str, lookup: _Lookup
) -> TransferState:
    """The state of the transfer that ``job`` carries out, its object inspected now.

    An open multipart upload that nothing can finish any more (its job ended,
    or its time is up) is aborted on the way. A transfer whose bucket, record
    or object S3 no longer holds has failed, and its job, if it still waits
    or runs, is cancelled (it would wait for the client until its deadline).
    While S3 is down, the job's state alone tells the phase.
    """
    manifest, view, s3_down = lookup.manifest, None, lookup.s3_down
    running = not job.status.normalized_state.terminal
    if manifest is not None and staging is not None:
        seen, s3_down = await _s3(staging.inspect(manifest))
        if seen is not None:
            view = await staging.settle(manifest, seen, not running)
    if isinstance(lookup.records, Lost):
        phase, message = Phase.FAILED, f"{lookup.records.reason}: the transfer cannot finish"
    else:
        phase, message = phase_of(operation, job.status, view)
    if phase is Phase.FAILED and running and manifest is not None and staging is not None:
        if staging.expired(manifest):
            # Its time is up (settle aborted it): the job gives up by itself now
            # and says so in its log, as it does whenever a client never completes.
            phase, message = Phase.RUNNING, "the transfer's time is up; its job is giving up"
        elif not await staging.stays_absent(manifest):
            view = await staging.inspect(manifest)  # it was a completion in flight
            phase, message = phase_of(operation, job.status, view)
    if phase is Phase.FAILED and running:
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
    workdir = job.working_directory or work_directory(sub.config, sub.user)
    output_log, error_log = log_paths(workdir, job.job_id)
    transfer_job = TransferJob(job.job_id, sub.config.name, workdir, output_log, error_log)
    return TransferState(transfer_job, operation, phase, job.status, message, manifest, view, url)


async def get(sub: Submitter, staging: Staging | None, job_id: int) -> TransferState:
    """The state of the caller's transfer job ``job_id`` (NOT_FOUND for anything else)."""
    job, operation = _own_transfer(sub, await sub.jobs.job(sub.run, job_id), job_id)
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
