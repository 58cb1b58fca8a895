"""The Scheduler service: submit, list, inspect, cancel, attach to and watch jobs.

The servicer checks the request, calls the system's job adapter (or its watch
hub) as the caller, and maps the plain results onto ``hpcgate.v1`` messages.
Request fields are named in errors by their JSON names (``job.workingDirectory``),
as REST clients spell them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, cast, get_args

from google.protobuf import message, struct_pb2, timestamp_pb2

from hpcgate.server.auth.authz import authorize
from hpcgate.server.errors import invalid_argument
from hpcgate.server.rpc.authentication import current_identity
from hpcgate.server.runtime import Runtime, SystemRuntime
from hpcgate.server.scheduler.jobmodels import (
    DEFAULT_TIME_WINDOW,
    TIME_WINDOWS,
    Job,
    JobDescription,
    JobQuery,
    JobStatus,
    JobTime,
    RunWithInput,
)
from hpcgate.server.scheduler.watch import Baseline, Subscription
from hpcgate.server.servicers.context import Context
from hpcgate.server.ssh import deadline_after
from hpcgate.server.transfer.jobs import ACCOUNT_NAME
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc

T = TypeVar("T")

# FirecREST's environment for a job submitted without one.
DEFAULT_ENV = (("F7T_version", "v2.0.0"),)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Request fields of JobDescriptionModel passed to the scheduler as they are.
_OptionalText = Literal[
    "name",
    "account",
    "partition",
    "reservation",
    "constraints",
    "standard_input",
    "standard_output",
    "standard_error",
]
_OPTIONAL_TEXT: tuple[_OptionalText, ...] = get_args(_OptionalText)
# Scalar fields shared by the domain Job and the JobModel message.
_JOB_SCALARS = tuple(f.name for f in fields(Job) if f.name not in ("status", "time", "tasks"))


def _json_name(msg: message.Message, field: str, prefix: str = "") -> str:
    """How REST clients spell ``field`` of ``msg`` (``job.workingDirectory``)."""
    return prefix + msg.DESCRIPTOR.fields_by_name[field].json_name


def _text(value: str, field: str) -> str:
    """``value`` if it can be an argument of a command: not empty, no NUL."""
    if not value:
        raise invalid_argument(field, "must not be empty")
    if "\x00" in value:
        raise invalid_argument(field, "must not contain NUL")
    return value


def _absolute(value: str, field: str) -> str:
    """``value`` if it is an absolute path."""
    if not _text(value, field).startswith("/"):
        raise invalid_argument(field, f"must be an absolute path, got {value!r}")
    return value


def _env(job: scheduler_pb2.JobDescriptionModel) -> tuple[tuple[str, str], ...]:
    """The job's environment from FirecREST's object form or list-of-``NAME=value`` form."""
    field = _json_name(job, "env", "job.")
    kind = job.env.WhichOneof("kind") if job.HasField("env") else None
    if kind in (None, "null_value"):
        return DEFAULT_ENV
    pairs: list[tuple[str, Any]]
    if kind == "struct_value":
        pairs = sorted((name, value) for name, value in job.env.struct_value.fields.items())
    elif kind == "list_value":
        pairs = []
        for item in job.env.list_value.values:
            text = item.string_value if item.WhichOneof("kind") == "string_value" else None
            if text is None or "=" not in text:
                raise invalid_argument(field, 'list items must be "NAME=value" strings')
            name, _, value = text.partition("=")
            pairs.append((name, struct_pb2.Value(string_value=value)))
    else:
        raise invalid_argument(field, 'must be an object or a list of "NAME=value" strings')
    env = []
    for name, value in pairs:
        if not _ENV_NAME.match(name):
            raise invalid_argument(field, f"{name!r} is not a valid variable name")
        if value.WhichOneof("kind") != "string_value":
            raise invalid_argument(field, f"the value of {name} must be a string")
        if "\x00" in value.string_value:
            raise invalid_argument(field, f"the value of {name} must not contain NUL")
        env.append((name, value.string_value))
    return tuple(env)


def job_description(job: scheduler_pb2.JobDescriptionModel) -> JobDescription:
    """The validated JobDescription of a SubmitJob request (INVALID_ARGUMENT naming the field)."""
    source = job.WhichOneof("script_source")
    script = script_path = None
    if source == "script":
        script = _text(job.script, _json_name(job, "script", "job."))
    elif source == "script_path":
        script_path = _absolute(job.script_path, _json_name(job, "script_path", "job."))
    else:
        raise invalid_argument("job.script", "give exactly one of script and scriptPath")
    optional = {
        name: _text(getattr(job, name), _json_name(job, name, "job."))
        for name in _OPTIONAL_TEXT
        if job.HasField(name)
    }
    return JobDescription(
        working_directory=_absolute(
            job.working_directory, _json_name(job, "working_directory", "job.")
        ),
        script=script,
        script_path=script_path,
        env=_env(job),
        **optional,
    )


def _job_id(job_id: int) -> int:
    """A job id from a request; 0 is what an absent one parses to."""
    if job_id == 0:
        raise invalid_argument("jobId", "must be a job id (a positive number)")
    return job_id


def _status(status: JobStatus) -> scheduler_pb2.JobStatus:
    """The JobStatus message (None fields stay unset, as proto3 optional wants)."""
    return scheduler_pb2.JobStatus(
        state=status.state,
        state_reason=status.state_reason,
        exit_code=status.exit_code,
        interrupt_signal=status.interrupt_signal,
        normalized_state=_normalized(status),
    )


def _normalized(status: JobStatus | None) -> scheduler_pb2.JobState.ValueType:
    """The proto JobState of ``status``, UNSPECIFIED for no status (a job seen first)."""
    if status is None:
        return scheduler_pb2.JOB_STATE_UNSPECIFIED
    return scheduler_pb2.JobState.Value(f"JOB_STATE_{status.normalized_state.name}")


def _time(time_: JobTime) -> scheduler_pb2.JobTime:
    """The JobTime message (the dataclass has the message's field names)."""
    return scheduler_pb2.JobTime(
        **{f.name: getattr(time_, f.name) for f in fields(JobTime)},
    )


def job_message(job: Job) -> scheduler_pb2.JobModel:
    """The JobModel message of ``job``."""
    return scheduler_pb2.JobModel(
        status=_status(job.status),
        time=_time(job.time),
        tasks=[
            scheduler_pb2.JobTask(
                id=t.id, name=t.name, status=_status(t.status), time=_time(t.time)
            )
            for t in job.tasks
        ],
        **{name: getattr(job, name) for name in _JOB_SCALARS},
    )


def _timestamp(epoch: float) -> timestamp_pb2.Timestamp:
    """A Timestamp for epoch seconds, to the nanosecond."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(epoch * 1e9))
    return stamp


def _event(
    kind: scheduler_pb2.JobEventType.ValueType,
    observed: float,
    job: Job,
    previous: JobStatus | None,
) -> scheduler_pb2.WatchJobsResponse:
    """One WatchJobs message: ``job`` as seen at ``observed``, after ``previous``."""
    return scheduler_pb2.WatchJobsResponse(
        event_type=kind,
        event_time=_timestamp(observed),
        job=job_message(job),
        previous_normalized_state=_normalized(previous),
        previous_state=None if previous is None else previous.state,
    )


@dataclass(frozen=True)
class _Call:
    """What every RPC starts from: the caller, the system and a runner as the caller."""

    user: str
    system: SystemRuntime
    run: RunWithInput


@dataclass
class _WatchBounds:
    """When a watch ends besides the end of its jobs: a deadline and an event budget."""

    deadline: float | None  # time.monotonic()
    events_left: int | None

    @classmethod
    def of(cls, request: scheduler_pb2.WatchJobsRequest) -> _WatchBounds:
        """The bounds a request sets; INVALID_ARGUMENT for a negative duration."""
        deadline = None
        if request.HasField("max_duration"):
            seconds = request.max_duration.ToTimedelta().total_seconds()
            if seconds < 0:
                raise invalid_argument("maxDuration", "must not be negative")
            deadline = time.monotonic() + seconds
        events = request.max_events if request.HasField("max_events") else 0
        return cls(deadline, events or None)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def spend(self) -> bool:
        """Count one event sent; True when the budget is used up."""
        if self.events_left is None:
            return False
        self.events_left -= 1
        return self.events_left <= 0


async def _replies(
    request: scheduler_pb2.WatchJobsRequest,
    watcher: Subscription,
    baseline: Baseline,
    bounds: _WatchBounds,
) -> AsyncIterator[scheduler_pb2.WatchJobsResponse]:
    """The snapshot (if asked for), then the changes, until a named job set is done."""
    named = bool(watcher.job_ids)
    open_jobs = {i for i, job in baseline.jobs.items() if not job.status.normalized_state.terminal}
    if request.send_initial:
        for job in baseline.jobs.values():
            yield _event(scheduler_pb2.JOB_EVENT_TYPE_INITIAL, baseline.observed, job, None)
            if bounds.spend():
                return
    while open_jobs or not named:
        event = await _next(watcher.next_event(), bounds)
        if event is None:
            return
        yield _event(scheduler_pb2.JOB_EVENT_TYPE_CHANGE, event.observed, event.job, event.previous)
        if event.job.status.normalized_state.terminal:
            open_jobs.discard(event.job.job_id)
        if bounds.spend():
            return


async def _next(waiting: Awaitable[T], bounds: _WatchBounds) -> T | None:
    """Await ``waiting`` unless the watch's time is up first (then None)."""
    try:
        return await asyncio.wait_for(waiting, bounds.remaining())
    except TimeoutError:
        return None


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """Serves the Scheduler RPCs on each system's job adapter and watch hub."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def _call(self, name: str, context: Context) -> _Call:
        """The system, authorised for the caller and with a healthy scheduler."""
        identity = current_identity()
        system = self._runtime.system(name)
        authorize(identity, system.config)
        system.health.require("ssh", "scheduler")
        deadline = deadline_after(context.time_remaining())
        return _Call(identity.username, system, system.job_runner(identity.username, deadline))

    async def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: Context
    ) -> scheduler_pb2.ListJobsResponse:
        call = self._call(request.system_name, context)
        window = request.time_window or DEFAULT_TIME_WINDOW
        if window not in TIME_WINDOWS:
            allowed = ", ".join(TIME_WINDOWS)
            raise invalid_argument("timeWindow", f"must be one of {allowed}, got {window!r}")
        account = request.account if request.HasField("account") else None
        # The name reaches sacct: one of Slurm's account names, or sacct fails
        # ("Unknown error 1267" for control characters) as if slurmdbd were down.
        if account is not None and not ACCOUNT_NAME.match(account):
            raise invalid_argument("account", "must be one account name")
        query = JobQuery(
            user=call.user,
            allusers=request.allusers,
            account=account,
            name=request.name if request.HasField("name") else None,
            time_window=window,
        )
        jobs = await call.system.jobs.jobs(call.run, query)
        return scheduler_pb2.ListJobsResponse(jobs=[job_message(job) for job in jobs])

    async def SubmitJob(
        self, request: scheduler_pb2.SubmitJobRequest, context: Context
    ) -> scheduler_pb2.SubmitJobResponse:
        call = self._call(request.system_name, context)
        if not request.HasField("job"):
            raise invalid_argument("job", "is required")
        job_id = await call.system.jobs.submit(call.run, job_description(request.job))
        call.system.watch.nudge(call.user)  # the user's watchers will want to see it start
        return scheduler_pb2.SubmitJobResponse(job_id=job_id)

    async def GetJob(
        self, request: scheduler_pb2.GetJobRequest, context: Context
    ) -> scheduler_pb2.GetJobResponse:
        call = self._call(request.system_name, context)
        jobs = await call.system.jobs.job(call.run, _job_id(request.job_id))
        return scheduler_pb2.GetJobResponse(jobs=[job_message(job) for job in jobs])

    async def CancelJob(
        self, request: scheduler_pb2.CancelJobRequest, context: Context
    ) -> scheduler_pb2.CancelJobResponse:
        call = self._call(request.system_name, context)
        await call.system.jobs.cancel(call.run, _job_id(request.job_id))
        call.system.watch.nudge(call.user)
        return scheduler_pb2.CancelJobResponse()

    async def AttachJob(
        self, request: scheduler_pb2.AttachJobRequest, context: Context
    ) -> scheduler_pb2.AttachJobResponse:
        call = self._call(request.system_name, context)
        job_id = _job_id(request.job_id)
        command = _text(request.command, "command")
        await call.system.jobs.attach(call.run, job_id, command)
        return scheduler_pb2.AttachJobResponse()

    async def GetJobMetadata(
        self, request: scheduler_pb2.GetJobMetadataRequest, context: Context
    ) -> scheduler_pb2.GetJobMetadataResponse:
        call = self._call(request.system_name, context)
        found = await call.system.jobs.metadata(call.run, _job_id(request.job_id))
        return scheduler_pb2.GetJobMetadataResponse(
            jobs=[
                scheduler_pb2.JobMetadataModel(**{f.name: getattr(m, f.name) for f in fields(m)})
                for m in found
            ]
        )

    async def WatchJobs(
        self, request: scheduler_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[scheduler_pb2.WatchJobsResponse]:
        """Stream the state changes of the named jobs (or all the caller's) from the hub.

        The first poll after joining both checks that the named jobs exist
        (NOT_FOUND otherwise, before any response) and gives the baseline
        that changes are counted from; the response headers go out after it,
        so the REST edge answers with the right status either way.
        """
        call = self._call(request.system_name, context)
        if 0 in request.job_ids:
            raise invalid_argument("jobIds", "must be job ids (positive numbers)")
        bounds = _WatchBounds.of(request)
        hub = call.system.watch
        async with hub.subscribe(call.user, frozenset(request.job_ids)) as watcher:
            # Also when the stream is dropped while suspended between messages.
            # (grpc-stubs types the callback as a class; any callable of the context works.)
            cast(Any, context).add_done_callback(lambda _: hub.unsubscribe(watcher))
            baseline = await _next(watcher.baseline(), bounds)
            await context.send_initial_metadata(())
            if baseline is None:
                return
            async for reply in _replies(request, watcher, baseline, bounds):
                yield reply
