"""Assemble and run the grpc.aio server.

:func:`start` builds the :class:`~hpcgate.server.runtime.Runtime` (SSH pools,
health checker, job watches, transfers), registers the four hpcgate services,
``grpc.health.v1`` (mirroring the health checker per system and service) and
server reflection into the method table, which wraps every method once in
the cross-cutting concerns (observability, then authentication: see
:mod:`hpcgate.server.rpc`) and is the server's one generic handler. It also
starts the Prometheus metrics server when ``server.metrics_listen`` is set.
Shutdown is graceful: health goes NOT_SERVING, job watches end, in-flight
RPCs get ``shutdown_grace`` seconds, then the runtime closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from hpcgate.server.config import ConfigError, Settings, TLSConfig
from hpcgate.server.health.checker import OnChange
from hpcgate.server.rpc import grpc_adapter
from hpcgate.server.rpc.authentication import Authentication
from hpcgate.server.rpc.method_table import Concern, MethodTable
from hpcgate.server.rpc.observability import Observability, access_log
from hpcgate.server.runtime import Runtime
from hpcgate.server.servicers.filesystem import FilesystemServicer
from hpcgate.server.servicers.scheduler import SchedulerServicer
from hpcgate.server.servicers.status import StatusServicer
from hpcgate.server.servicers.transfer import TransferServicer
from hpcgate.v1 import (
    filesystem_pb2,
    filesystem_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SERVICE_NAMES = (
    status_pb2.DESCRIPTOR.services_by_name["Status"].full_name,
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
    filesystem_pb2.DESCRIPTOR.services_by_name["Filesystem"].full_name,
    transfer_pb2.DESCRIPTOR.services_by_name["Transfer"].full_name,
)


@dataclass
class Running:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    runtime: Runtime
    settings: Settings
    metrics: WSGIServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics is None else self.metrics.server_port

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING first, then in-flight RPCs, then the pools.

        The server stops taking calls, job watches end at once (UNAVAILABLE,
        SERVER_SHUTDOWN: they would never end by themselves, and would only
        be cut by gRPC when the grace ran out), and the other calls in
        flight get the grace to finish.
        """
        await self.health.enter_graceful_shutdown()
        grace = self.settings.server.shutdown_grace if grace is None else grace
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # the server's shutdown begins: no new calls
        await asyncio.gather(*(s.watch.close() for s in self.runtime.systems.values()))
        await stopping
        access_log.flush()
        await self.runtime.close()
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics.server_close()


def _health_updater(servicer: health_aio.HealthServicer) -> OnChange:
    """Mirror the checker's findings in grpc.health.v1, as ``<system>/<service>``."""

    async def update(system: str, healthy: dict[str, bool]) -> None:
        for service_type, ok in healthy.items():
            status = SERVING if ok else NOT_SERVING
            await servicer.set(f"{system}/{service_type}", status)
        await servicer.set(system, SERVING if all(healthy.values()) else NOT_SERVING)

    return update


def build_concerns(settings: Settings) -> list[Concern]:
    """What runs around every call: observability, then authentication.

    Authentication comes before the handler so that nothing runs for an
    unauthenticated call; without an ``auth`` section (tests, skeleton) there
    is none. Errors become rich statuses innermost (see MethodTable).
    """
    concerns: list[Concern] = [Observability()]
    if settings.auth is not None:
        account = settings.credentials.service_account
        concerns.append(Authentication.from_config(settings.auth, account))
    return concerns


# Received metadata (headers) per call, bytes: twice the largest token limit.
METADATA_LIMIT = 256 * 1024
# Room for a message's framing beside its payload.
MESSAGE_HEADROOM = 1024 * 1024
# The largest upload body the REST edge forwards by default (its --max-upload).
EDGE_UPLOAD_BODY = 64 * 1024 * 1024
# A text reply (view, head, tail) of N bytes read can take 3 N bytes of UTF-8:
# each byte that is not UTF-8 becomes U+FFFD.
TEXT_EXPANSION = 3


KEEPALIVE_MS = 60_000


def _channel_options(settings: Settings) -> list[tuple[str, int]]:
    """Message size limits, how many calls may wait, and keepalive.

    The limits sit above everything the servicers let through, so that a
    size limit is always the servicer's FILE_TOO_LARGE (HTTP 413 with its
    reason), never gRPC's "message larger than max": a request up to what
    the edge forwards reaches the Upload servicer, which checks
    ``max_ops_file_size``; a reply holds at most ``max_ops_file_size`` bytes,
    or three times that as text. Pending calls: ``server.max_pending_rpcs``
    (gRPC cancels calls at random beyond its soft limit, all beyond the hard one).
    """
    largest = max(s.data_operation.max_ops_file_size for s in settings.systems)
    receive = max(EDGE_UPLOAD_BODY, largest) + MESSAGE_HEADROOM
    send = max(4 * 1024 * 1024, TEXT_EXPANSION * largest + MESSAGE_HEADROOM)
    pending = settings.server.max_pending_rpcs
    return [
        ("grpc.max_receive_message_length", receive),
        ("grpc.max_send_message_length", send),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        # gRPC's 8 KiB default would refuse a large token with transport text;
        # above auth.max_token_bytes the server refuses it itself (TOKEN_TOO_LARGE).
        ("grpc.max_metadata_size", METADATA_LIMIT),
        ("grpc.absolute_max_metadata_size", METADATA_LIMIT),
        # Keepalive: ping each client every KEEPALIVE_MS, so that a quiet watch
        # stream keeps a proxy's connection in use and a vanished client is
        # noticed; and take the pings of clients that do the same (the edges
        # ping every 30 s while a call is open). gRPC's default would answer a
        # ping more often than every 5 minutes without data with GOAWAY.
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


async def start(settings: Settings, listen: str | None = None) -> Running:
    """Build the server for ``settings`` and start it on ``listen`` (host:port)."""
    server = grpc.aio.server(options=_channel_options(settings))
    table = MethodTable(build_concerns(settings))
    methods = table.as_server()
    health_servicer = health_aio.HealthServicer()
    runtime = Runtime(settings, on_health_change=_health_updater(health_servicer))
    status_pb2_grpc.add_StatusServicer_to_server(StatusServicer(runtime), methods)
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(runtime), methods)
    filesystem_pb2_grpc.add_FilesystemServicer_to_server(FilesystemServicer(runtime), methods)
    transfer_pb2_grpc.add_TransferServicer_to_server(TransferServicer(runtime), methods)

    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, methods)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, SERVING)
    grpc_adapter.add_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), methods
    )
    table.install(server)

    address = listen or settings.server.listen
    port = _listen(server, address, settings.server.tls)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    runtime.start()
    metrics = None
    if settings.server.metrics_listen:
        host, _, metrics_port = settings.server.metrics_listen.rpartition(":")
        metrics, _ = start_http_server(int(metrics_port), addr=host or "127.0.0.1")
    log.info("hpcgate server listening on %s", address.rsplit(":", 1)[0] + f":{port}")
    return Running(server, port, health_servicer, runtime, settings, metrics)


def _listen(server: grpc.aio.Server, address: str, tls: TLSConfig | None) -> int:
    """Open the listener on ``address``: TLS (mutual with a client CA) when configured."""
    if tls is None:
        return server.add_insecure_port(address)
    try:
        chain = tls.certificate.read_bytes()
        client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    except OSError as error:
        raise ConfigError(f"server.tls: cannot read {error.filename}: {error.strerror}") from None
    credentials = grpc.ssl_server_credentials(
        [(tls.key.reveal().encode(), chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(address, credentials)


async def serve(settings: Settings, listen: str | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    running = await start(settings, listen)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await running.stop()
