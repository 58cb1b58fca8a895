"""Large files through the staged S3 transfer (FirecREST v2's ``transfer/``).

Upload: ``Transfer.Upload`` answers with presigned part URLs; the parts are
PUT in parallel threads, each retried on its own (a failed part is resent,
the parts already stored are kept: the upload resumes, it does not restart;
their ETags go to a state file, :mod:`.resume`, so a new process resumes too),
then the CompleteMultipartUpload document is POSTed and a Slurm job moves the
object into place. Download: ``Transfer.Download`` runs a job that stages the
file in S3, then one GET of the presigned URL streams it to disk. Both wait
for the job through ``WatchTransfer``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpcgate.client.errors import HpcgateError, IntegrityError
from hpcgate.client.files import Progress
from hpcgate.client.resume import UploadState
from hpcgate.v1 import transfer_pb2

T = transfer_pb2
ENDED = {T.TRANSFER_PHASE_SUCCEEDED, T.TRANSFER_PHASE_FAILED}
PART_ATTEMPTS = 4
HTTP_TIMEOUT = 300.0
READ = 1024 * 1024
_OCTETS = {"Content-Type": "application/octet-stream"}


class TransferError(HpcgateError):
    """The staged transfer's job ended without success; ``message`` says why."""


class _Counter:
    """Bytes done across threads, reported to ``progress`` in order."""

    def __init__(self, total: int, progress: Progress | None, done: int = 0) -> None:
        self.total = total
        self.done = done
        self._lock = threading.Lock()
        self._progress = progress
        if progress:
            progress(done, total)

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            if self._progress:
                self._progress(self.done, self.total)


def _put_part(url: str, local: Path, offset: int, size: int) -> str:
    """PUT one part; its ETag. Retried with backoff: only this part is resent."""
    for attempt in range(PART_ATTEMPTS):
        with local.open("rb") as source:
            source.seek(offset)
            body = source.read(size)
        # urllib would label the body a form, which S3 servers may parse as one.
        request = urllib.request.Request(url, data=body, method="PUT", headers=_OCTETS)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                return str(answer.headers["ETag"])
        except OSError:
            if attempt == PART_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def put_parts(
    state: UploadState,
    local: Path,
    *,
    parallel: int,
    progress: Progress | None,
) -> None:
    """Upload the parts of ``local`` that ``state`` lacks, ``parallel`` at a time; complete it.

    Each part's ETag is recorded in ``state`` (its file) as soon as S3 stored
    it, so a later attempt, in another process too, sends only the rest.
    """
    directives = state.directives
    total = local.stat().st_size
    part = directives.max_part_size or total or 1
    urls = list(directives.parts_upload_urls)

    def size_of(index: int) -> int:
        return max(0, min(part, total - index * part))

    etags = {i: etag for i, etag in state.etags.items() if i < len(urls)}
    counter = _Counter(total, progress, sum(size_of(i) for i in etags))

    def one(index: int) -> None:
        etag = _put_part(urls[index], local, index * part, size_of(index))
        state.record(index, etag)
        etags[index] = etag
        counter.add(size_of(index))

    missing = [index for index in range(len(urls)) if index not in etags]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, missing))
    parts = "".join(
        f"<Part><ETag>{etags[index]}</ETag><PartNumber>{index + 1}</PartNumber></Part>"
        for index in range(len(urls))
    )
    document = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
    request = urllib.request.Request(
        directives.complete_upload_url,
        data=document,
        method="POST",
        headers={"Content-Type": "application/xml"},
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):
            pass
    except urllib.error.HTTPError as error:
        if error.code == 400:  # S3 refuses the parts listed: resuming them cannot work
            state.remove()
        raise


def fetch(url: str, local: Path, progress: Progress | None) -> str:
    """GET the presigned ``url`` into ``local`` (via a temporary name); its SHA-256."""
    partial = local.with_name(f".{local.name}.partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer, partial.open("wb") as out:
        total = int(answer.headers.get("Content-Length", 0)) or None
        done = 0
        if progress:
            progress(0, total)
        while chunk := answer.read(READ):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    os.replace(partial, local)
    return digest.hexdigest()


def final(states: Iterable[transfer_pb2.WatchTransferResponse]) -> transfer_pb2.TransferStatus:
    """The last state of a WatchTransfer stream; ``TransferError`` unless it succeeded."""
    last: transfer_pb2.TransferStatus | None = None
    for event in states:
        last = event.transfer
        if last.phase in ENDED:
            break
    if last is None or last.phase != T.TRANSFER_PHASE_SUCCEEDED:
        message = last.message if last else "the watch ended without a state"
        raise TransferError(f"staged transfer failed: {message}")
    return last


def check(expected: str, got: str, local: Path) -> None:
    """``IntegrityError`` when the digests differ."""
    if expected and expected != got:
        raise IntegrityError(f"{local}: SHA-256 differs from the remote file's")


Checksum = Callable[[], str]
