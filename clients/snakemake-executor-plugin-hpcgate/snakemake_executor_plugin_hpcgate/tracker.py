"""The latest state of the workflow's jobs, from one ``WatchJobs`` stream.

One thread holds one stream on all of the user's jobs (``job_ids`` empty:
jobs submitted while it is open are included) and keeps the newest status
of each job it hears of in a dictionary. Snakemake's status checks read that
dictionary: they cost no RPC and no scheduler command, however often they
run. The server polls the scheduler once per user for every watch.

A refusal (bad credentials, no access to the system, an unknown system)
ends the watch and is kept in ``error``: the executor then fails the
workflow with it. When the stream drops otherwise (server restart,
network, the scheduler down) it is reopened with ``send_initial``, after a
pause that doubles on every failed attempt up to ``MAX_BACKOFF`` and
starts again at ``MIN_BACKOFF`` once an event arrives. The snapshot of the
new stream carries the state each job reached meanwhile (Slurm lists ended
jobs for ``MinJobAge``, 300 s by default); in case a job ended longer ago
than that, every job the workflow still waits for is asked for once with
``GetJob`` when the reopened stream delivers its first event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from hpcgate.client import (
    TERMINAL,
    Client,
    HpcgateError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from hpcgate.v1 import scheduler_pb2

S = scheduler_pb2
# Answers that another attempt would only repeat: the watch gives up, and the
# workflow fails with the reason instead of waiting for ends it cannot learn.
FINAL = (InvalidArgument, NotFound, PermissionDenied, Unauthenticated)
MIN_BACKOFF = 0.5
MAX_BACKOFF = 10.0

log = logging.getLogger(__name__)


def is_terminal(status: scheduler_pb2.JobStatus) -> bool:
    """Whether the job has ended (hpcgate's normalised terminal states)."""
    return status.normalized_state in TERMINAL or status.normalized_state in {
        S.JOB_STATE_DEADLINE,
        S.JOB_STATE_REVOKED,
    }


class JobTracker:
    """The newest status of every job the stream reported, fed by a background thread."""

    def __init__(self, client: Client, system: str) -> None:
        self._client = client
        self._system = system
        self._lock = threading.Lock()
        self._latest: dict[int, scheduler_pb2.JobStatus] = {}
        self._expected: set[int] = set()
        self._stop = threading.Event()
        self._call: object | None = None
        self.connects = 0  # streams that delivered an event (observability, tests)
        self.events = 0  # events received
        self.error: HpcgateError | None = None  # why the watch gave up, if it did
        self._thread = threading.Thread(target=self._run, name="hpcgate-watch", daemon=True)

    def start(self) -> None:
        """Open the stream (in the background)."""
        self._thread.start()

    def expect(self, job_id: int) -> None:
        """Note a job the workflow waits for (so a reconnect checks on it)."""
        with self._lock:
            self._expected.add(job_id)

    def forget(self, job_id: int) -> None:
        """Drop a job the workflow no longer waits for."""
        with self._lock:
            self._expected.discard(job_id)
            self._latest.pop(job_id, None)

    def status(self, job_id: int) -> scheduler_pb2.JobStatus | None:
        """The newest status heard of the job, None before the first."""
        with self._lock:
            return self._latest.get(job_id)

    def stop(self) -> None:
        """Close the stream and end the thread."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()  # type: ignore[attr-defined]
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _record(self, job: scheduler_pb2.JobModel) -> None:
        with self._lock:
            known = self._latest.get(job.job_id)
            if known is not None and is_terminal(known):
                return  # an end is final; a late snapshot does not revive the job
            self._latest[job.job_id] = job.status

    def _run(self) -> None:
        backoff = MIN_BACKOFF
        while not self._stop.is_set():
            request = S.WatchJobsRequest(system_name=self._system, send_initial=True)
            try:
                call = self._client.scheduler.WatchJobs(request)
                self._call = call
                opened = False
                for event in call:
                    if not opened:  # the first event: the stream is up
                        opened = True
                        self.connects += 1
                        if self.connects > 1:
                            self._reconcile()
                    self.events += 1
                    backoff = MIN_BACKOFF
                    self._record(event.job)
                if not self._stop.is_set():
                    log.info("hpcgate: the job watch ended; reopening it")
            except HpcgateError as error:
                if self._stop.is_set():
                    return
                if isinstance(error, FINAL):
                    log.error("hpcgate: the job watch is refused: %s", error)
                    self.error = error
                    return
                log.warning("hpcgate: job watch broke (%s); reopening in %.1f s", error, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _pending(self) -> Iterable[int]:
        with self._lock:
            return [
                job_id
                for job_id in self._expected
                if job_id not in self._latest or not is_terminal(self._latest[job_id])
            ]

    def _reconcile(self) -> None:
        """After a break: ask once about every awaited job (its end may predate the snapshot)."""
        for job_id in self._pending():
            request = S.GetJobRequest(system_name=self._system, job_id=job_id)
            try:
                jobs = self._client.scheduler.GetJob(request).jobs
            except NotFound:
                continue
            except HpcgateError as error:
                log.warning("hpcgate: GetJob %d after a reconnect failed: %s", job_id, error)
                return
            for job in jobs:
                if is_terminal(job.status):
                    self._record(job)
