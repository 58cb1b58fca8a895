"""A Snakemake job's resources as ``#SBATCH`` directives, the way the Slurm plugin maps them.

hpcgate's job description carries the partition and the account as fields;
everything else Slurm should know (time limit, memory, tasks, CPUs, the
user's ``slurm_extra``) goes into the script's ``#SBATCH`` lines, which
sbatch reads as if they were given on its command line. The names follow
snakemake-executor-plugin-slurm:

========================  ======================================
resource                  sbatch
========================  ======================================
``slurm_partition``       ``--partition`` (``partition`` also)
``slurm_account``         ``--account``
``runtime`` (minutes)     ``--time``
``mem_mb_per_cpu``        ``--mem-per-cpu`` (wins over mem_mb)
``mem_mb``                ``--mem``
``tasks``                 ``--ntasks`` (1 by default)
``cpus_per_task``         ``--cpus-per-task`` (threads by default;
                          negative: none)
``nodes``                 ``--nodes``
``constraint``            ``--constraint``
``qos``                   ``--qos``
``slurm_extra``           its options, verbatim
========================  ======================================
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from snakemake_interface_common.exceptions import WorkflowError


@dataclass(frozen=True)
class Placement:
    """Where the job goes, as hpcgate's job description fields take it."""

    partition: str | None
    account: str | None


def placement(
    resources: Mapping[str, object], *, partition: str | None, account: str | None
) -> Placement:
    """The job's partition and account: its resources first, then the plugin's defaults."""
    chosen_partition = resources.get("slurm_partition") or resources.get("partition") or partition
    chosen_account = resources.get("slurm_account") or account
    return Placement(
        partition=str(chosen_partition) if chosen_partition else None,
        account=str(chosen_account) if chosen_account else None,
    )


def _positive_int(resources: Mapping[str, object], name: str) -> int | None:
    value = resources.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkflowError(f"resource {name}: must be an integer, got {value!r}")
    return value


def _word(value: object, name: str) -> str:
    text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise WorkflowError(f"resource {name}: must be one line")
    return text


def sbatch_options(resources: Mapping[str, object], threads: int) -> list[str]:
    """sbatch options for the job's resources, each a complete ``--flag=value`` word."""
    options: list[str] = []
    runtime = resources.get("runtime")
    if runtime:
        options.append(f"--time={_word(runtime, 'runtime')}")
    per_cpu = _positive_int(resources, "mem_mb_per_cpu")
    memory = _positive_int(resources, "mem_mb")
    if per_cpu:
        options.append(f"--mem-per-cpu={per_cpu}")
    elif memory:
        options.append(f"--mem={memory}")
    nodes = _positive_int(resources, "nodes")
    if nodes is not None:
        if nodes < 1:
            raise WorkflowError("resource nodes: must be at least 1")
        options.append(f"--nodes={nodes}")
    options.append(f"--ntasks={_positive_int(resources, 'tasks') or 1}")
    cpus = _positive_int(resources, "cpus_per_task")
    if cpus is None:
        options.append(f"--cpus-per-task={max(1, threads)}")
    elif cpus >= 0:
        options.append(f"--cpus-per-task={max(1, cpus)}")
    for name, flag in (("constraint", "--constraint"), ("qos", "--qos")):
        value = resources.get(name)
        if value is not None:
            options.append(f"{flag}={_word(value, name)}")
    extra = resources.get("slurm_extra")
    if extra:
        try:
            options.extend(shlex.split(_word(extra, "slurm_extra")))
        except ValueError as error:
            raise WorkflowError(f"resource slurm_extra: {error}") from None
    return options


def job_script(options: list[str], command: str) -> str:
    """A batch script: the directives, then the command (Snakemake run on the node)."""
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {shlex.quote(option)}" for option in options]
    lines += ["set -e", command, ""]
    return "\n".join(lines)
