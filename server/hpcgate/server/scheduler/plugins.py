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

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from hpcgate.server.config import ConfigError
from hpcgate.server.scheduler.cluster import SchedulerStatus
from hpcgate.server.scheduler.jobs import JobScheduler
from hpcgate.server.scheduler.slurm.jobs import SlurmJobs
from hpcgate.server.scheduler.slurm.status import SlurmStatus
from hpcgate.server.schedulerconfig import SchedulerConfig


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class SchedulerPlugin:
    """One system's scheduler adapters."""

    # Nodes, partitions, reservations, accounts, ping.
    status: SchedulerStatus
    # Submit, list, cancel ..., and the watch pollers' snapshots.
    jobs: JobScheduler
    # Releases what the adapters hold (slurm-rest: its HTTP connections).
    close: Callable[[], Awaitable[None]] = _nothing


# Builds a system's adapters from its scheduler configuration.
Factory = Callable[[SchedulerConfig], SchedulerPlugin]


def _slurm(config: SchedulerConfig) -> SchedulerPlugin:
    """Slurm through its commands over SSH, run as the calling user."""
    del config  # the CLI adapters need nothing beyond the SSH runner they are given
    return SchedulerPlugin(SlurmStatus(), SlurmJobs())


def _slurm_rest(config: SchedulerConfig) -> SchedulerPlugin:
    """Slurm through slurmrestd, each request as the calling user (JWT).

    The CLI adapters are kept for what the REST API lacks (see
    :mod:`hpcgate.server.scheduler.slurmrest.jobs`); they run over SSH.
    Imported here, when a system uses it: its HTTP client (httpx, which
    imports click, rich and pygments) is ~7 MiB resident in a server that
    never talks to slurmrestd.
    """
    from hpcgate.server.scheduler.slurmrest.client import SUPPORTED_VERSIONS, SlurmRestClient
    from hpcgate.server.scheduler.slurmrest.jobs import SlurmRestJobs
    from hpcgate.server.scheduler.slurmrest.status import SlurmRestStatus
    from hpcgate.server.scheduler.slurmrest.tokens import CommandTokens, TokenMinter

    assert config.url is not None  # the config model requires it for this type
    token_for: TokenMinter | CommandTokens
    if config.jwt_key_file is not None:
        try:
            key = config.jwt_key_file.read_bytes()
        except OSError as error:
            raise ConfigError(f"scheduler.jwt_key_file: {error}") from None
        token_for = TokenMinter(key, config.token_lifetime)
    else:
        assert config.token_command is not None
        token_for = CommandTokens(config.token_command, config.token_lifetime)
    versions = SUPPORTED_VERSIONS if config.api_version == "auto" else (config.api_version,)
    client = SlurmRestClient(config.url, token_for.token, config.command_timeout, versions)
    return SchedulerPlugin(
        SlurmRestStatus(client, SlurmStatus()),
        SlurmRestJobs(client, SlurmJobs()),
        close=client.close,
    )


# ``scheduler.type`` -> factory. A third scheduler (PBS, say) is a package
# beside ``slurm/`` (``scheduler/pbs/``) with a status adapter and a jobs
# adapter, one factory here, and its name added to ``SchedulerConfig.type``.
PLUGINS: Mapping[str, Factory] = {
    "slurm": _slurm,
    "slurm-rest": _slurm_rest,
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
