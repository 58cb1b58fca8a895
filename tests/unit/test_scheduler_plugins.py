"""The scheduler plug-in registry: every configurable type has its adapters, and only those."""

from __future__ import annotations

from typing import get_args

import pytest

from hpcgate.server.config import SchedulerConfig
from hpcgate.server.scheduler.plugins import PLUGINS, scheduler_for
from hpcgate.server.scheduler.slurm.jobs import SlurmJobs
from hpcgate.server.scheduler.slurm.status import SlurmStatus


def test_every_configurable_type_has_a_plugin() -> None:
    configurable = set(get_args(SchedulerConfig.model_fields["type"].annotation))
    assert configurable == set(PLUGINS)


def test_slurm_builds_the_cli_adapters() -> None:
    plugin = scheduler_for(SchedulerConfig(type="slurm"))
    assert isinstance(plugin.status, SlurmStatus)
    assert isinstance(plugin.jobs, SlurmJobs)


def test_each_system_gets_its_own_adapters() -> None:
    # The jobs adapter learns facts about its Slurm (sacct's exit codes): not shared.
    config = SchedulerConfig()
    assert scheduler_for(config).jobs is not scheduler_for(config).jobs


def test_an_unregistered_type_is_named() -> None:
    config = SchedulerConfig()
    object.__setattr__(config, "type", "pbs")  # past the config's own check
    with pytest.raises(LookupError, match="'pbs'"):
        scheduler_for(config)
