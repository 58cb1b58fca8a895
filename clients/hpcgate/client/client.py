"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for one hpcgate server.

Both expose the four services as their generated, typed stubs
(``client.status``, ``.filesystem``, ``.scheduler``, ``.transfer``) whose
errors are :class:`HpcgateError`, and add what callers otherwise write
themselves: ``submit`` returning a job handle (``wait``/``watch``),
``upload``/``download`` over the streams with progress callbacks, and
``download_many`` over ``BulkDownload``. ``system`` is the default
``system_name`` of these helpers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import grpc

from hpcgate.client import resume, staged
from hpcgate.client.channel import CallPolicy, aio_channel, channel_credentials, sync_channel
from hpcgate.client.credentials import StaticToken, TokenSource
from hpcgate.client.errors import HpcgateError
from hpcgate.client.files import (
    BulkResult,
    BulkWriter,
    Progress,
    StreamWriter,
    upload_requests,
)
from hpcgate.client.guard import Guarded
from hpcgate.client.jobs import AsyncJob, Job
from hpcgate.v1 import (
    filesystem_pb2,
    filesystem_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    status_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)

# Files larger than this go through the staged S3 transfer by default.
STAGE_ABOVE = 1024 * 1024 * 1024


class _Base:
    """What both clients share: target, token, TLS, policy, default system."""

    def __init__(
        self,
        target: str,
        token: TokenSource | str,
        *,
        system: str | None = None,
        tls: bool = False,
        root_certificates: Path | None = None,
        certificate_chain: Path | None = None,
        private_key: Path | None = None,
        policy: CallPolicy | None = None,
        stage_above: int | None = STAGE_ABOVE,
        account: str | None = None,
        resume_dir: Path | None = None,
    ) -> None:
        self.target = target
        self.stage_above = stage_above
        self.account = account
        # Where staged uploads keep their parts' state (see resume.default_dir).
        self.resume_dir = Path(resume_dir) if resume_dir else resume.default_dir()
        self.token = StaticToken(token) if isinstance(token, str) else token
        self.default_system = system
        self.policy = policy or CallPolicy()
        self._credentials = channel_credentials(
            self.token,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
        )

    def resolve_system(self, system: str | None) -> str:
        """``system``, or the client's default one; an error when neither is set."""
        chosen = system or self.default_system
        if not chosen:
            raise ValueError("system: give one here or as the client's default")
        return chosen

    @staticmethod
    def _job_request(
        system: str,
        script: str | None,
        script_path: str | None,
        working_directory: str,
        fields: dict[str, Any],
    ) -> scheduler_pb2.SubmitJobRequest:
        if (script is None) == (script_path is None):
            raise ValueError("give exactly one of script and script_path")
        job = scheduler_pb2.JobDescriptionModel(working_directory=working_directory, **fields)
        if script is not None:
            job.script = script
        else:
            job.script_path = cast(str, script_path)
        return scheduler_pb2.SubmitJobRequest(system_name=system, job=job)

    def _stage_upload_request(
        self, system: str, remote: str, size: int
    ) -> transfer_pb2.TransferUploadRequest:
        directives = transfer_pb2.TransferDirectivesParams(transfer_method="s3", file_size=size)
        return transfer_pb2.TransferUploadRequest(
            system_name=system, path=remote, account=self.account, transfer_directives=directives
        )

    def _stage_download_request(
        self, system: str, remote: str
    ) -> transfer_pb2.TransferDownloadRequest:
        directives = transfer_pb2.TransferDirectivesParams(transfer_method="s3")
        return transfer_pb2.TransferDownloadRequest(
            system_name=system,
            source_path=remote,
            account=self.account,
            transfer_directives=directives,
        )

    def _stages(self, size: int) -> bool:
        return self.stage_above is not None and size > self.stage_above

    @staticmethod
    def _bulk_request(
        system: str, paths: Sequence[str], chunk_size: int
    ) -> filesystem_pb2.BulkDownloadRequest:
        return filesystem_pb2.BulkDownloadRequest(
            system_name=system,
            files=filesystem_pb2.BulkDownloadFiles(paths=list(paths)),
            chunk_size=chunk_size,
        )


class Client(_Base):
    """A blocking client; use as a context manager or call ``close()``."""

    status: status_pb2_grpc.StatusStub
    filesystem: filesystem_pb2_grpc.FilesystemStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    transfer: transfer_pb2_grpc.TransferStub

    def __init__(self, target: str, token: TokenSource | str, **options: Any) -> None:
        """Connect to ``target`` (host:port); options as :class:`_Base` takes them."""
        super().__init__(target, token, **options)
        self.channel: grpc.Channel = sync_channel(target, self._credentials, self.policy)
        self.status = cast(
            Any, Guarded(status_pb2_grpc.StatusStub(self.channel), asynchronous=False)
        )
        self.filesystem = cast(
            Any, Guarded(filesystem_pb2_grpc.FilesystemStub(self.channel), asynchronous=False)
        )
        self.scheduler = cast(
            Any, Guarded(scheduler_pb2_grpc.SchedulerStub(self.channel), asynchronous=False)
        )
        self.transfer = cast(
            Any, Guarded(transfer_pb2_grpc.TransferStub(self.channel), asynchronous=False)
        )

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def submit(
        self,
        script: str | None = None,
        *,
        script_path: str | None = None,
        working_directory: str,
        system: str | None = None,
        **fields: Any,
    ) -> Job:
        """Submit a batch job (inline ``script`` or a remote ``script_path``); returns its handle.

        ``fields`` are further ``JobDescriptionModel`` fields (name, account, env, ...).
        """
        chosen = self.resolve_system(system)
        request = self._job_request(chosen, script, script_path, working_directory, fields)
        return Job(self, chosen, self.scheduler.SubmitJob(request).job_id)

    def job(self, job_id: int, *, system: str | None = None) -> Job:
        """A handle on an existing job."""
        return Job(self, self.resolve_system(system), job_id)

    def upload(
        self,
        local: str | Path,
        remote: str,
        *,
        system: str | None = None,
        overwrite: bool = True,
        progress: Progress | None = None,
    ) -> filesystem_pb2.UploadStreamResponse:
        """Upload a local file over ``UploadStream`` (SHA-256 checked by the server).

        Above ``stage_above`` bytes it goes through :meth:`upload_staged` instead.
        """
        chosen, path = self.resolve_system(system), Path(local)
        if self._stages(path.stat().st_size):
            self.upload_staged(path, remote, system=chosen, progress=progress)
            return filesystem_pb2.UploadStreamResponse(
                path=remote, size=path.stat().st_size, sha256=_sha256(path)
            )
        requests = upload_requests(path, chosen, remote, overwrite=overwrite, progress=progress)
        return self.filesystem.UploadStream(requests)

    def upload_staged(
        self,
        local: str | Path,
        remote: str,
        *,
        system: str | None = None,
        parallel: int = 4,
        progress: Progress | None = None,
    ) -> transfer_pb2.TransferStatus:
        """Upload through S3: parallel, individually retried parts, then the mover job.

        Resumable: the parts S3 stored are recorded under ``resume_dir``; an
        upload of the same file to the same place (this process or a later
        one, after a crash) sends only the others while its transfer still
        waits for them. Waits for the job and compares the remote file's
        SHA-256 with the local one.
        """
        chosen, path = self.resolve_system(system), Path(local)
        identity = resume.Identity.of(self.target, chosen, remote, path)
        state = resume.UploadState.load(self.resume_dir, identity)
        if state is not None and not self._waits(chosen, state.job_id):
            state.remove()
            state = None
        if state is None:
            started = self.transfer.Upload(
                self._stage_upload_request(chosen, remote, identity.size)
            )
            state = resume.UploadState.begin(self.resume_dir, identity, started)
        staged.put_parts(state, path, parallel=parallel, progress=progress)
        state.remove()
        watch = transfer_pb2.WatchTransferRequest(system_name=chosen, job_id=state.job_id)
        status = staged.final(self.transfer.WatchTransfer(watch))
        staged.check(self._remote_sha256(chosen, remote), _sha256(path), path)
        return status

    def _waits(self, system: str, job_id: int) -> bool:
        """Whether the transfer ``job_id`` still waits for its client's parts."""
        request = transfer_pb2.GetTransferRequest(system_name=system, job_id=job_id)
        try:
            return self.transfer.GetTransfer(request).transfer.phase in resume.WAITING
        except HpcgateError:
            return False

    def download_staged(
        self,
        remote: str,
        local: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download through S3: a job stages the file, then one GET; SHA-256 checked."""
        chosen, path = self.resolve_system(system), Path(local)
        started = self.transfer.Download(self._stage_download_request(chosen, remote))
        watch = transfer_pb2.WatchTransferRequest(
            system_name=chosen, job_id=started.transfer_job.job_id
        )
        status = staged.final(self.transfer.WatchTransfer(watch))
        url = status.transfer_directives.download_url or started.transfer_directives.download_url
        staged.check(self._remote_sha256(chosen, remote), staged.fetch(url, path, progress), path)
        return path

    def _remote_sha256(self, system: str, remote: str) -> str:
        request = filesystem_pb2.ChecksumRequest(system_name=system, path=remote)
        return self.filesystem.Checksum(request).output.checksum

    def download(
        self,
        remote: str,
        local: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download a remote file over ``DownloadStream``; checks its SHA-256.

        Above ``stage_above`` bytes (one ``Stat`` tells) it goes through
        :meth:`download_staged` instead.
        """
        chosen = self.resolve_system(system)
        if self.stage_above is not None:
            stat = filesystem_pb2.StatRequest(system_name=chosen, path=remote)
            if self._stages(self.filesystem.Stat(stat).output.size):
                return self.download_staged(remote, local, system=chosen, progress=progress)
        request = filesystem_pb2.DownloadStreamRequest(system_name=chosen, path=remote)
        writer = StreamWriter(Path(local), progress)
        try:
            for message in self.filesystem.DownloadStream(request):
                writer.feed(message)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def download_many(
        self,
        paths: Sequence[str],
        into: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
        total: int | None = None,
        chunk_size: int = 0,
    ) -> BulkResult:
        """Download many files in one ``BulkDownload`` stream into ``into``, each SHA-256 checked.

        ``progress`` gets the bytes received so far (and ``total`` if given).
        """
        writer = BulkWriter(Path(into), progress, total)
        for response in self.filesystem.BulkDownload(
            self._bulk_request(self.resolve_system(system), paths, chunk_size)
        ):
            writer.feed(response)
        return writer.result


class AsyncClient(_Base):
    """An asyncio client; use as an async context manager or ``await close()``."""

    status: status_pb2_grpc.StatusAsyncStub
    filesystem: filesystem_pb2_grpc.FilesystemAsyncStub
    scheduler: scheduler_pb2_grpc.SchedulerAsyncStub
    transfer: transfer_pb2_grpc.TransferAsyncStub

    def __init__(self, target: str, token: TokenSource | str, **options: Any) -> None:
        """Connect to ``target`` (host:port); options as ``Client`` takes them."""
        super().__init__(target, token, **options)
        self.channel: grpc.aio.Channel = aio_channel(target, self._credentials, self.policy)
        self.status = cast(
            Any, Guarded(status_pb2_grpc.StatusStub(self.channel), asynchronous=True)
        )
        self.filesystem = cast(
            Any, Guarded(filesystem_pb2_grpc.FilesystemStub(self.channel), asynchronous=True)
        )
        self.scheduler = cast(
            Any, Guarded(scheduler_pb2_grpc.SchedulerStub(self.channel), asynchronous=True)
        )
        self.transfer = cast(
            Any, Guarded(transfer_pb2_grpc.TransferStub(self.channel), asynchronous=True)
        )

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def submit(
        self,
        script: str | None = None,
        *,
        script_path: str | None = None,
        working_directory: str,
        system: str | None = None,
        **fields: Any,
    ) -> AsyncJob:
        """Submit a batch job; as :meth:`Client.submit`."""
        chosen = self.resolve_system(system)
        request = self._job_request(chosen, script, script_path, working_directory, fields)
        return AsyncJob(self, chosen, (await self.scheduler.SubmitJob(request)).job_id)

    def job(self, job_id: int, *, system: str | None = None) -> AsyncJob:
        """A handle on an existing job."""
        return AsyncJob(self, self.resolve_system(system), job_id)

    async def upload(
        self,
        local: str | Path,
        remote: str,
        *,
        system: str | None = None,
        overwrite: bool = True,
        progress: Progress | None = None,
    ) -> filesystem_pb2.UploadStreamResponse:
        """As :meth:`Client.upload` (the file is read between the sends, in chunks)."""
        chosen, path = self.resolve_system(system), Path(local)
        size = _size(path)
        if self._stages(size):
            await self.upload_staged(path, remote, system=chosen, progress=progress)
            digest = await asyncio.to_thread(_sha256, path)
            return filesystem_pb2.UploadStreamResponse(path=remote, size=size, sha256=digest)
        requests = upload_requests(path, chosen, remote, overwrite=overwrite, progress=progress)
        return await self.filesystem.UploadStream(requests)

    async def upload_staged(
        self,
        local: str | Path,
        remote: str,
        *,
        system: str | None = None,
        parallel: int = 4,
        progress: Progress | None = None,
    ) -> transfer_pb2.TransferStatus:
        """As :meth:`Client.upload_staged` (the HTTP parts run in worker threads)."""
        chosen, path = self.resolve_system(system), Path(local)
        identity = await asyncio.to_thread(resume.Identity.of, self.target, chosen, remote, path)
        state = await asyncio.to_thread(resume.UploadState.load, self.resume_dir, identity)
        if state is not None and not await self._waits(chosen, state.job_id):
            state.remove()
            state = None
        if state is None:
            started = await self.transfer.Upload(
                self._stage_upload_request(chosen, remote, identity.size)
            )
            state = await asyncio.to_thread(
                resume.UploadState.begin, self.resume_dir, identity, started
            )
        await asyncio.to_thread(staged.put_parts, state, path, parallel=parallel, progress=progress)
        state.remove()
        status = await self._final(chosen, state.job_id)
        expected = await self._remote_sha256(chosen, remote)
        staged.check(expected, await asyncio.to_thread(_sha256, path), path)
        return status

    async def download_staged(
        self,
        remote: str,
        local: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """As :meth:`Client.download_staged`."""
        chosen, path = self.resolve_system(system), Path(local)
        started = await self.transfer.Download(self._stage_download_request(chosen, remote))
        status = await self._final(chosen, started.transfer_job.job_id)
        url = status.transfer_directives.download_url or started.transfer_directives.download_url
        got = await asyncio.to_thread(staged.fetch, url, path, progress)
        staged.check(await self._remote_sha256(chosen, remote), got, path)
        return path

    async def _waits(self, system: str, job_id: int) -> bool:
        """As :meth:`Client._waits`."""
        request = transfer_pb2.GetTransferRequest(system_name=system, job_id=job_id)
        try:
            return (await self.transfer.GetTransfer(request)).transfer.phase in resume.WAITING
        except HpcgateError:
            return False

    async def _final(self, system: str, job_id: int) -> transfer_pb2.TransferStatus:
        watch = transfer_pb2.WatchTransferRequest(system_name=system, job_id=job_id)
        states = [event async for event in self.transfer.WatchTransfer(watch)]
        return staged.final(states)

    async def _remote_sha256(self, system: str, remote: str) -> str:
        request = filesystem_pb2.ChecksumRequest(system_name=system, path=remote)
        return (await self.filesystem.Checksum(request)).output.checksum

    async def download(
        self,
        remote: str,
        local: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """As :meth:`Client.download`."""
        chosen = self.resolve_system(system)
        if self.stage_above is not None:
            stat = filesystem_pb2.StatRequest(system_name=chosen, path=remote)
            if self._stages((await self.filesystem.Stat(stat)).output.size):
                return await self.download_staged(remote, local, system=chosen, progress=progress)
        request = filesystem_pb2.DownloadStreamRequest(system_name=chosen, path=remote)
        writer = StreamWriter(Path(local), progress)
        try:
            async for message in self.filesystem.DownloadStream(request):
                writer.feed(message)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    async def download_many(
        self,
        paths: Sequence[str],
        into: str | Path,
        *,
        system: str | None = None,
        progress: Progress | None = None,
        total: int | None = None,
        chunk_size: int = 0,
    ) -> BulkResult:
        """As :meth:`Client.download_many`."""
        writer = BulkWriter(Path(into), progress, total)
        async for response in self.filesystem.BulkDownload(
            self._bulk_request(self.resolve_system(system), paths, chunk_size)
        ):
            writer.feed(response)
        return writer.result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return os.stat(path).st_size
