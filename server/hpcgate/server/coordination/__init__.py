"""Coordination between replicas: in memory for one process, in Redis for a fleet.

:func:`build_coordinator` picks the backend the ``coordination`` block of
the configuration names; :mod:`.base` describes what is shared and how a
backend behaves when its store is down.
"""

from __future__ import annotations

from hpcgate.server.config import CoordinationConfig
from hpcgate.server.coordination.base import LOCAL, CoordinationHealth, Coordinator, Listening
from hpcgate.server.coordination.memory import MemoryCoordinator

__all__ = [
    "LOCAL",
    "CoordinationHealth",
    "Coordinator",
    "Listening",
    "MemoryCoordinator",
    "build_coordinator",
]


def build_coordinator(config: CoordinationConfig) -> Coordinator:
    """The backend ``config`` names (the Redis client is imported only when asked for)."""
    if config.backend == "redis":
        from hpcgate.server.coordination.redis import RedisCoordinator

        assert config.url is not None  # the config's validator insists
        return RedisCoordinator(config.url, config.prefix, config.lease_ttl)
    return MemoryCoordinator(config.lease_ttl)
