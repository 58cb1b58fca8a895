"""Jobs through slurmrestd, read into the same values as the CLI plug-in's.

slurmrestd's ``/slurm/vX/jobs`` is squeue's document and ``/slurmdb/vX/jobs``
is sacct's (22.05 writes both from the same v0.0.38 schemas), so the CLI
plug-in's parsers and its merge rule (slurmctld's record wins, accounting
adds the steps) read them, and both plug-ins answer alike.

Every request carries the caller's name and token: slurmctld applies
``PrivateData`` to it exactly as to the caller's own squeue or scancel.

Where v0.0.38 lacks what the CLI gives, one command over SSH (the CLI
plug-in's) fills in, said at each place:

* exit codes of finished jobs and steps (dbv0.0.38 reports every one as 0):
  one ``sacct --parsable2`` for the jobs concerned;
* metadata (no batch script in v0.0.38, and stream paths only as the
  unexpanded patterns): the CLI plug-in's scontrol;
* attach (no REST equivalent of ``srun --jobid``);
* a submission by ``script_path`` (``job/submit`` wants the script's text),
  or of a script whose directives cannot be told to slurmrestd
  (:mod:`.submission`): sbatch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.commands import RunWithInput
from hpcgate.server.scheduler.jobs import (
    TIME_WINDOWS,
    Job,
    JobDescription,
    JobMetadata,
    JobQuery,
)
from hpcgate.server.scheduler.slurm import jobparse
from hpcgate.server.scheduler.slurm.jobs import SlurmJobs, job_not_found, refused_submission
from hpcgate.server.scheduler.slurm.parse import number
from hpcgate.server.scheduler.slurmrest.client import (
    SlurmRestClient,
    classify,
    error_numbers,
    error_text,
)
from hpcgate.server.scheduler.slurmrest.submission import NOT_A_SCRIPT, rest_submission

# Slurm's error numbers for "no such job" (ESLURM_INVALID_JOB_ID) and for an
# accounting query that matched nothing (ESLURM_REST_EMPTY_RESULT).
_INVALID_JOB = 2017
_EMPTY = 9003
# ESLURM_ACCESS_DENIED, ESLURM_ALREADY_DONE (cancelling a finished job).
_ACCESS_DENIED = 2002
_ALREADY_DONE = 2021


class SlurmRestJobs:
    """Submits, reads and cancels jobs through slurmrestd (a JobScheduler)."""

    def __init__(self, client: SlurmRestClient, cli: SlurmJobs) -> None:
        self._client = client
        # The commands over SSH for what v0.0.38 lacks (see the module's list).
        self._cli = cli
        # Whether accounting's JSON has true exit codes (not 22.05's), from its meta.
        self._accounting_codes = False

    def requests_sent(self, user: str) -> int:
        """How many requests slurmrestd has had from this server on behalf of ``user``."""
        return self._client.sent[user]

    # -- the JobScheduler interface ------------------------------------------------

    async def submit(self, run: RunWithInput, user: str, job: JobDescription) -> int:
        """``POST job/submit`` with the script's directives as properties (else sbatch)."""
        if job.script is None:
            return await self._cli.submit(run, user, job)  # job/submit needs the text
        if not job.script.startswith("#!"):
            raise refused_submission(NOT_A_SCRIPT)
        version = await self._client.detect_version(user)
        body = rest_submission(job, version)
        if body is None:  # directives slurmrestd would drop: sbatch reads them
            return await self._cli.submit(run, user, job)
        status, answer = await self._client.answer("POST", "job/submit", user, body)
        error = classify(status, answer)
        if error is not None and error.reason == "SCHEDULER_ERROR":  # refused, not down
            raise refused_submission(error_text(answer), via="slurmrestd")
        if error is not None:
            raise error
        job_id = number(answer.get("job_id"))
        if job_id is None:
            raise ServiceError(
                ErrorKind.INTERNAL, f"slurmrestd gave no job id: {answer}", "SCHEDULER_ERROR"
            )
        return job_id

    async def jobs(self, run: RunWithInput, query: JobQuery) -> list[Job]:
        """Accounting over the time window merged with slurmctld's jobs, as the CLI plug-in."""
        user = query.user
        params = {"start_time": f"now-{TIME_WINDOWS[query.time_window]}hours"}
        if query.account is not None:
            params["account"] = query.account
        accounted, records = await asyncio.gather(
            self._accounted(user, "jobs", params), self._queued(user, "jobs")
        )
        accounted, queued, unaccounted = jobparse.listed(query, accounted, records)
        for found in await asyncio.gather(
            *(self._accounted(user, f"job/{i}") for i in unaccounted)
        ):
            accounted += found
        accounted = await self._true_exit_codes(run, accounted)
        return jobparse.merge_jobs(accounted, queued)

    async def job(self, run: RunWithInput, user: str, job_id: int) -> list[Job]:
        """``job/{id}`` from accounting and from slurmctld, merged."""
        accounted, records = await asyncio.gather(
            self._accounted(user, f"job/{job_id}"), self._queued(user, f"job/{job_id}")
        )
        queued = [record.job for record in records if record.matches(job_id)]
        jobs = jobparse.merge_jobs(await self._true_exit_codes(run, accounted), queued)
        if not jobs:
            raise job_not_found(job_id)
        return jobs

    async def metadata(self, run: RunWithInput, user: str, job_id: int) -> list[JobMetadata]:
        """The CLI plug-in's: v0.0.38 has no batch script and gives the paths unexpanded."""
        return await self._cli.metadata(run, user, job_id)

    async def cancel(self, run: RunWithInput, user: str, job_id: int) -> None:
        """``DELETE job/{id}``; unknown NOT_FOUND, someone else's PERMISSION_DENIED."""
        status, answer = await self._client.answer("DELETE", f"job/{job_id}", user)
        error = classify(status, answer)
        if error is None:
            return
        if error.reason != "SCHEDULER_ERROR":  # slurmrestd or slurmctld down, token refused
            raise error
        numbers = error_numbers(answer)
        if _INVALID_JOB in numbers:
            raise job_not_found(job_id)
        if _ALREADY_DONE in numbers:
            return  # cancelling a finished job changes nothing; FirecREST says 204 too
        if _ACCESS_DENIED in numbers:
            raise await self._refused(user, job_id, error_text(answer))
        raise ServiceError(ErrorKind.FAILED_PRECONDITION, error_text(answer), "JOB_NOT_CANCELLABLE")

    async def attach(self, run: RunWithInput, user: str, job_id: int, command: str) -> None:
        """The CLI plug-in's ``srun --jobid --overlap``: slurmrestd has no equivalent."""
        await self._cli.attach(run, user, job_id, command)

    async def snapshot(
        self, run: RunWithInput, user: str, job_ids: Collection[int]
    ) -> dict[int, Job]:
        """``user``'s jobs from one ``GET jobs``; accounting only for named jobs it lacks.

        As the CLI plug-in's one squeue: slurmctld keeps a finished job for
        ``MinJobAge``, so a watcher sees every end state in this answer.
        """
        records = await self._queued(user, "jobs")
        view = {
            job.job_id: job for job in jobparse.select_jobs(records, user=user, job_ids=job_ids)
        }
        missing = sorted(set(job_ids) - view.keys())
        if missing:
            found = await asyncio.gather(*(self._accounted(user, f"job/{i}") for i in missing))
            accounted = await self._true_exit_codes(run, [j for jobs in found for j in jobs])
            for job in accounted:
                view.setdefault(job.job_id, job)
        return view

    # -- requests ------------------------------------------------------------------

    async def _refused(self, user: str, job_id: int, problem: str) -> ServiceError:
        """PERMISSION_DENIED for another user's job the caller can see, else NOT_FOUND.

        Under ``PrivateData=jobs`` slurmctld still says "permission denied"
        for a job it hides from the caller, as with scancel.
        """
        records = await self._queued(user, f"job/{job_id}")
        if any(record.matches(job_id) for record in records):
            return ServiceError(ErrorKind.PERMISSION_DENIED, problem, "JOB_NOT_OWNED")
        return job_not_found(job_id)

    async def _queued(self, user: str, path: str) -> list[jobparse.SqueueJob]:
        """slurmctld's records at ``path`` (``jobs`` or ``job/{id}``); none for an unknown id."""
        body = await self._client.request("GET", path, user, absent=(_INVALID_JOB,))
        return [] if body is None else jobparse.jobs_from_squeue(body, int(time.time()))

    async def _accounted(
        self, user: str, path: str, params: dict[str, str] | None = None
    ) -> list[Job]:
        """Accounting's jobs at ``path`` (``jobs`` or ``job/{id}``), steps as tasks."""
        body: Any = await self._client.request(
            "GET", path, user, api="slurmdb", params=params, absent=(_EMPTY, _INVALID_JOB)
        )
        if body is None:
            return []
        jobs, version = jobparse.jobs_from_sacct(body)
        self._accounting_codes = version is not None and version.sacct_json_exit_codes
        return jobs

    async def _true_exit_codes(self, run: RunWithInput, jobs: list[Job]) -> list[Job]:
        """``jobs`` with the exit codes of ``sacct --parsable2`` where dbv0.0.38 wrote 0."""
        if not jobs or self._accounting_codes:
            return jobs
        codes = await self._cli.exit_codes(run, {job.job_id for job in jobs})
        return jobparse.with_exit_codes(jobs, codes)
