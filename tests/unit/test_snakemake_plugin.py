"""The Snakemake plugin's pure parts: resources to sbatch options, settings to credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_interface_common.exceptions import WorkflowError

from hpcgate.client import ClientCredentials, StaticToken, TokenFile
from snakemake_executor_plugin_hpcgate.connect import open_client, token_source
from snakemake_executor_plugin_hpcgate.directives import job_script, placement, sbatch_options
from snakemake_executor_plugin_hpcgate.settings import ExecutorSettings


def test_resources_map_to_sbatch_options_as_the_slurm_plugin_has_them() -> None:
    resources = {
        "runtime": 90,
        "mem_mb": 2000,
        "cpus_per_task": 4,
        "tasks": 2,
        "nodes": 1,
        "constraint": "haswell",
        "qos": "long",
        "slurm_extra": "--gres=gpu:1 --comment='two words'",
    }
    assert sbatch_options(resources, threads=1) == [
        "--time=90",
        "--mem=2000",
        "--nodes=1",
        "--ntasks=2",
        "--cpus-per-task=4",
        "--constraint=haswell",
        "--qos=long",
        "--gres=gpu:1",
        "--comment=two words",
    ]


def test_defaults_threads_and_memory_per_cpu() -> None:
    assert sbatch_options({}, threads=3) == ["--ntasks=1", "--cpus-per-task=3"]
    options = sbatch_options({"mem_mb": 100, "mem_mb_per_cpu": 50, "cpus_per_task": -1}, 2)
    assert options == ["--mem-per-cpu=50", "--ntasks=1"]


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"slurm_extra": "--qos=a\n#SBATCH --x"}, "slurm_extra"),
        ({"slurm_extra": "--comment='open"}, "slurm_extra"),
        ({"mem_mb": "lots"}, "mem_mb"),
        ({"nodes": 0}, "nodes"),
        ({"cpus_per_task": True}, "cpus_per_task"),
    ],
)
def test_bad_resources_are_workflow_errors_naming_the_resource(
    resources: dict[str, object], field: str
) -> None:
    with pytest.raises(WorkflowError, match=field):
        sbatch_options(resources, threads=1)


def test_partition_and_account_come_from_resources_then_defaults() -> None:
    where = placement({"slurm_partition": "debug"}, partition="normal", account="p1")
    assert (where.partition, where.account) == ("debug", "p1")
    where = placement({"partition": "big", "slurm_account": 42}, partition=None, account="p1")
    assert (where.partition, where.account) == ("big", "42")
    assert placement({}, partition=None, account=None).partition is None


def test_the_job_script_quotes_each_directive() -> None:
    script = job_script(["--time=5", "--comment=two words"], "python -m snakemake x")
    assert script.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --time=5",
        "#SBATCH '--comment=two words'",
        "set -e",
        "python -m snakemake x",
    ]


def test_exactly_one_credential_source(tmp_path: Path) -> None:
    assert isinstance(token_source(ExecutorSettings(token="t")), StaticToken)
    (tmp_path / "tok").write_text("t")
    assert isinstance(token_source(ExecutorSettings(token_file=str(tmp_path / "tok"))), TokenFile)
    both = ExecutorSettings(token="t", client_id="c")
    with pytest.raises(WorkflowError, match="exactly one"):
        token_source(both)
    with pytest.raises(WorkflowError, match="exactly one"):
        token_source(ExecutorSettings())
    with pytest.raises(WorkflowError, match="--hpcgate-client-secret"):
        token_source(ExecutorSettings(client_id="c", token_url="http://idp/token"))
    with pytest.raises(WorkflowError, match="--hpcgate-token-file"):
        token_source(ExecutorSettings(token_file=str(tmp_path / "missing")))
    full = ExecutorSettings(client_id="c", client_secret="s", token_url="http://idp/token")
    assert isinstance(token_source(full), ClientCredentials)


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        (ExecutorSettings(system="s", token="t"), "--hpcgate-target"),
        (ExecutorSettings(target="h:1", token="t"), "--hpcgate-system"),
        (ExecutorSettings(target="h:1", system="s", token="t", staging=True), "remote-workdir"),
        (
            ExecutorSettings(target="h:1", system="s", token="t", remote_workdir="rel"),
            "absolute",
        ),
    ],
)
def test_missing_settings_name_the_flag(settings: ExecutorSettings, flag: str) -> None:
    with pytest.raises(WorkflowError, match=flag):
        open_client(settings)
