"""Snakemake workflows run with ``--executor hpcgate`` as alice on the loopback cluster.

Snakemake runs as alice (a process of her uid) with the interpreter of
dev/jobpython.py, which her batch jobs can run too; the settings come from
a profile (``config.yaml``) plus one flag, the token from a file of hers.
Every Snakemake job is a Slurm job submitted through the test's hpcgate
server; ends are learnt from the plugin's WatchJobs stream.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import jobpython
from cluster_fixture import Cluster
from conftest import LiveService

USER = jobpython.USER
RUN_TIMEOUT = 150.0

# Seven rules: one input, a fan-out of four, their gather, a rule with
# resources, a failing rule, and one that depends on the failing one.
WORKFLOW = """
SAMPLES = ["a", "b", "c", "d"]

rule all:
    input: "summary.txt", "resources.txt"

rule make_input:
    output: "data/raw.txt"
    shell: "sleep 4; echo raw > {output}"

rule fan:
    input: "data/raw.txt"
    output: "fan/{sample}.txt"
    shell: "echo {wildcards.sample} $(cat {input}) $(id -un) > {output}"

rule gather:
    input: expand("fan/{sample}.txt", sample=SAMPLES)
    output: "summary.txt"
    shell: "cat {input} > {output}"

rule with_resources:
    output: "resources.txt"
    threads: 2
    resources:
        mem_mb=300,
        runtime=7,
        slurm_partition="debug",
        slurm_account="proj2",
        slurm_extra="--comment=from-snakemake",
    shell:
        "echo cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE"
        " partition=$SLURM_JOB_PARTITION account=$SLURM_JOB_ACCOUNT"
        " limit=$(squeue -h -j $SLURM_JOB_ID -o %l) comment=$(squeue -h -j $SLURM_JOB_ID -o %k)"
        " > {output}"

rule broken:
    output: "broken.txt"
    log: "logs/broken.log"
    shell: "echo 'broken rule says: cannot go on' > {log}; exit 3"

rule after_broken:
    input: "broken.txt"
    output: "never.txt"
    shell: "touch {output}"
"""

SLEEPERS = """
rule all:
    input: expand("slept/{i}.txt", i=range(3))

rule sleeper:
    output: "slept/{i}.txt"
    shell: "sleep 300; touch {output}"
"""

STAGED = """
rule all:
    input: "out/upper.txt", "out/count.txt"

rule upper:
    input: "in/words.txt"
    output: "out/upper.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule count:
    input: "out/upper.txt"
    output: "out/count.txt"
    log: "logs/count.log"
    shell: "wc -l < {input} > {output}; echo counted > {log}"
"""


@dataclass
class Run:
    """A finished Snakemake run: exit status and what it wrote."""

    returncode: int
    output: str


@pytest.fixture(scope="module")
async def job_python(cluster: Cluster) -> Path:
    """The interpreter alice and her jobs run Snakemake with (built once, reused)."""
    return await asyncio.to_thread(jobpython.ensure)


def _chown(path: Path) -> None:
    user = pwd.getpwnam(USER)
    os.chown(path, user.pw_uid, user.pw_gid)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    _chown(path.parent)
    _chown(path)


def _profile(directory: Path, live: LiveService, **extra: str) -> Path:
    """A profile with the plugin's settings, and alice's token in a file of hers."""
    token = directory / ".hpcgate-token"
    _write(token, live.token(USER))
    token.chmod(0o600)
    lines = [
        "executor: hpcgate",
        "jobs: 10",
        "latency-wait: 5",
        f"hpcgate-target: {live.grpc_target}",
        f"hpcgate-system: {live.system}",
        f"hpcgate-token-file: {token}",
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    _write(directory / "profile" / "config.yaml", "\n".join(lines) + "\n")
    return directory / "profile"


async def _start(
    python: Path, workdir: Path, args: list[str]
) -> tuple[asyncio.subprocess.Process, Path]:
    """Snakemake as alice in ``workdir``; its output goes to a file there."""
    log = workdir / ".snakemake-run.log"
    handle = log.open("wb")
    _chown(log)
    process = await asyncio.create_subprocess_exec(
        *jobpython.snakemake_argv(python, args),
        cwd=workdir,
        env=jobpython.snakemake_env(python),
        stdout=handle,
        stderr=asyncio.subprocess.STDOUT,
    )
    handle.close()
    return process, log


async def _run(python: Path, workdir: Path, args: list[str]) -> Run:
    process, log = await _start(python, workdir, args)
    try:
        returncode = await asyncio.wait_for(process.wait(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"Snakemake ran for {RUN_TIMEOUT} s:\n{log.read_text(errors='replace')}")
    return Run(returncode, log.read_text(errors="replace"))


@pytest.fixture
async def workdir(remote_dir: str) -> AsyncIterator[Path]:
    """alice's fresh directory, which the workflow host and the node share."""
    yield Path(remote_dir)


async def test_a_workflow_runs_as_alice_with_keep_going(
    live: LiveService, job_python: Path, workdir: Path
) -> None:
    _write(workdir / "Snakefile", WORKFLOW)
    profile = _profile(workdir, live)
    run = await _run(
        job_python,
        workdir,
        [
            "--profile",
            str(profile),
            "--hpcgate-status-interval",
            "0.2",
            "--keep-going",
            "all",
            "never.txt",
        ],
    )
    assert run.returncode != 0, run.output  # the broken rule failed the run
    fan = sorted((workdir / "fan").iterdir())
    assert [p.name for p in fan] == ["a.txt", "b.txt", "c.txt", "d.txt"], run.output
    summary = (workdir / "summary.txt").read_text().splitlines()
    assert summary == [f"{s} raw {USER}" for s in "abcd"], run.output
    assert (workdir / "summary.txt").stat().st_uid == pwd.getpwnam(USER).pw_uid
    # The resources reached sbatch: CPUs, memory, partition, account, time limit, slurm_extra.
    resources = (workdir / "resources.txt").read_text().split()
    assert resources == [
        "cpus=2",
        "mem=300",
        "partition=debug",
        "account=proj2",
        "limit=7:00",
        "comment=from-snakemake",
    ], resources
    # The failing rule is reported failed, with its own log and the job's.
    assert not (workdir / "never.txt").exists()
    assert not (workdir / "broken.txt").exists()
    assert re.search(r"Error in rule broken", run.output), run.output
    assert "logs/broken.log" in run.output, run.output
    assert re.search(r"hpcgate job \d+ ended FAILED", run.output), run.output
    job_log = re.search(r"\.snakemake/hpcgate_logs/rule_broken/\d+-\d+\.log", run.output)
    assert job_log, run.output
    assert "exit status 3" in (workdir / job_log.group(0)).read_text()
    assert (workdir / "logs/broken.log").read_text() == "broken rule says: cannot go on\n"
    # The 8 jobs that could run went through hpcgate (rule all is local).
    assert len(re.findall(r"submitted as hpcgate job \d+", run.output)) == 8, run.output


async def test_without_keep_going_the_run_stops_at_the_failure(
    live: LiveService, job_python: Path, workdir: Path
) -> None:
    _write(workdir / "Snakefile", WORKFLOW)
    profile = _profile(workdir, live)
    run = await _run(job_python, workdir, ["--profile", str(profile), "never.txt", "all"])
    assert run.returncode != 0, run.output
    assert re.search(r"Error in rule broken", run.output), run.output
    # make_input was running when broken failed: it finishes, nothing new starts.
    assert (workdir / "data/raw.txt").exists(), run.output
    assert not (workdir / "fan").exists(), run.output
    assert not (workdir / "summary.txt").exists(), run.output


async def _squeue(cluster: Cluster, job_ids: list[int]) -> dict[int, str]:
    """The jobs' states as alice sees them with squeue over SSH."""
    command = shlex.join(
        ["squeue", "-h", "--states=all", "-o", "%i %T", "-j", ",".join(map(str, job_ids))]
    )
    async with cluster.connect(USER) as conn:
        result = await conn.run(command, check=True)
    states: dict[int, str] = {}
    for line in str(result.stdout).splitlines():
        job, state = line.split()
        states[int(job)] = state
    return states


async def test_sigint_cancels_the_workflows_slurm_jobs(
    live: LiveService, cluster: Cluster, job_python: Path, workdir: Path
) -> None:
    _write(workdir / "Snakefile", SLEEPERS)
    profile = _profile(workdir, live)
    process, log = await _start(job_python, workdir, ["--profile", str(profile)])
    job_ids: list[int] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            job_ids = [int(j) for j in re.findall(r"hpcgate job (\d+)", log.read_text())]
            if len(job_ids) == 3 and set((await _squeue(cluster, job_ids)).values()) == {"RUNNING"}:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"the 3 jobs did not all run: {log.read_text()}")
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    states = await _squeue(cluster, job_ids)
    for _ in range(20):  # scancel is asynchronous: the state follows shortly
        if set(states.values()) == {"CANCELLED"}:
            break
        await asyncio.sleep(0.5)
        states = await _squeue(cluster, job_ids)
    assert set(states.values()) == {"CANCELLED"}, (states, log.read_text())
    assert not (workdir / "slept").exists() or not any((workdir / "slept").iterdir())


async def test_staging_moves_inputs_and_outputs_through_hpcgate(
    live: LiveService, cluster: Cluster, job_python: Path, workdir: Path
) -> None:
    # The workflow host's directory and the cluster's are different places.
    local = workdir / "host"
    remote = f"{workdir}/cluster"
    _write(local / "Snakefile", STAGED)
    _write(local / "in" / "words.txt", "alpha\nbeta\ngamma\n")
    profile = _profile(
        local,
        live,
        **{
            "hpcgate-staging": "true",
            "hpcgate-remote-workdir": remote,
            "hpcgate-remote-python": str(job_python),
        },
    )
    run = await _run(job_python, local, ["--profile", str(profile)])
    assert run.returncode == 0, run.output
    _check_staged(local, Path(remote))


def _check_staged(local: Path, remote: Path) -> None:
    """Outputs came back to the host; inputs and the Snakefile went to the cluster's side."""
    assert (local / "out/upper.txt").read_text() == "ALPHA\nBETA\nGAMMA\n"
    assert (local / "out/count.txt").read_text().strip() == "3"
    assert (local / "logs/count.log").read_text() == "counted\n"
    assert (remote / "out/upper.txt").read_text() == "ALPHA\nBETA\nGAMMA\n"
    assert (remote / "in/words.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert (remote / "Snakefile").read_text() == textwrap.dedent(STAGED)
    assert not (remote / "host").exists()
