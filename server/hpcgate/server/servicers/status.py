"""The Status service: systems and their health, liveness, and the scheduler's view."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime

from hpcgate.server.config import SystemConfig
from hpcgate.server.health.checker import ServiceHealth
from hpcgate.server.rpc.context import Context
from hpcgate.server.runtime import Runtime
from hpcgate.server.servicers.call import begin
from hpcgate.server.servicers.convert import timestamp
from hpcgate.server.transferconfig import (
    AnyMethodConfig,
    StreamerMethodConfig,
    WormholeMethodConfig,
)
from hpcgate.v1 import status_pb2, status_pb2_grpc


def _health(result: ServiceHealth) -> status_pb2.ServiceHealth:
    return status_pb2.ServiceHealth(
        service_type=result.service_type,
        healthy=result.healthy,
        last_checked=timestamp(result.last_checked),
        latency=result.latency,
        message=result.message,
        path=result.path,
    )


def _transfer_method(
    system: SystemConfig, method: AnyMethodConfig
) -> status_pb2.DataTransferConfig:
    """FirecREST's S3DataTransfer, StreamerDataTransfer or WormholeDataTransfer for one method."""
    transfer = status_pb2.DataTransferConfig(service_type=method.service_type)
    if isinstance(method, WormholeMethodConfig):
        if method.pypi_index_url is not None:
            transfer.pypi_index_url = method.pypi_index_url
        return transfer
    if isinstance(method, StreamerMethodConfig):
        transfer.host = method.host
        transfer.port_range.extend(method.port_range)
        transfer.public_ips.extend(method.public_ips)
        transfer.wait_timeout = method.wait_timeout
        transfer.inbound_transfer_limit = method.inbound_transfer_limit
        if method.pypi_index_url is not None:
            transfer.pypi_index_url = method.pypi_index_url
        return transfer
    s3 = system.s3
    assert s3 is not None  # the configuration refuses the s3 method without it
    transfer.name = s3.bucket_prefix
    transfer.public_url = s3.client_endpoint
    transfer.region = s3.region
    transfer.ttl = s3.url_expiry
    transfer.multipart.max_part_size = s3.max_part_size
    transfer.bucket_lifecycle_configuration.days = s3.lifecycle_days
    return transfer


def _cluster(system: SystemConfig) -> status_pb2.HPCCluster:
    """FirecREST's HPCCluster for a configured system (health is added by the caller)."""
    ssh, timeouts = system.ssh, system.ssh.timeouts
    proxy_host, _, proxy_port = (system.ssh.proxy_jump or "").rpartition("@")[2].partition(":")
    cluster = status_pb2.HPCCluster(
        name=system.name,
        ssh=status_pb2.SSHClientPool(
            host=ssh.host,
            port=ssh.port,
            max_clients=ssh.pool.max_connections,
            timeout=status_pb2.SSHTimeouts(
                connection=round(timeouts.connect),
                login=round(timeouts.login),
                command_execution=round(timeouts.command),
                idle_timeout=round(timeouts.idle),
                keep_alive=round(timeouts.keepalive),
            ),
        ),
        scheduler=status_pb2.SchedulerConfig(
            type=system.scheduler.type,
            version=system.scheduler.version or "",
            connection_mode=system.scheduler.connection_mode,
            timeout=round(timeouts.command),
        ),
        probing=status_pb2.ProbingServices(interval_check=round(system.probing.interval)),
        file_systems=[
            status_pb2.ClusterFileSystem(
                path=fs.path, data_type=fs.data_type, default_work_dir=fs.default_work_dir
            )
            for fs in system.filesystems
        ],
        data_operation=status_pb2.DataOperation(
            max_ops_file_size=system.data_operation.max_ops_file_size,
            datatransfer_jobs_directives=system.data_operation.datatransfer_jobs_directives,
        ),
    )
    if proxy_host:
        cluster.ssh.proxy_host = proxy_host
        if proxy_port:
            cluster.ssh.proxy_port = int(proxy_port)
    methods = [_transfer_method(system, m) for m in system.transfer_methods]
    if methods:
        cluster.data_operation.data_transfer.CopyFrom(methods[0])
        cluster.data_operation.data_transfers.extend(methods)
    return cluster


class StatusServicer(status_pb2_grpc.StatusServicer):
    """Serves the Status RPCs."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        # The systems reply changes only when a health check runs: it is
        # built once per round of checks, not per call (it is the hottest RPC).
        self._systems: tuple[tuple[datetime | None, ...], status_pb2.ListSystemsResponse] | None
        self._systems = None

    async def ListSystems(
        self, request: status_pb2.ListSystemsRequest, context: Context
    ) -> status_pb2.ListSystemsResponse:
        runs = tuple(s.health.last_run for s in self._runtime.systems.values())
        if self._systems is None or self._systems[0] != runs:
            self._systems = (runs, self._systems_reply())
        return self._systems[1]

    def _systems_reply(self) -> status_pb2.ListSystemsResponse:
        reply = status_pb2.ListSystemsResponse()
        for system in self._runtime.systems.values():
            cluster = reply.systems.add()
            cluster.CopyFrom(_cluster(system.config))
            cluster.services_health.extend(_health(r) for r in system.health.results())
            if system.health.last_run is not None:
                cluster.last_health_check.CopyFrom(timestamp(system.health.last_run))
        return reply

    async def GetLiveness(
        self, request: status_pb2.GetLivenessRequest, context: Context
    ) -> status_pb2.GetLivenessResponse:
        reply = status_pb2.GetLivenessResponse()
        runs = [(s.config.name, s.health.last_run) for s in self._runtime.systems.values()]
        for name, last_run in runs:
            if last_run is not None:
                reply.healthcheck_runs[name].CopyFrom(timestamp(last_run))
        done = [last for _, last in runs if last is not None]
        if done:
            reply.last_update = round(time.time() - min(d.timestamp() for d in done))
        return reply

    async def ListNodes(
        self, request: status_pb2.ListNodesRequest, context: Context
    ) -> status_pb2.ListNodesResponse:
        call = begin(self._runtime, request.system_name, context)
        nodes = await call.system.scheduler.nodes(call.run, call.user)
        return status_pb2.ListNodesResponse(
            nodes=[status_pb2.NodeModel(**asdict(node)) for node in nodes]
        )

    async def ListPartitions(
        self, request: status_pb2.ListPartitionsRequest, context: Context
    ) -> status_pb2.ListPartitionsResponse:
        call = begin(self._runtime, request.system_name, context)
        partitions = await call.system.scheduler.partitions(
            call.run, call.user, request.show_hidden
        )
        return status_pb2.ListPartitionsResponse(
            partitions=[status_pb2.PartitionModel(**asdict(p)) for p in partitions]
        )

    async def ListReservations(
        self, request: status_pb2.ListReservationsRequest, context: Context
    ) -> status_pb2.ListReservationsResponse:
        call = begin(self._runtime, request.system_name, context)
        reservations = await call.system.scheduler.reservations(call.run, call.user)
        return status_pb2.ListReservationsResponse(
            reservations=[status_pb2.ReservationModel(**asdict(r)) for r in reservations]
        )

    async def GetUserInfo(
        self, request: status_pb2.GetUserInfoRequest, context: Context
    ) -> status_pb2.GetUserInfoResponse:
        call = begin(self._runtime, request.system_name, context)
        info = await call.system.scheduler.user_info(call.run, call.user)
        return status_pb2.GetUserInfoResponse(**asdict(info))
