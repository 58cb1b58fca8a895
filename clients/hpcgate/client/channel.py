"""Channels to an hpcgate server: credentials, per-call deadlines and retries.

Deadlines and retries are gRPC's own (the channel's service config), so they
apply to every call, sync or asyncio: each method gets a default deadline,
and the idempotent ones (reads, listings, status) are retried with
exponential backoff on UNAVAILABLE. Calls that change state (submit, write,
remove, ...) are never retried: a retry could do them twice.

The token travels as call credentials, which gRPC sends only over a secure
channel: TLS, or, without TLS, the local credentials gRPC reserves for
loopback (a plaintext token never leaves the machine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hpcgate.client.credentials import TokenSource, call_credentials

# Calls that read or list only, safe to repeat after UNAVAILABLE.
IDEMPOTENT: dict[str, tuple[str, ...]] = {
    "Status": (
        "ListSystems",
        "GetLiveness",
        "ListNodes",
        "ListPartitions",
        "ListReservations",
        "GetUserInfo",
    ),
    "Filesystem": (
        "Ls",
        "LsStream",
        "Head",
        "Tail",
        "View",
        "Checksum",
        "FileType",
        "Stat",
        "Download",
        "DownloadStream",
        "BulkDownload",
        "DownloadMany",
    ),
    "Scheduler": ("ListJobs", "GetJob", "GetJobMetadata"),
    "Transfer": ("GetTransfer",),
}
SERVICES = ("Status", "Filesystem", "Scheduler", "Transfer")
# The streaming methods of each service, which get no default deadline.
METHODS: dict[str, frozenset[str]] = {
    "Status": frozenset(),
    "Filesystem": frozenset(
        {"LsStream", "DownloadStream", "UploadStream", "BulkDownload", "DownloadMany"}
    ),
    "Scheduler": frozenset({"WatchJobs"}),
    "Transfer": frozenset({"WatchTransfer"}),
}
# Streams carry whole files or directories and watches last long: no default deadline.
STREAMS = {
    "LsStream",
    "DownloadStream",
    "UploadStream",
    "BulkDownload",
    "DownloadMany",
    "WatchJobs",
    "WatchTransfer",
}


@dataclass(frozen=True)
class CallPolicy:
    """Default deadline of unary calls and the retry policy of idempotent ones."""

    deadline: float = 60.0
    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0


def service_config(policy: CallPolicy) -> str:
    """The JSON service config that applies ``policy`` to every hpcgate method."""
    retry = {
        "maxAttempts": policy.attempts,
        "initialBackoff": f"{policy.initial_backoff}s",
        "maxBackoff": f"{policy.max_backoff}s",
        "backoffMultiplier": policy.backoff_multiplier,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    configs: list[dict[str, Any]] = []
    for service in SERVICES:
        full = f"hpcgate.v1.{service}"
        idempotent = IDEMPOTENT[service]
        unary_reads = [m for m in idempotent if m not in STREAMS]
        stream_reads = [m for m in idempotent if m in STREAMS]
        if unary_reads:
            configs.append(
                {
                    "name": [{"service": full, "method": m} for m in unary_reads],
                    "timeout": f"{policy.deadline}s",
                    "retryPolicy": retry,
                }
            )
        if stream_reads:
            configs.append(
                {
                    "name": [{"service": full, "method": m} for m in stream_reads],
                    "retryPolicy": retry,
                }
            )
        # The other streams by name, so the service's deadline below skips them.
        others = [m for m in STREAMS - set(idempotent) if m in METHODS[service]]
        if others:
            configs.append({"name": [{"service": full, "method": m} for m in sorted(others)]})
        # Every other method of the service: a deadline, no retry.
        configs.append({"name": [{"service": full}], "timeout": f"{policy.deadline}s"})
    return json.dumps({"methodConfig": configs})


def _options(policy: CallPolicy) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", service_config(policy)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


def channel_credentials(
    source: TokenSource,
    *,
    tls: bool,
    root_certificates: Path | None = None,
    certificate_chain: Path | None = None,
    private_key: Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS (optionally mutual) or loopback-only local credentials, with the token."""
    if tls:
        base = grpc.ssl_channel_credentials(
            root_certificates=root_certificates.read_bytes() if root_certificates else None,
            private_key=private_key.read_bytes() if private_key else None,
            certificate_chain=certificate_chain.read_bytes() if certificate_chain else None,
        )
    else:
        base = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    return grpc.composite_channel_credentials(base, call_credentials(source))


def sync_channel(
    target: str, credentials: grpc.ChannelCredentials, policy: CallPolicy
) -> grpc.Channel:
    """A blocking channel with ``policy``'s deadlines and retries."""
    return grpc.secure_channel(target, credentials, options=_options(policy))


def aio_channel(
    target: str, credentials: grpc.ChannelCredentials, policy: CallPolicy
) -> grpc.aio.Channel:
    """An asyncio channel with ``policy``'s deadlines and retries."""
    return grpc.aio.secure_channel(target, credentials, options=_options(policy))
