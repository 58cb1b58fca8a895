"""Scenario: Snakemake driving 20 concurrent jobs, the hpcgate plugin against the Slurm plugin.

The same workflow (20 independent ``work`` jobs, each ``sleep`` then a
``date +%s.%N`` written into its output, and a local ``all``) runs twice as
alice, in a fresh directory of hers, with the interpreter of
dev/jobpython.py and ``--jobs 20``:

- ``--executor hpcgate`` against the bench's server (alice's token in a
  file), defaults otherwise;
- ``--executor slurm`` (snakemake-executor-plugin-slurm, its defaults) with
  the cluster's own sbatch/squeue/sacct, run locally as alice: the login
  node is this host. The Slurm commands are reached through wrappers on
  PATH that log each call and set ``SLURM_CONF`` (the loopback cluster's
  configuration is not at the default path, and the jobstep plugin strips
  ``SLURM_*`` from the environment before its ``srun``).

Measured, never asserted, for each:

- scheduler commands: for the Slurm plugin every command it ran on the
  login node (``srun`` inside the jobs is counted apart, in ``extra``); for
  hpcgate the server's poller commands (its Prometheus counter) plus one
  ``sbatch`` per submitted job;
- slurmctld RPCs of alice (``sdiag``, by user) and slurmdbd RPCs of alice
  (``sacctmgr show stats``), before and after; these count anything alice
  does meanwhile (other test runs on a shared cluster), see ``extra``;
- the time from a job's end (the timestamp its rule wrote last; the
  Snakemake process in the job still has to exit after it, the same for
  both) to the workflow's Snakemake printing ``Finished jobid``, one sample
  per job;
- the wall time of the whole workflow.

One run per plugin (a run takes one to three minutes); the 20 jobs are the
latency figure's samples. The node has 8 CPUs, so at most 8 jobs run at once.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import jobpython
from bench.context import Context
from bench.measure import describe
from bench.model import Figure, Status
from bench.scenarios.watch import COMMANDS, count_metric, scrape

SCENARIO = "snakemake"
JOBS = 20
SLEEP = 8
RUN_TIMEOUT = 600.0
USER = jobpython.USER
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo", "sacctmgr", "srun")
WORKFLOW = f"""
rule all:
    input: expand("out/{{i}}.txt", i=range({JOBS}))

rule work:
    output: "out/{{i}}.txt"
    resources: runtime=10, mem_mb=100
    shell: "sleep {SLEEP}; date +%s.%N > {{output}}"
"""
OUTPUT = re.compile(r"^\s+output: (out/\d+\.txt)$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"Finished jobid: (\d+) ")
PLUGINS = ("hpcgate", "slurm")


@dataclass
class _Outcome:
    """What one workflow run showed."""

    returncode: int = -1
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    commands: float = 0.0
    breakdown: dict[str, int] = field(default_factory=dict)
    ctld_rpcs: int | None = None  # None: the daemon restarted meanwhile (its counters reset)
    dbd_rpcs: int | None = None
    tail: str = ""


def _user_rpcs(text: str, user: str) -> int:
    """The ``count`` of ``user`` in the "statistics by user" section of sdiag/sacctmgr."""
    section = text.split("statistics by user", 1)[-1]
    match = re.search(rf"^\s*{re.escape(user)}\s+\(\s*\d+\)\s+count:(\d+)", section, re.M)
    return int(match.group(1)) if match else 0


def _rpcs(env: dict[str, str]) -> tuple[int, int]:
    """alice's RPCs so far: slurmctld's (sdiag) and slurmdbd's (sacctmgr show stats)."""
    ctld = subprocess.run(["sdiag"], capture_output=True, text=True, env=env, check=True)
    dbd = subprocess.run(
        ["sacctmgr", "show", "stats"], capture_output=True, text=True, env=env, check=False
    )
    return _user_rpcs(ctld.stdout, USER), _user_rpcs(dbd.stdout, USER)


def _wrappers(directory: Path, log: Path, slurm_conf: str) -> Path:
    """Scripts named after the Slurm commands: log the call, run the real one with the conf."""
    bin_dir = directory / ".slurm-bin"
    bin_dir.mkdir()
    for name in SLURM_COMMANDS:
        real = shutil.which(name, path="/usr/bin:/usr/sbin:/bin")
        if real is None:
            continue
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\necho {name} >> '{log}'\nSLURM_CONF='{slurm_conf}' exec {real} \"$@\"\n"
        )
        script.chmod(0o755)
    return bin_dir


def _workdir(plugin: str) -> Path:
    user = pwd.getpwnam(USER)
    path = Path(user.pw_dir) / f"hpcgate-bench-snakemake-{plugin}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "Snakefile").write_text(WORKFLOW)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


async def _drive(
    argv: list[str], workdir: Path, env: dict[str, str]
) -> tuple[int, dict[str, float], list[str]]:
    """Run Snakemake, stamping each "Finished jobid" line as it arrives (by output file).

    Returns the exit status, the stamps and Snakemake's output lines.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    outputs: dict[str, str] = {}
    noticed: dict[str, float] = {}
    pending: str | None = None
    lines: list[str] = []
    async for raw in process.stdout:
        now = time.time()
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if match := OUTPUT.match(line):
            pending = match.group(1)
        elif (match := JOBID.match(line)) and pending is not None:
            outputs[match.group(1)] = pending
            pending = None
        elif (match := FINISHED.search(line)) and match.group(1) in outputs:
            noticed[outputs[match.group(1)]] = now
    return await process.wait(), noticed, lines


async def _run_one(ctx: Context, plugin: str, python: Path) -> _Outcome:
    """One workflow run under ``plugin``, with its counts before and after."""
    slurm_env = {**os.environ, **ctx.stack.cluster["slurm"]["env"]}
    workdir = _workdir(plugin)
    outcome = _Outcome()
    try:
        args = ["--jobs", str(JOBS), "--latency-wait", "10", "--executor", plugin]
        env = jobpython.snakemake_env(python)
        log = workdir / ".slurm-commands.log"
        if plugin == "hpcgate":
            token = workdir / ".token"
            token.write_text(ctx.stack.token(USER))
            user = pwd.getpwnam(USER)
            os.chown(token, user.pw_uid, user.pw_gid)
            token.chmod(0o600)
            args += [
                f"--hpcgate-target={ctx.stack.grpc_target}",
                f"--hpcgate-system={ctx.stack.system}",
                f"--hpcgate-token-file={token}",
            ]
        else:
            log.touch()
            log.chmod(0o666)
            conf = ctx.stack.cluster["slurm"]["env"]["SLURM_CONF"]
            env["PATH"] = f"{_wrappers(workdir, log, conf)}:{env['PATH']}"
        metrics_before = count_metric(await scrape(ctx.stack.metrics_url), COMMANDS)
        ctld_before, dbd_before = await asyncio.to_thread(_rpcs, slurm_env)
        started = time.monotonic()
        outcome.returncode, noticed, lines = await asyncio.wait_for(
            _drive(jobpython.snakemake_argv(python, args), workdir, env), RUN_TIMEOUT
        )
        outcome.wall = time.monotonic() - started
        outcome.tail = "\n".join(lines[-30:])
        ctld_after, dbd_after = await asyncio.to_thread(_rpcs, slurm_env)
        metrics_after = count_metric(await scrape(ctx.stack.metrics_url), COMMANDS)
        if ctld_after >= ctld_before:
            outcome.ctld_rpcs = ctld_after - ctld_before
        if dbd_after >= dbd_before:
            outcome.dbd_rpcs = dbd_after - dbd_before
        for output, seen in sorted(noticed.items()):
            outcome.latencies.append(seen - float((workdir / output).read_text()))
        if plugin == "hpcgate":
            polls = (metrics_after[1] if metrics_after else 0) - (
                metrics_before[1] if metrics_before else 0
            )
            submitted = sum("submitted as hpcgate job" in line for line in lines)
            outcome.breakdown = {"poller commands": int(polls), "sbatch": submitted}
            outcome.commands = polls + submitted
        else:
            counts = Counter(log.read_text().split())
            outcome.breakdown = dict(counts)
            outcome.commands = sum(n for name, n in counts.items() if name != "srun")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def _figures() -> dict[str, Figure]:
    params = {"jobs": JOBS}
    figures: dict[str, Figure] = {}
    for plugin in PLUGINS:
        label = "hpcgate plugin" if plugin == "hpcgate" else "slurm plugin"
        baseline = None if plugin == "slurm" else "{} (slurm plugin)"
        for what, unit in (
            ("scheduler commands", "commands"),
            ("slurmctld RPCs (alice)", "RPCs"),
            ("slurmdbd RPCs (alice)", "RPCs"),
            ("job end to noticed", "s"),
            ("workflow wall time", "s"),
        ):
            name = f"{what} ({label})"
            figures[f"{plugin}:{what}"] = Figure(
                SCENARIO,
                name,
                unit,
                params=dict(params),
                baseline=baseline.format(what) if baseline else None,
            )
    return figures


async def run(ctx: Context) -> list[Figure]:
    """Both plugins, one after the other, on the same workflow."""
    figures = _figures()
    try:
        python = await asyncio.to_thread(jobpython.ensure)
    except Exception as error:
        return _fail(figures, f"job python: {describe(error)}")
    for plugin in PLUGINS:
        mine = {k.split(":", 1)[1]: f for k, f in figures.items() if k.startswith(plugin)}
        try:
            outcome = await _run_one(ctx, plugin, python)
        except Exception as error:
            _fail(mine, describe(error))
            continue
        if outcome.returncode != 0 or len(outcome.latencies) != JOBS:
            _fail(
                mine,
                f"exit {outcome.returncode}, {len(outcome.latencies)} of {JOBS} jobs: "
                + outcome.tail[-800:],
            )
            continue
        mine["scheduler commands"].samples.append(outcome.commands)
        mine["scheduler commands"].extra["breakdown"] = outcome.breakdown
        for what, count in (
            ("slurmctld RPCs (alice)", outcome.ctld_rpcs),
            ("slurmdbd RPCs (alice)", outcome.dbd_rpcs),
        ):
            if count is None:
                mine[what].status = Status.NOT_AVAILABLE
                mine[what].detail = "the daemon restarted during the run: its counters reset"
            else:
                mine[what].samples.append(count)
        mine["job end to noticed"].samples.extend(outcome.latencies)
        mine["workflow wall time"].samples.append(outcome.wall)
    return list(figures.values())


def _fail(figures: dict[str, Figure], detail: str) -> list[Figure]:
    for figure in figures.values():
        figure.samples.clear()
        figure.status, figure.detail = Status.FAILED, detail
    return list(figures.values())
