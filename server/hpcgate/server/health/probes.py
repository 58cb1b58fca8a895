"""One probe per service type: SSH, scheduler, each filesystem, S3.

A probe is an async callable that returns normally when the service works
and raises otherwise; the checker times it and records the outcome. Probes
run as the configured service account, never as a caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from hpcgate.server.config import S3Config, SystemConfig
from hpcgate.server.scheduler.cluster import SchedulerStatus
from hpcgate.server.scheduler.commands import Output, Run
from hpcgate.server.transfer.s3 import BucketLister

ProbeFn = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Probe:
    """A named check of one service of a system."""

    service_type: str  # FirecREST's BackendServiceType: ssh, scheduler, filesystem, s3
    check: ProbeFn
    path: str | None = None  # the filesystem's mount point, for filesystem probes
    # The failure reasons (ServiceError.reason) gated calls are refused with
    # while the probe fails; any other failure is SERVICE_UNHEALTHY.
    reasons: frozenset[str] = frozenset()


class ProbeError(Exception):
    """The probed service answered, but wrongly."""


async def _ssh(run: Run) -> None:
    output = await run(["true"])
    if output.exit_status != 0:
        raise ProbeError(output.stderr.decode(errors="replace").strip() or "`true` failed")


async def _filesystem(run: Run, path: str) -> None:
    output = await run(["test", "-d", path, "-a", "-x", path])
    if output.exit_status != 0:
        raise ProbeError(f"{path} is not an accessible directory")


def _s3(s3: S3Config) -> ProbeFn:
    """A probe listing the buckets (:class:`BucketLister`, made on first use and kept).

    The probe has one thread of its own: a probe still stuck in a hung store
    makes the next one wait (and time out, so S3 stays reported down) instead
    of taking another thread from asyncio's default executor.
    """
    lister: list[BucketLister] = []
    thread = ThreadPoolExecutor(1, thread_name_prefix="s3-probe")

    def list_buckets() -> None:
        if not lister:
            lister.append(BucketLister(s3, s3.endpoint))
        lister[0].list_buckets()

    async def check() -> None:
        await asyncio.get_running_loop().run_in_executor(thread, list_buckets)

    return check


def _scheduler(
    system: SystemConfig, run_as_service: Run, service_account: str, scheduler: SchedulerStatus
) -> Probe:
    """The scheduler's ping, as the service account.

    For ``slurm-rest`` that is slurmrestd's ``ping`` (which asks slurmctld
    in turn): while slurmrestd does not answer, gated calls are refused
    with its own reason, SLURMRESTD_UNAVAILABLE, and /status says so.
    """
    check = partial(scheduler.ping, run_as_service, service_account)
    if system.scheduler.type == "slurm-rest":
        return Probe("scheduler", check, reasons=frozenset({"SLURMRESTD_UNAVAILABLE"}))
    return Probe("scheduler", check)


def probes_for(
    system: SystemConfig,
    run_as_service: Callable[[Sequence[str]], Awaitable[Output]],
    service_account: str,
    scheduler: SchedulerStatus,
) -> list[Probe]:
    """The probes of every service ``system`` has, run as ``service_account``."""
    probes = [
        Probe("ssh", partial(_ssh, run_as_service)),
        _scheduler(system, run_as_service, service_account, scheduler),
    ]
    probes += [
        Probe("filesystem", partial(_filesystem, run_as_service, fs.path), path=fs.path)
        for fs in system.filesystems
    ]
    if system.s3 is not None:
        probes.append(Probe("s3", _s3(system.s3)))
    return probes
