"""Everything the servicers share at run time, per configured system.

A :class:`SystemRuntime` bundles one system's configuration, its SSH pool,
its scheduler adapter and its health checker. The :class:`Runtime` owns them
all, starts the checkers and closes the pools on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from hpcgate.server.config import Settings, SystemConfig
from hpcgate.server.health.checker import HealthChecker, OnChange
from hpcgate.server.health.probes import probes_for
from hpcgate.server.scheduler.base import Output, Run
from hpcgate.server.scheduler.slurm.status import SlurmStatus
from hpcgate.server.ssh.pool import PoolManager, SSHPool
from hpcgate.server.systems import resolve_system


@dataclass
class SystemRuntime:
    """One system's configuration, pool, scheduler adapter and health checker."""

    config: SystemConfig
    pool: SSHPool
    scheduler: SlurmStatus
    health: HealthChecker

    def runner(self, user: str, deadline: float | None = None) -> Run:
        """Run commands as ``user`` over the user's pooled connection."""
        run: Callable[[Sequence[str]], Awaitable[Output]] = partial(
            self.pool.run, user, deadline=deadline
        )
        return run


class Runtime:
    """The systems of a configuration, ready to serve."""

    def __init__(self, settings: Settings, on_health_change: OnChange | None = None) -> None:
        self.settings = settings
        self.pools = PoolManager(settings)
        self.systems: dict[str, SystemRuntime] = {}
        service_account = settings.credentials.service_account
        for config in settings.systems:
            pool = self.pools.pool(config.name)
            scheduler = SlurmStatus()
            probes = (
                probes_for(config, partial(pool.run, service_account), scheduler)
                if service_account
                else []
            )
            checker = HealthChecker(
                config.name,
                probes,
                config.probing.interval,
                config.probing.timeout,
                on_health_change,
            )
            self.systems[config.name.lower()] = SystemRuntime(config, pool, scheduler, checker)

    def system(self, name: str) -> SystemRuntime:
        """The system called ``name`` (case-insensitive); NOT_FOUND otherwise."""
        return self.systems[resolve_system(self.settings, name).name.lower()]

    def start(self) -> None:
        for system in self.systems.values():
            system.health.start()

    async def close(self) -> None:
        await asyncio.gather(*(s.health.stop() for s in self.systems.values()))
        await self.pools.close()
