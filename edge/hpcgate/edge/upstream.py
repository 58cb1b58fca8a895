"""The edge's gRPC channel to its servers: every replica used, kept alive, safe calls retried.

``--server`` names one server (``host:port``), several (``a:1,b:2,c:3``: a
static list), or any gRPC name-resolver target (``dns:///servers.example.org:50051``:
every address DNS gives, re-resolved as it changes; a Kubernetes headless
Service is such a name). The channel balances calls over the addresses
``round_robin``: gRPC keeps one HTTP/2 connection per address, so without it
every call of an edge would go to one replica.

Retries come from gRPC's own service config, not from code here: calls of
read-only routes (GET) are tried again, with backoff, when they fail
UNAVAILABLE, which is what a replica that died or is draining answers. A
server's own UNAVAILABLE (a backend down: ``SCHEDULER_UNAVAILABLE``...)
carries ``grpc-retry-pushback-ms: -1``, which tells gRPC not to retry it: a
hung slurmctld must cost one command timeout, not three.

Keepalive pings run while calls are open, so a quiet watch stream through a
proxy, and a server that vanished without a FIN, are noticed.

TLS: with ``ca`` the channel is TLS and trusts that CA; with ``certificate``
and ``key`` it presents them (the server's ``server.tls.client_ca``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

RETRY_ATTEMPTS = 3
KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class UpstreamTLS:
    """TLS to the servers: the CA to trust and, for mutual TLS, the edge's certificate."""

    ca: Path
    certificate: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        chain = self.certificate.read_bytes() if self.certificate else None
        key = self.key.read_bytes() if self.key else None
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key, chain)


def target_of(servers: str) -> str:
    """The gRPC target for ``--server``: a resolver target as it is, a list as ``ipv4:a,b``.

    (gRPC's static lists take IP literals; names go through ``dns:///``.)
    """
    if "://" in servers or servers.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return servers
    addresses = [a.strip() for a in servers.split(",") if a.strip()]
    if len(addresses) == 1:
        return addresses[0]
    scheme = "ipv6" if all(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def service_config(idempotent: Iterable[str]) -> str:
    """gRPC's service config: round robin, and retries of ``idempotent`` paths on UNAVAILABLE."""
    names = []
    for path in sorted(set(idempotent)):
        service, _, method = path.strip("/").partition("/")
        names.append({"service": service, "method": method})
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if names:
        config["methodConfig"] = [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": RETRY_ATTEMPTS,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)


def open_channel(
    servers: str,
    idempotent: Iterable[str],
    options: Iterable[tuple[str, int | str]] = (),
    tls: UpstreamTLS | None = None,
) -> grpc.aio.Channel:
    """A channel to ``servers`` (see the module doc) with ``options`` added."""
    settings: list[tuple[str, int | str]] = [
        *options,
        ("grpc.service_config", service_config(idempotent)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    target = target_of(servers)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=settings)
    return grpc.aio.secure_channel(target, tls.credentials(), options=settings)
