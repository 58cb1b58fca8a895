"""The Scheduler service: submit, list, inspect, cancel, attach to and watch jobs.

The servicer turns the request into plain values, has the scheduler domain
check them (:mod:`hpcgate.server.scheduler.requests`), calls the system's job
adapter (or follows its watch hub, :mod:`hpcgate.server.scheduler.following`)
as the caller, and maps the plain results onto ``hpcgate.v1`` messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import fields

from google.protobuf import json_format

from hpcgate.server.errors import invalid_argument
from hpcgate.server.rpc.context import Context
from hpcgate.server.runtime import Runtime
from hpcgate.server.scheduler import requests
from hpcgate.server.scheduler.following import (
    Kind,
    Sighting,
    WatchBounds,
    event_id,
    follow,
    resume_point,
)
from hpcgate.server.scheduler.jobs import Job, JobDescription, JobStatus, JobTime
from hpcgate.server.servicers.call import begin
from hpcgate.server.servicers.convert import job_id, job_ids, timestamp
from hpcgate.v1 import scheduler_pb2, scheduler_pb2_grpc

# Scalar fields shared by the domain Job and the JobModel message.
_JOB_SCALARS = tuple(f.name for f in fields(Job) if f.name not in ("status", "time", "tasks"))
_EVENT_TYPES = {
    Kind.INITIAL: scheduler_pb2.JOB_EVENT_TYPE_INITIAL,
    Kind.CHANGE: scheduler_pb2.JOB_EVENT_TYPE_CHANGE,
}


def job_description(job: scheduler_pb2.JobDescriptionModel) -> JobDescription:
    """The validated JobDescription of a SubmitJob request (INVALID_ARGUMENT naming the field)."""
    source = job.WhichOneof("script_source")
    return requests.job_description(
        working_directory=job.working_directory,
        script=job.script if source == "script" else None,
        script_path=job.script_path if source == "script_path" else None,
        env=json_format.MessageToDict(job.env) if job.HasField("env") else None,
        optional={
            name: getattr(job, name) for name in requests.OPTIONAL_TEXT if job.HasField(name)
        },
    )


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


def _event(seen: Sighting) -> scheduler_pb2.WatchJobsResponse:
    """One WatchJobs message."""
    return scheduler_pb2.WatchJobsResponse(
        event_type=_EVENT_TYPES[seen.kind],
        event_time=timestamp(seen.observed),
        job=job_message(seen.job),
        previous_normalized_state=_normalized(seen.previous),
        previous_state=None if seen.previous is None else seen.previous.state,
        event_id=event_id(seen),
    )


def _bounds(request: scheduler_pb2.WatchJobsRequest) -> WatchBounds:
    duration = request.max_duration if request.HasField("max_duration") else None
    return WatchBounds.of(
        None if duration is None else duration.ToTimedelta().total_seconds(),
        request.max_events if request.HasField("max_events") else None,
    )


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """Serves the Scheduler RPCs on each system's job adapter and watch hub."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: Context
    ) -> scheduler_pb2.ListJobsResponse:
        call = begin(self._runtime, request.system_name, context)
        query = requests.job_query(
            user=call.user,
            allusers=request.allusers,
            account=request.account if request.HasField("account") else None,
            name=request.name if request.HasField("name") else None,
            time_window=request.time_window,
        )
        jobs = await call.system.jobs.jobs(call.run, query)
        return scheduler_pb2.ListJobsResponse(jobs=[job_message(job) for job in jobs])

    async def SubmitJob(
        self, request: scheduler_pb2.SubmitJobRequest, context: Context
    ) -> scheduler_pb2.SubmitJobResponse:
        call = begin(self._runtime, request.system_name, context)
        if not request.HasField("job"):
            raise invalid_argument("job", "is required")
        new_id = await call.system.jobs.submit(call.run, call.user, job_description(request.job))
        call.system.watch.nudge(call.user)  # the user's watchers will want to see it start
        return scheduler_pb2.SubmitJobResponse(job_id=new_id)

    async def GetJob(
        self, request: scheduler_pb2.GetJobRequest, context: Context
    ) -> scheduler_pb2.GetJobResponse:
        call = begin(self._runtime, request.system_name, context)
        jobs = await call.system.jobs.job(call.run, call.user, job_id(request.job_id))
        return scheduler_pb2.GetJobResponse(jobs=[job_message(job) for job in jobs])

    async def CancelJob(
        self, request: scheduler_pb2.CancelJobRequest, context: Context
    ) -> scheduler_pb2.CancelJobResponse:
        call = begin(self._runtime, request.system_name, context)
        await call.system.jobs.cancel(call.run, call.user, job_id(request.job_id))
        call.system.watch.nudge(call.user)
        return scheduler_pb2.CancelJobResponse()

    async def AttachJob(
        self, request: scheduler_pb2.AttachJobRequest, context: Context
    ) -> scheduler_pb2.AttachJobResponse:
        call = begin(self._runtime, request.system_name, context)
        target = job_id(request.job_id)
        command = requests.text(request.command, "command")
        await call.system.jobs.attach(call.run, call.user, target, command)
        return scheduler_pb2.AttachJobResponse()

    async def GetJobMetadata(
        self, request: scheduler_pb2.GetJobMetadataRequest, context: Context
    ) -> scheduler_pb2.GetJobMetadataResponse:
        call = begin(self._runtime, request.system_name, context)
        found = await call.system.jobs.metadata(call.run, call.user, job_id(request.job_id))
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
        # A malformed id is the caller's error (400), whatever the scheduler's health.
        resume = resume_point(request.last_event_id) if request.last_event_id else None
        call = begin(self._runtime, request.system_name, context)
        watched = job_ids(request.job_ids)
        bounds = _bounds(request)
        async with call.watcher(context, watched) as watcher:
            baseline = await bounds.within(watcher.baseline())
            await context.send_initial_metadata(())
            if baseline is None:
                return
            async for seen in follow(watcher, baseline, bounds, request.send_initial, resume):
                yield _event(seen)
