"""The Transfer service: FirecREST's ``transfer`` endpoints, plus GetTransfer and WatchTransfer.

Each RPC begins its call (:mod:`.call`: system, caller, health needs,
deadline), checks every path against the path policy (naming the field by
its JSON name) and the request's own fields, calls one function of
:mod:`hpcgate.server.transfer.service` (to start a transfer) or
:mod:`hpcgate.server.transfer.progress` (to tell how one stands), and maps
the result to its message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.rpc.context import Context
from hpcgate.server.runtime import Runtime
from hpcgate.server.servicers.call import Call, begin
from hpcgate.server.servicers.convert import job_id, timestamp
from hpcgate.server.transfer import progress, service
from hpcgate.server.transfer.jobs import Submitter, TransferJob
from hpcgate.server.transfer.progress import TransferState
from hpcgate.server.transfer.records import ObjectState
from hpcgate.server.transfer.staging import Staging
from hpcgate.server.transferconfig import (
    AnyMethodConfig,
    StreamerMethodConfig,
    WormholeMethodConfig,
)
from hpcgate.v1 import scheduler_pb2, transfer_pb2, transfer_pb2_grpc

S3_METHOD = "s3"
METHOD_FIELD = "transferDirectives.transferMethod"
# FirecREST's words for a method the system does not offer (clients match on them).
METHOD_UNAVAILABLE = "Requested transfer method is not available."


def _transfer_job(job: TransferJob) -> transfer_pb2.TransferJob:
    return transfer_pb2.TransferJob(
        job_id=job.job_id,
        system=job.system,
        working_directory=job.working_directory,
        logs=transfer_pb2.TransferJobLogs(output_log=job.output_log, error_log=job.error_log),
    )


def _account(request: Any) -> str | None:
    """The request's account; an empty one counts as none."""
    account: str = request.account
    return account if request.HasField("account") and account else None


def _method(call: Call, params: transfer_pb2.TransferDirectivesParams) -> AnyMethodConfig:
    """The configured method the request asks for; an unset one means the system's default."""
    offered = call.config.transfer_methods
    wanted = params.transfer_method or (offered[0].service_type if offered else S3_METHOD)
    for method in offered:
        if method.service_type == wanted:
            return method
    names = ", ".join(m.service_type for m in offered) or "none"
    raise ServiceError(
        ErrorKind.INVALID_ARGUMENT,
        METHOD_UNAVAILABLE,
        "TRANSFER_METHOD_UNAVAILABLE",
        fields={METHOD_FIELD: f"{wanted!r} is not offered on {call.config.name} ({names} is)"},
    )


def _status(state: TransferState) -> transfer_pb2.TransferStatus:
    """The TransferStatus message of ``state``."""
    status = state.job_status
    message = transfer_pb2.TransferStatus(
        transfer_job=_transfer_job(state.job),
        operation=state.operation,
        phase=transfer_pb2.TransferPhase.Value(f"TRANSFER_PHASE_{state.phase.value}"),
        message=state.message,
        job_state=scheduler_pb2.JobState.Value(f"JOB_STATE_{status.normalized_state.value}"),
        scheduler_state=status.state,
        exit_code=status.exit_code,
    )
    manifest, view = state.manifest, state.object
    if manifest is not None:
        known = view.state if view else ObjectState.UNSPECIFIED
        message.object.CopyFrom(
            transfer_pb2.TransferObject(
                bucket=manifest.bucket,
                key=manifest.key,
                state=transfer_pb2.TransferObjectState.Value(
                    f"TRANSFER_OBJECT_STATE_{known.value}"
                ),
                size=manifest.size,
                part_size=manifest.part_size,
                parts=manifest.parts,
                parts_uploaded=view.parts_uploaded if view else 0,
                bytes_uploaded=view.bytes_uploaded if view else 0,
                etag=view.etag if view else None,
                deadline=timestamp(manifest.deadline),
            )
        )
    if state.download_url is not None:
        message.transfer_directives.CopyFrom(
            transfer_pb2.TransferDirectives(
                transfer_method=S3_METHOD, download_url=state.download_url
            )
        )
    return message


def _streamer_directives(coordinates: str) -> transfer_pb2.TransferDirectives:
    return transfer_pb2.TransferDirectives(transfer_method="streamer", coordinates=coordinates)


def _wormhole_directives(code: str | None = None) -> transfer_pb2.TransferDirectives:
    """FirecREST's WormholeTransferResponse: a download's code (an upload's is the client's)."""
    return transfer_pb2.TransferDirectives(transfer_method="wormhole", wormhole_code=code)


class TransferServicer(transfer_pb2_grpc.TransferServicer):
    """Serves the Transfer RPCs as jobs of the caller (s3 through the system's staging area)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def _begin(self, system_name: str, context: Context) -> tuple[Call, Submitter]:
        call = begin(self._runtime, system_name, context)
        return call, call.submitter()

    @staticmethod
    def _staging(call: Call) -> Staging:
        """The system's staging area, if S3 is healthy; FAILED_PRECONDITION when it has no S3.

        The s3 method's own need: the RPC's declared ones (ssh, scheduler)
        are those of every method.
        """
        call.system.health.require("s3")
        if call.system.staging is None:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"{call.system.config.name} has no S3 staging area: large transfers are off",
                "TRANSFER_NOT_CONFIGURED",
            )
        return call.system.staging

    async def Upload(
        self, request: transfer_pb2.TransferUploadRequest, context: Context
    ) -> transfer_pb2.TransferUploadResponse:
        call, sub = self._begin(request.system_name, context)
        path = call.path("sourcePath", request.path)
        params = request.transfer_directives
        method = _method(call, params)
        if isinstance(method, WormholeMethodConfig):
            code = params.wormhole_code if params.HasField("wormhole_code") else None
            job = await service.wormhole_upload(sub, method, path, code, _account(request))
            return transfer_pb2.TransferUploadResponse(
                transfer_job=_transfer_job(job), transfer_directives=_wormhole_directives()
            )
        if not params.HasField("file_size"):
            raise invalid_argument(service.UPLOAD_SIZE_FIELD, "is required for an upload")
        if isinstance(method, StreamerMethodConfig):
            job, coordinates = await service.streamer_upload(
                sub, method, path, params.file_size, _account(request)
            )
            return transfer_pb2.TransferUploadResponse(
                transfer_job=_transfer_job(job),
                transfer_directives=_streamer_directives(coordinates),
            )
        staging = self._staging(call)
        job, plan = await service.upload(sub, staging, path, params.file_size, _account(request))
        return transfer_pb2.TransferUploadResponse(
            transfer_job=_transfer_job(job),
            transfer_directives=transfer_pb2.TransferDirectives(
                transfer_method=S3_METHOD,
                parts_upload_urls=plan.part_urls,
                complete_upload_url=plan.complete_url,
                max_part_size=plan.manifest.part_size,
            ),
        )

    async def Download(
        self, request: transfer_pb2.TransferDownloadRequest, context: Context
    ) -> transfer_pb2.TransferDownloadResponse:
        call, sub = self._begin(request.system_name, context)
        path = call.path("sourcePath", request.source_path)
        method = _method(call, request.transfer_directives)
        if isinstance(method, WormholeMethodConfig):
            job, code = await service.wormhole_download(sub, method, path, _account(request))
            return transfer_pb2.TransferDownloadResponse(
                transfer_job=_transfer_job(job), transfer_directives=_wormhole_directives(code)
            )
        if isinstance(method, StreamerMethodConfig):
            job, coordinates = await service.streamer_download(sub, method, path, _account(request))
            return transfer_pb2.TransferDownloadResponse(
                transfer_job=_transfer_job(job),
                transfer_directives=_streamer_directives(coordinates),
            )
        staging = self._staging(call)
        job, plan = await service.download(sub, staging, path, _account(request))
        return transfer_pb2.TransferDownloadResponse(
            transfer_job=_transfer_job(job),
            transfer_directives=transfer_pb2.TransferDirectives(
                transfer_method=S3_METHOD, download_url=plan.download_url
            ),
        )

    async def Cp(
        self, request: transfer_pb2.TransferCpRequest, context: Context
    ) -> transfer_pb2.TransferCpResponse:
        call, sub = self._begin(request.system_name, context)
        source = call.path("sourcePath", request.source_path)
        target = call.path("targetPath", request.target_path)
        job = await service.cp(sub, source, target, request.dereference, _account(request))
        return transfer_pb2.TransferCpResponse(transfer_job=_transfer_job(job))

    async def Mv(
        self, request: transfer_pb2.TransferMvRequest, context: Context
    ) -> transfer_pb2.TransferMvResponse:
        call, sub = self._begin(request.system_name, context)
        source = call.path("sourcePath", request.source_path)
        target = call.path("targetPath", request.target_path)
        job = await service.mv(sub, source, target, _account(request))
        return transfer_pb2.TransferMvResponse(transfer_job=_transfer_job(job))

    async def Rm(
        self, request: transfer_pb2.TransferRmRequest, context: Context
    ) -> transfer_pb2.TransferRmResponse:
        call, sub = self._begin(request.system_name, context)
        path = call.path("path", request.path)
        job = await service.rm(sub, path, _account(request))
        return transfer_pb2.TransferRmResponse(transfer_job=_transfer_job(job))

    async def Compress(
        self, request: transfer_pb2.TransferCompressRequest, context: Context
    ) -> transfer_pb2.TransferCompressResponse:
        call, sub = self._begin(request.system_name, context)
        source = call.path("sourcePath", request.source_path)
        target = call.path("targetPath", request.target_path)
        pattern = request.match_pattern if request.HasField("match_pattern") else None
        job = await service.compress(
            sub,
            source,
            target,
            match_pattern=pattern or None,
            dereference=request.dereference,
            compression=request.compression,
            account=_account(request),
        )
        return transfer_pb2.TransferCompressResponse(transfer_job=_transfer_job(job))

    async def Extract(
        self, request: transfer_pb2.TransferExtractRequest, context: Context
    ) -> transfer_pb2.TransferExtractResponse:
        call, sub = self._begin(request.system_name, context)
        source = call.path("sourcePath", request.source_path)
        target = call.path("targetPath", request.target_path)
        job = await service.extract(sub, source, target, request.compression, _account(request))
        return transfer_pb2.TransferExtractResponse(transfer_job=_transfer_job(job))

    async def GetTransfer(
        self, request: transfer_pb2.GetTransferRequest, context: Context
    ) -> transfer_pb2.GetTransferResponse:
        call, sub = self._begin(request.system_name, context)
        state = await progress.get(sub, call.system.staging, job_id(request.job_id))
        return transfer_pb2.GetTransferResponse(transfer=_status(state))

    async def WatchTransfer(
        self, request: transfer_pb2.WatchTransferRequest, context: Context
    ) -> AsyncIterator[transfer_pb2.WatchTransferResponse]:
        """Stream the transfer's state from the caller's job poller and its object."""
        call, sub = self._begin(request.system_name, context)
        watched = job_id(request.job_id)
        scheduler = call.config.scheduler
        async with call.watcher(context, frozenset({watched})) as watcher:
            states = progress.watch(
                sub,
                call.system.staging,
                watcher,
                watched,
                scheduler.poll_min_interval,
                scheduler.poll_max_interval,
            )
            async for state in states:
                yield transfer_pb2.WatchTransferResponse(
                    event_time=timestamp(time.time()), transfer=_status(state)
                )
