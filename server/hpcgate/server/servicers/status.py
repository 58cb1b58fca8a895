"""The Status service: systems, liveness, and (later) the scheduler's view."""

from __future__ import annotations

from hpcgate.server.config import Settings, SystemConfig
from hpcgate.server.servicers.context import Context
from hpcgate.v1 import status_pb2, status_pb2_grpc


def _cluster(system: SystemConfig) -> status_pb2.HPCCluster:
    """FirecREST's HPCCluster for a configured system (health is added by the checker)."""
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
    if system.s3 is not None:
        s3 = system.s3
        transfer = cluster.data_operation.data_transfer
        transfer.service_type = "s3"
        transfer.name = s3.bucket_prefix
        transfer.public_url = s3.endpoint
        transfer.region = s3.region
        transfer.ttl = s3.url_expiry
        transfer.multipart.max_part_size = s3.max_part_size
    return cluster


class StatusServicer(status_pb2_grpc.StatusServicer):
    """Serves the Status RPCs; the ones not overridden answer UNIMPLEMENTED."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def ListSystems(
        self, request: status_pb2.ListSystemsRequest, context: Context
    ) -> status_pb2.ListSystemsResponse:
        return status_pb2.ListSystemsResponse(
            systems=[_cluster(system) for system in self._settings.systems]
        )

    async def GetLiveness(
        self, request: status_pb2.GetLivenessRequest, context: Context
    ) -> status_pb2.GetLivenessResponse:
        # The health checker fills healthcheck_runs; until it runs, the
        # server is alive and has checked nothing.
        return status_pb2.GetLivenessResponse()
