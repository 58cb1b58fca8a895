"""Job handles: ``wait()`` for the end, ``watch()`` every state transition.

A watch is a ``WatchJobs`` stream. When it breaks (server restart, network),
it is reopened with ``send_initial``: the snapshot then shows the state the
job reached meanwhile, and it is passed on only if it differs from the last
state seen, so no transition is lost and none is reported twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from hpcgate.client.errors import Unavailable
from hpcgate.v1 import scheduler_pb2

if TYPE_CHECKING:
    from hpcgate.client.client import AsyncClient, Client

S = scheduler_pb2
TERMINAL = frozenset(
    {
        S.JOB_STATE_COMPLETED,
        S.JOB_STATE_FAILED,
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_TIMEOUT,
        S.JOB_STATE_NODE_FAIL,
        S.JOB_STATE_PREEMPTED,
        S.JOB_STATE_OUT_OF_MEMORY,
        S.JOB_STATE_BOOT_FAIL,
    }
)
RECONNECT_PAUSE = 0.5


class _Transitions:
    """Which events of a (re)opened watch are news, and whether the job ended."""

    def __init__(self) -> None:
        self.last: tuple[int, str] | None = None
        self.job: scheduler_pb2.JobModel | None = None

    def news(self, event: scheduler_pb2.WatchJobsResponse) -> bool:
        state = (event.job.status.normalized_state, event.job.status.state)
        self.job = event.job
        if state == self.last:
            return False
        self.last = state
        return True

    @property
    def done(self) -> bool:
        return self.last is not None and self.last[0] in TERMINAL


class Job:
    """A submitted job on one system (blocking API)."""

    def __init__(self, client: Client, system: str, job_id: int) -> None:
        self._client = client
        self.system = system
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"Job({self.system!r}, {self.job_id})"

    def get(self) -> scheduler_pb2.JobModel:
        """The job as the scheduler reports it now."""
        request = S.GetJobRequest(system_name=self.system, job_id=self.job_id)
        return self._client.scheduler.GetJob(request).jobs[0]

    def cancel(self) -> None:
        """Cancel the job."""
        request = S.CancelJobRequest(system_name=self.system, job_id=self.job_id)
        self._client.scheduler.CancelJob(request)

    def watch(self, *, until_done: bool = True) -> Iterator[scheduler_pb2.WatchJobsResponse]:
        """Every state transition, the current state first; reconnects on UNAVAILABLE."""
        seen = _Transitions()
        request = S.WatchJobsRequest(
            system_name=self.system, job_ids=[self.job_id], send_initial=True
        )
        while not (until_done and seen.done):
            try:
                for event in self._client.scheduler.WatchJobs(request):
                    if seen.news(event):
                        yield event
                    if until_done and seen.done:
                        return
            except Unavailable:
                time.sleep(RECONNECT_PAUSE)

    def wait(self) -> scheduler_pb2.JobModel:
        """Block until the job ends; returns its final record."""
        last: scheduler_pb2.JobModel | None = None
        for event in self.watch():
            last = event.job
        assert last is not None
        return last


class AsyncJob:
    """A submitted job on one system (asyncio API)."""

    def __init__(self, client: AsyncClient, system: str, job_id: int) -> None:
        self._client = client
        self.system = system
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.system!r}, {self.job_id})"

    async def get(self) -> scheduler_pb2.JobModel:
        """The job as the scheduler reports it now."""
        request = S.GetJobRequest(system_name=self.system, job_id=self.job_id)
        return (await self._client.scheduler.GetJob(request)).jobs[0]

    async def cancel(self) -> None:
        """Cancel the job."""
        request = S.CancelJobRequest(system_name=self.system, job_id=self.job_id)
        await self._client.scheduler.CancelJob(request)

    async def watch(
        self, *, until_done: bool = True
    ) -> AsyncIterator[scheduler_pb2.WatchJobsResponse]:
        """Every state transition, the current state first; reconnects on UNAVAILABLE."""
        seen = _Transitions()
        request = S.WatchJobsRequest(
            system_name=self.system, job_ids=[self.job_id], send_initial=True
        )
        while not (until_done and seen.done):
            try:
                async for event in self._client.scheduler.WatchJobs(request):
                    if seen.news(event):
                        yield event
                    if until_done and seen.done:
                        return
            except Unavailable:
                await asyncio.sleep(RECONNECT_PAUSE)

    async def wait(self) -> scheduler_pb2.JobModel:
        """Wait until the job ends; returns its final record."""
        last: scheduler_pb2.JobModel | None = None
        async for event in self.watch():
            last = event.job
        assert last is not None
        return last
