"""The Transfer service's domain: start transfers as jobs.

Upload and download go through the system's S3 staging area
(:mod:`.staging`): the server opens a multipart upload, presigns the URLs,
and submits the job that moves the bytes between the bucket and the
filesystem (:mod:`.scripts`); or, with the streamer method, the job runs a
websocket server the client streams with (:mod:`.streamer`); or, with the
wormhole method, the job runs ``wormhole receive`` or ``send`` with a code
the client sent or the server made (:mod:`.wormhole`). Copy, move,
remove, compress and extract are plain jobs. Everything a request can get
wrong is checked before anything changes: the account and directives, the
sizes, the paths (by the caller), and for upload and download the target's
directory and the source file (one command on the cluster each, as the
caller).

How a transfer stands once started is :mod:`.progress`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import command_error
from hpcgate.server.filesystem.parse import tar_compression
from hpcgate.server.transfer import scripts, streamer, wormhole
from hpcgate.server.transfer.jobs import Submitter, TransferJob
from hpcgate.server.transfer.records import DownloadPlan, Manifest, UploadPlan
from hpcgate.server.transfer.s3 import plan_parts
from hpcgate.server.transfer.staging import Staging
from hpcgate.server.transferconfig import StreamerMethodConfig, WormholeMethodConfig

log = logging.getLogger(__name__)

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


async def _download_source(sub: Submitter, path: str, account: str | None) -> tuple[list[str], int]:
    """A download's directives and its source's size, once the source passed its checks."""
    directives = sub.directives(account)
    await _confine(sub, sourcePath=path).check_on_cluster(sub.run, [(path, True)])
    return directives, await _source_size(sub, path)


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
    directives, size = await _download_source(sub, path, account)
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


async def _streamer(
    sub: Submitter,
    method: StreamerMethodConfig,
    operation: str,
    script: str,
    secret: str,
    account: str | None,
) -> tuple[TransferJob, str]:
    """Submit a streamer job; the job and the coordinates, once it listens (or waited enough)."""
    job = await sub.submit(operation, script, account)
    port = await streamer.wait_listening(sub.run, job.output_log, method.listen_timeout)
    ports = (port, port) if port is not None else method.port_range
    return job, streamer.coordinates(ports, method.public_ips, secret)


async def streamer_upload(
    sub: Submitter, method: StreamerMethodConfig, path: str, size: int, account: str | None
) -> tuple[TransferJob, str]:
    """Submit the job whose streamer server receives ``size`` bytes for ``path``."""
    directives = sub.directives(account)
    if size > method.inbound_transfer_limit:
        raise invalid_argument(
            UPLOAD_SIZE_FIELD,
            f"{size} bytes exceed this system's inbound transfer limit of "
            f"{method.inbound_transfer_limit} bytes",
            "TRANSFER_TOO_LARGE",
        )
    await _confine(sub, sourcePath=path).check_on_cluster(sub.run, [(path, False)])
    await _check_target(sub, path)
    secret = streamer.new_secret()
    script = scripts.streamer(
        directives, direction="receive", path=path, size=size, secret=secret, method=method
    )
    return await _streamer(sub, method, "upload", script, secret, account)


async def streamer_download(
    sub: Submitter, method: StreamerMethodConfig, path: str, account: str | None
) -> tuple[TransferJob, str]:
    """Submit the job whose streamer server sends the file at ``path``."""
    directives, size = await _download_source(sub, path, account)
    secret = streamer.new_secret()
    script = scripts.streamer(
        directives, direction="send", path=path, size=size, secret=secret, method=method
    )
    return await _streamer(sub, method, "download", script, secret, account)


async def wormhole_upload(
    sub: Submitter, method: WormholeMethodConfig, path: str, code: str | None, account: str | None
) -> TransferJob:
    """Submit the job that receives the client's file for ``path`` with the client's ``code``."""
    directives = sub.directives(account)
    code = wormhole.client_code(code)
    await _confine(sub, sourcePath=path).check_on_cluster(sub.run, [(path, False)])
    await _check_target(sub, path)
    script = scripts.wormhole(directives, direction="receive", path=path, code=code, method=method)
    return await sub.submit("upload", script, account)


async def wormhole_download(
    sub: Submitter, method: WormholeMethodConfig, path: str, account: str | None
) -> tuple[TransferJob, str]:
    """Submit the job that sends the file at ``path``; the job, and the code to receive with."""
    directives, _ = await _download_source(sub, path, account)
    code = wormhole.new_code()
    script = scripts.wormhole(directives, direction="send", path=path, code=code, method=method)
    return await sub.submit("download", script, account), code


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
