"""The scheduler plug-in registry: every configurable type has its adapters, and only those."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from hpcgate.server.config import ConfigError
from hpcgate.server.scheduler.plugins import PLUGINS, scheduler_for
from hpcgate.server.scheduler.slurm.jobs import SlurmJobs
from hpcgate.server.scheduler.slurm.status import SlurmStatus
from hpcgate.server.scheduler.slurmrest.jobs import SlurmRestJobs
from hpcgate.server.scheduler.slurmrest.status import SlurmRestStatus
from hpcgate.server.schedulerconfig import SchedulerConfig


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


def test_slurm_rest_builds_the_rest_adapters(tmp_path: Path) -> None:
    key = tmp_path / "jwt_hs256.key"
    key.write_bytes(b"k" * 32)
    config = SchedulerConfig(type="slurm-rest", url="http://127.0.0.1:6820", jwt_key_file=key)
    assert config.connection_mode == "rest"
    plugin = scheduler_for(config)
    assert isinstance(plugin.status, SlurmRestStatus)
    assert isinstance(plugin.jobs, SlurmRestJobs)


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    config = SchedulerConfig(
        type="slurm-rest", url="http://127.0.0.1:6820", jwt_key_file=tmp_path / "nope"
    )
    with pytest.raises(ConfigError, match=r"scheduler\.jwt_key_file"):
        scheduler_for(config)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"type": "slurm-rest", "jwt_key_file": "/k"}, "needs url"),
        ({"type": "slurm-rest", "url": "http://h:1"}, "exactly one of jwt_key_file, token_command"),
        (
            {
                "type": "slurm-rest",
                "url": "http://h:1",
                "jwt_key_file": "/k",
                "token_command": ["x"],
            },
            "exactly one of jwt_key_file, token_command",
        ),
        ({"type": "slurm-rest", "url": "ftp://h", "jwt_key_file": "/k"}, "url"),
        (
            {"type": "slurm-rest", "url": "http://h:1", "jwt_key_file": "/k", "api_version": "v9"},
            "api_version",
        ),
        ({"type": "slurm", "url": "http://h:1"}, "only for type slurm-rest"),
        (
            {
                "type": "slurm-rest",
                "url": "http://h:1",
                "token_command": ["x"],
                "connection_mode": "ssh",
            },
            "connection_mode rest",
        ),
    ],
)
def test_bad_rest_settings_are_named(given: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        SchedulerConfig.model_validate(given)
