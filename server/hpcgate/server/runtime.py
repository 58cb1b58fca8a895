"""Everything the servicers share at run time, per configured system.

A :class:`SystemRuntime` bundles one system's configuration, its SSH pool,
its scheduler adapters, its job-watch hub, its small-file read batcher,
its health checker and its cache of user and group names. The
:class:`Runtime` owns them all and the coordinator they share with the
fleet's other replicas (:mod:`.coordination`), starts the checkers, and on
shutdown ends the watches and closes the pools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from hpcgate.server.config import Settings, SystemConfig
from hpcgate.server.coordination import build_coordinator
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.names import IdNames
from hpcgate.server.filesystem.smallreads import SmallReads
from hpcgate.server.filesystem.sweep import PartSweeper
from hpcgate.server.health.checker import HealthChecker, OnChange
from hpcgate.server.health.probes import probes_for
from hpcgate.server.scheduler.cluster import SchedulerStatus
from hpcgate.server.scheduler.commands import RunWithInput
from hpcgate.server.scheduler.jobs import JobScheduler
from hpcgate.server.scheduler.plugins import scheduler_for
from hpcgate.server.scheduler.watch import RunnerFactory, WatchHub
from hpcgate.server.ssh import PoolManager, SSHPool, deadline_after
from hpcgate.server.systems import resolve_system
from hpcgate.server.transfer.staging import Staging


@dataclass
class SystemRuntime:
    """One system's configuration, pool, scheduler adapters, watch hub and health checker."""

    config: SystemConfig
    pool: SSHPool
    # The scheduler plug-in's adapters (scheduler.type): status, and jobs below.
    scheduler: SchedulerStatus
    health: HealthChecker
    # Jobs: submit, list, cancel ... (the Scheduler service).
    jobs: JobScheduler
    # The job pollers feeding WatchJobs, one per user.
    watch: WatchHub
    # Small-file reads, batched per user under load.
    reads: SmallReads
    # The S3 staging area of large transfers (None: the system has no S3).
    staging: Staging | None = None
    # Removes the stale temporaries of dead uploads, as each connected user.
    sweeper: PartSweeper | None = None
    # uid/gid -> name, learned from every caller's listings of this system.
    names: IdNames = field(default_factory=IdNames)

    def runner(self, user: str, deadline: float | None = None) -> RunWithInput:
        """Run scheduler commands as ``user`` (in the user's scheduler share of the pool).

        The commands may take stdin (sbatch reads the script).
        """
        run: RunWithInput = partial(self.pool.run, user, deadline=deadline, scheduler=True)
        return run


def _poll_runner(pool: SSHPool, timeout: float) -> RunnerFactory:
    """Runners for a system's job pollers, as the polling user.

    A poll has no RPC deadline to inherit: each gets ``timeout`` seconds,
    waiting for a channel included, so a stuck poll cannot hang its watchers.
    """

    def runner(user: str) -> RunWithInput:
        run: RunWithInput = partial(
            pool.run, user, deadline=deadline_after(timeout), scheduler=True
        )
        return run

    return runner


class Runtime:
    """The systems of a configuration, ready to serve."""

    def __init__(self, settings: Settings, on_health_change: OnChange | None = None) -> None:
        self.settings = settings
        # What the replicas of a fleet share (in memory: this process alone).
        self.coordinator = build_coordinator(settings.coordination)
        self.pools = PoolManager(settings, coordinator=self.coordinator)
        self.systems: dict[str, SystemRuntime] = {}
        # What each system's scheduler plug-in holds open (closed last).
        self._plugin_closers: list[Callable[[], Awaitable[None]]] = []
        service_account = settings.credentials.service_account
        for config in settings.systems:
            pool = self.pools.pool(config.name)
            plugin = scheduler_for(config.scheduler)
            self._plugin_closers.append(plugin.close)
            scheduler = plugin.status
            probes = (
                probes_for(config, partial(pool.run, service_account), service_account, scheduler)
                if service_account
                else []
            )
            checker = HealthChecker(
                config.name,
                probes,
                config.probing.interval,
                config.probing.timeout,
                on_health_change,
                self.coordinator,
            )
            jobs = plugin.jobs
            timeout = config.ssh.timeouts.command
            hub = WatchHub(
                config.name,
                jobs,
                _poll_runner(pool, timeout),
                partial(checker.require, "ssh", "scheduler"),
                config.scheduler.poll_min_interval,
                config.scheduler.poll_max_interval,
                self.coordinator,
            )
            staging = None
            if config.s3 is not None:
                staging = Staging(
                    config.name,
                    config.s3,
                    gate=partial(checker.require, "s3"),
                    coordinator=self.coordinator,
                )
            self.systems[config.name.lower()] = SystemRuntime(
                config,
                pool,
                scheduler,
                checker,
                jobs,
                hub,
                SmallReads(pool, config.data_operation, Confine.of(config)),
                staging,
                PartSweeper(
                    pool,
                    Confine.of(config),
                    config.data_operation.part_max_age,
                    config.data_operation.part_sweep_interval,
                ),
            )

    def system(self, name: str) -> SystemRuntime:
        """The system called ``name`` (case-insensitive); NOT_FOUND otherwise."""
        return self.systems[resolve_system(self.settings, name).name.lower()]

    def start(self) -> None:
        for system in self.systems.values():
            system.health.start()
            if system.sweeper is not None:
                system.sweeper.start()
            if system.staging is not None:
                system.staging.start()

    async def close(self) -> None:
        """Stop the checkers and the S3 sweeps, end the watches, close the pools.

        The watches end before the pools close: their pollers use the pools.
        """
        await asyncio.gather(*(s.health.stop() for s in self.systems.values()))
        await asyncio.gather(*(s.sweeper.stop() for s in self.systems.values() if s.sweeper))
        await asyncio.gather(*(s.staging.close() for s in self.systems.values() if s.staging))
        await asyncio.gather(*(s.watch.close() for s in self.systems.values()))
        await asyncio.gather(*(s.reads.close() for s in self.systems.values()))
        await self.pools.close()
        await asyncio.gather(*(close() for close in self._plugin_closers))
        await self.coordinator.close()
