"""Prometheus metrics of the SSH pools.

Labelled by system only: a per-user label would make the number of series
grow with the user base. The gauges move by deltas (``inc``/``dec``), so
several pools for one system (tests, reloads) add up instead of overwriting
one another.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge(
    "hpcgate_ssh_connections",
    "Open SSH connections in the pool",
    ["system"],
)
CHANNELS_IN_USE = Gauge(
    "hpcgate_ssh_channels_in_use",
    "Channel slots (exec sessions or SFTP requests) in use",
    ["system"],
)
WAITERS = Gauge(
    "hpcgate_ssh_waiters",
    "Requests queued for a channel slot",
    ["system"],
)
CONNECTIONS_OPENED = Counter(
    "hpcgate_ssh_connections_opened",
    "SSH connections opened successfully",
    ["system"],
)
CONNECT_FAILURES = Counter(
    "hpcgate_ssh_connect_failures",
    "SSH connection attempts that failed, by error reason",
    ["system", "reason"],
)
CONNECTIONS_LOST = Counter(
    "hpcgate_ssh_connections_lost",
    "SSH connections that died while pooled (not closed by the pool)",
    ["system"],
)


class PoolMetrics:
    """The metric children of one system, bound once."""

    def __init__(self, system: str) -> None:
        """Bind the children labelled ``system``."""
        self.system = system
        self.connections = CONNECTIONS.labels(system)
        self.channels_in_use = CHANNELS_IN_USE.labels(system)
        self.waiters = WAITERS.labels(system)
        self.connections_opened = CONNECTIONS_OPENED.labels(system)
        self.connections_lost = CONNECTIONS_LOST.labels(system)

    def connect_failed(self, reason: str) -> None:
        """Count a failed connection attempt (reason is one of a few error reasons)."""
        CONNECT_FAILURES.labels(self.system, reason).inc()
