"""Scheduler plug-ins: the adapters a system's ``scheduler.type`` selects.

A plug-in is the pair of adapters the rest of the server talks to: the
status adapter (:class:`~hpcgate.server.scheduler.cluster.SchedulerStatus`,
for the Status service and the health probe) and the jobs adapter
(:class:`~hpcgate.server.scheduler.jobs.JobScheduler`, for the Scheduler
service; its ``snapshot`` is also what feeds the ``WatchJobs`` pollers, one
call per poll per user). The runtime asks :func:`scheduler_for` and never
names a scheduler itself, so a new scheduler touches this module alone,
plus its name in ``SchedulerConfig.type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hpcgate.server.config import SchedulerConfig
from hpcgate.server.scheduler.cluster import SchedulerStatus
from hpcgate.server.scheduler.jobs import JobScheduler
from hpcgate.server.scheduler.slurm.jobs import SlurmJobs
from hpcgate.server.scheduler.slurm.status import SlurmStatus


@dataclass(frozen=True)
class SchedulerPlugin:
    """One system's scheduler adapters."""

    # Nodes, partitions, reservations, accounts, ping.
    status: SchedulerStatus
    # Submit, list, cancel ..., and the watch pollers' snapshots.
    jobs: JobScheduler


# Builds a system's adapters from its scheduler configuration.
Factory = Callable[[SchedulerConfig], SchedulerPlugin]


def _slurm(config: SchedulerConfig) -> SchedulerPlugin:
    """Slurm through its commands over SSH, run as the calling user."""
    del config  # the CLI adapters need nothing beyond the SSH runner they are given
    return SchedulerPlugin(SlurmStatus(), SlurmJobs())


# ``scheduler.type`` -> factory. A third scheduler (PBS, say) is a package
# beside ``slurm/`` (``scheduler/pbs/``) with a status adapter and a jobs
# adapter, one factory here, and its name added to ``SchedulerConfig.type``.
PLUGINS: Mapping[str, Factory] = {
    "slurm": _slurm,
}


def scheduler_for(config: SchedulerConfig) -> SchedulerPlugin:
    """The adapters of the scheduler ``config`` names.

    The config model accepts only the names registered here, so a miss is
    a programming error (a type added to the config without its plug-in).
    """
    try:
        factory = PLUGINS[config.type]
    except KeyError:
        raise LookupError(f"no scheduler plug-in for type {config.type!r}") from None
    return factory(config)
