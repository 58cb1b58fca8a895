"""Batch jobs as plain data, and the interface of a job-scheduler adapter (:class:`JobScheduler`).

Nothing here knows Slurm, protobuf or HTTP: the Slurm adapter
(:mod:`hpcgate.server.scheduler.slurm.jobs`) produces these values, the watch
hub (:mod:`hpcgate.server.scheduler.watch`) compares them, and the Scheduler
servicer maps them onto the ``hpcgate.v1`` messages, whose field names they
share.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hpcgate.server.scheduler.commands import RunWithInput


class JobState(enum.Enum):
    """hpcgate's scheduler-independent job state (``hpcgate.v1.JobState`` without prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REQUEUED = "REQUEUED"
    CONFIGURING = "CONFIGURING"
    STOPPED = "STOPPED"
    REVOKED = "REVOKED"

    @property
    def terminal(self) -> bool:
        """Whether a job in this state will never change again."""
        return self in TERMINAL_STATES


# The states a job never leaves (see the JobState comment in scheduler.proto).
TERMINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.OUT_OF_MEMORY,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.REVOKED,
    }
)

# ListJobs' time windows (FirecREST's values) and how many hours each spans.
TIME_WINDOWS: Mapping[str, int] = {"1h": 1, "8h": 8, "24h": 24, "3d": 72, "7d": 168}
DEFAULT_TIME_WINDOW = "24h"


@dataclass(frozen=True)
class JobStatus:
    """State and exit information of a job or step; ``state`` is the scheduler's own word."""

    state: str
    normalized_state: JobState
    state_reason: str | None = None
    exit_code: int | None = None
    interrupt_signal: int | None = None


@dataclass(frozen=True)
class JobTime:
    """Timing of a job or step: epoch seconds, durations in seconds, ``limit`` in minutes."""

    elapsed: int | None = None
    start: int | None = None
    end: int | None = None
    suspended: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class JobTask:
    """One step of a job (Slurm: ``1234.batch``, ``1234.0``)."""

    id: str
    name: str
    status: JobStatus
    time: JobTime


@dataclass(frozen=True)
class Job:
    """One job as the scheduler reports it."""

    job_id: int
    name: str
    status: JobStatus
    time: JobTime = field(default_factory=JobTime)
    tasks: tuple[JobTask, ...] = ()
    account: str | None = None
    allocation_nodes: int = 0
    cluster: str = ""
    group: str | None = None
    nodes: str = ""
    partition: str = ""
    kill_request_user: str | None = None
    user: str | None = None
    working_directory: str = ""
    priority: int | None = None


@dataclass(frozen=True)
class JobMetadata:
    """A job's batch script and standard stream paths (None where unknown)."""

    job_id: int
    script: str | None = None
    standard_input: str | None = None
    standard_output: str | None = None
    standard_error: str | None = None


@dataclass(frozen=True)
class JobDescription:
    """A validated job to submit: exactly one of ``script`` and ``script_path``.

    ``env`` holds the variables to set in the job's environment, in the
    order given; every name is a valid shell identifier.
    """

    working_directory: str
    script: str | None = None
    script_path: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    account: str | None = None
    partition: str | None = None
    reservation: str | None = None
    constraints: str | None = None
    standard_input: str | None = None
    standard_output: str | None = None
    standard_error: str | None = None


@dataclass(frozen=True)
class JobQuery:
    """Which jobs ListJobs returns: the caller's (or everyone's), filtered."""

    user: str
    allusers: bool = False
    account: str | None = None
    name: str | None = None
    time_window: str = DEFAULT_TIME_WINDOW


class JobScheduler(Protocol):
    """What the Scheduler service and the watch hub ask of a scheduler adapter.

    Every method runs its commands through ``run``, i.e. as the calling user,
    and gets the caller's name: ``user`` (in ``jobs``, ``query.user``). An
    adapter over SSH needs only ``run`` (the session already is the caller);
    one over a REST API sends requests on behalf of ``user``.
    Errors are :class:`hpcgate.server.errors.ServiceError`.
    """

    async def submit(self, run: RunWithInput, user: str, job: JobDescription) -> int:
        """Submit ``job``; return its id."""
        ...

    async def jobs(self, run: RunWithInput, query: JobQuery) -> list[Job]:
        """Live and recently finished jobs matching ``query``."""
        ...

    async def job(self, run: RunWithInput, user: str, job_id: int) -> list[Job]:
        """Job ``job_id`` (several entries for an array or heterogeneous job); NOT_FOUND."""
        ...

    async def metadata(self, run: RunWithInput, user: str, job_id: int) -> list[JobMetadata]:
        """Script and stream paths of job ``job_id``; NOT_FOUND."""
        ...

    async def cancel(self, run: RunWithInput, user: str, job_id: int) -> None:
        """Cancel job ``job_id``; NOT_FOUND, PERMISSION_DENIED."""
        ...

    async def attach(self, run: RunWithInput, user: str, job_id: int, command: str) -> None:
        """Run ``command`` inside the allocation of job ``job_id`` and wait for it."""
        ...

    async def snapshot(
        self, run: RunWithInput, user: str, job_ids: Collection[int]
    ) -> dict[int, Job]:
        """The current state of ``user``'s jobs plus the jobs ``job_ids``, by id, cheaply.

        This is what a watch poller calls every interval, so it should cost
        as few scheduler commands as the scheduler allows.
        """
        ...
