"""Jobs on Slurm over SSH commands: sbatch, squeue, sacct, scancel, scontrol, srun.

Every command is an argv list; the runner quotes each argument, so no value
from a request is ever parsed by a shell. Output is read as JSON wherever
Slurm offers it (see :mod:`.jobparse` for the quirks of 22.05).

Privacy: every command runs as the caller (the runner is the caller's SSH
login), never as a service account, so Slurm's own rules decide what the
caller sees of other users' jobs: with ``PrivateData=jobs`` (slurm.conf for
squeue and scontrol, slurmdbd.conf for sacct) another user's job is, here as
over SSH, "Job not found." Nothing read for one caller is kept for another.
scancel and srun alone still answer "permission denied" for a job Slurm hides
from the caller; :meth:`SlurmJobs._refused` turns that into NOT_FOUND too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection, Sequence

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument, redact_addresses
from hpcgate.server.scheduler.commands import Output, RunWithInput
from hpcgate.server.scheduler.jobs import (
    TIME_WINDOWS,
    Job,
    JobDescription,
    JobMetadata,
    JobQuery,
)
from hpcgate.server.scheduler.slurm import jobparse
from hpcgate.server.scheduler.slurm.failures import UNREACHABLE, unavailable
from hpcgate.server.scheduler.slurm.status import checked_stdout

# Environment variables that sbatch itself reads (or that decide which sbatch
# runs). They reach the job through --export only, never through sbatch's own
# environment, where they would change the submission.
_SUBMITTER_VARS = re.compile(r"^(PATH|LD_\w*|SLURM_\w*|SBATCH_\w*)$")
# Characters --export cannot carry in a value: it splits on commas and keeps quotes.
_EXPORT_UNSAFE = re.compile(r"[,'\"]")

# sbatch's words for a limit of the caller's account, association or QOS.
_PERMISSION = re.compile(
    r"Invalid account|account/partition combination|violates accounting/QOS policy"
    r"|Assoc\w*Limit|QOS\w*Limit|MaxSubmit|permission denied|not permitted|Invalid qos",
    re.IGNORECASE,
)
# The request field an sbatch message is about, first match wins.
_SBATCH_FIELDS = (
    (re.compile(r"reservation", re.IGNORECASE), "job.reservation"),
    (re.compile(r"partition", re.IGNORECASE), "job.partition"),
    (re.compile(r"feature|constraint", re.IGNORECASE), "job.constraints"),
    (re.compile(r"batch script|interpreter|#!", re.IGNORECASE), "job.script"),
    (re.compile(r"open file", re.IGNORECASE), "job.scriptPath"),
    (re.compile(r"chdir|working directory", re.IGNORECASE), "job.workingDirectory"),
)
_SLURM_PREFIX = re.compile(r"^\w+: (?:error: )?(?:Batch job submission failed: )?")

# Slurm: "Invalid job id specified", or "Invalid job id: 4000000000" for one out of range.
_INVALID_JOB = "Invalid job id"
# srun's words for "the job has no running allocation to attach to".
_NOT_RUNNING = re.compile(
    r"pending execution|has expired|already completing or completed|not running", re.IGNORECASE
)


def _message(output: Output) -> str:
    """Slurm's complaint: stderr without the ``sbatch: error:`` prefixes."""
    lines = output.stderr.decode(errors="replace").strip().splitlines()
    text = "; ".join(_SLURM_PREFIX.sub("", line).strip() for line in lines if line.strip())
    return text or f"exit status {output.exit_status}"


def _error(code: ErrorKind, message: str, reason: str) -> ServiceError:
    return ServiceError(code, message, reason)


def _unreachable(command: str, message: str) -> ServiceError | None:
    """UNAVAILABLE if sbatch's, srun's or scancel's complaint is slurmctld not answering.

    These commands also fail for the request's sake (a bad partition, a
    finished job) with the same exit status, so here Slurm's words decide.
    """
    if any(word in message for word in UNREACHABLE):
        return unavailable(command, redact_addresses(message))
    return None


# FirecREST's exact words for an unknown job: clients match on them (pyfirecrest's
# wait_for_job, executors that retry until a job shows up). The id goes in the details.
JOB_NOT_FOUND = "Job not found."


def job_not_found(job_id: int) -> ServiceError:
    return ServiceError(
        ErrorKind.NOT_FOUND, JOB_NOT_FOUND, "JOB_NOT_FOUND", metadata={"jobId": str(job_id)}
    )


def sbatch_argv(job: JobDescription) -> list[str]:
    """The command that submits ``job`` (an inline script comes on stdin).

    FirecREST passes the environment as ``--export=ALL,NAME=value,...``, which
    breaks on values with commas or quotes. Here the variables are set in
    sbatch's own environment (``env NAME=value sbatch --export=ALL``), which
    sbatch hands to the job unchanged, whatever the value holds. Only the
    variables sbatch itself reads go through ``--export`` (see
    :data:`_SUBMITTER_VARS`), so their values must fit --export's syntax.
    """
    inherited = [f"{name}={value}" for name, value in job.env if not _SUBMITTER_VARS.match(name)]
    exported = [f"{name}={value}" for name, value in job.env if _SUBMITTER_VARS.match(name)]
    argv = ["env", *inherited] if inherited else []
    argv += [
        "sbatch",
        "--parsable",
        "--export=" + ",".join(["ALL", *exported]),
        f"--chdir={job.working_directory}",
    ]
    options = (
        ("--job-name", job.name),
        ("--account", job.account),
        ("--partition", job.partition),
        ("--reservation", job.reservation),
        ("--constraint", job.constraints),
        ("--input", job.standard_input),
        ("--output", job.standard_output),
        ("--error", job.standard_error),
    )
    argv += [f"{flag}={value}" for flag, value in options if value is not None]
    if job.script_path is not None:
        argv += ["--", job.script_path]
    return argv


def _sbatch_error(output: Output) -> ServiceError:
    """The ServiceError for a submission sbatch refused."""
    message = _message(output)
    unreachable = _unreachable("sbatch", message)
    if unreachable is not None:
        return unreachable
    return refused_submission(message)


def refused_submission(message: str, via: str = "sbatch") -> ServiceError:
    """The error for a submission Slurm refused saying ``message`` (via sbatch or slurmrestd).

    A limit of the caller's account is PERMISSION_DENIED; anything else is
    INVALID_ARGUMENT naming the request field Slurm's words are about.
    """
    if _PERMISSION.search(message):
        return _error(ErrorKind.PERMISSION_DENIED, message, "SCHEDULER_LIMIT")
    field = next((name for pattern, name in _SBATCH_FIELDS if pattern.search(message)), "job")
    return ServiceError(
        ErrorKind.INVALID_ARGUMENT,
        f"{via}: {message}",
        "JOB_REJECTED",
        fields={field: message},
    )


def _exit_codes_argv(selection: Sequence[str]) -> list[str]:
    """sacct listing the exit codes of ``selection``: fields that hold no free text."""
    return ["sacct", "--noheader", "--parsable2", "--format=JobIDRaw,ExitCode", *selection]


def _sacct_takes_name(name: str) -> bool:
    """Whether ``name`` can be sacct's ``--name``; other names are matched here only.

    sacct splits names on commas; and where Slurm's accounting tables are
    latin1 (MariaDB's default), a name beyond Latin-1's printable characters
    fails the query with MySQL's error 1267 ("Illegal mix of collations"),
    which would read as slurmdbd down (found by the fuzz).
    """
    return "," not in name and all(ord(c) <= 0xFF and not 0x80 <= ord(c) <= 0x9F for c in name)


class SlurmJobs:
    """Submits, reads, cancels and attaches to jobs on Slurm (a JobScheduler).

    The caller's name (``user``) is not needed: ``run`` is the caller's SSH
    session, and Slurm's commands act as its user.
    """

    def __init__(self) -> None:
        # Learnt from the first `sacct --json`: whether its exit codes can be
        # trusted (not on 22.05). Unknown until then.
        self._sacct_exit_codes: bool | None = None

    # -- the JobScheduler interface ------------------------------------------------

    async def submit(self, run: RunWithInput, user: str, job: JobDescription) -> int:
        """``sbatch --parsable``; the inline script goes on stdin, never on a command line."""
        for name, value in job.env:
            if _SUBMITTER_VARS.match(name) and _EXPORT_UNSAFE.search(value):
                raise invalid_argument(
                    "job.env", f"the value of {name} must not contain a comma or quote"
                )
        stdin = job.script.encode() if job.script is not None else None
        output = await run(sbatch_argv(job), stdin=stdin)
        if output.exit_status != 0:
            raise _sbatch_error(output)
        job_id = jobparse.job_id_from_sbatch(output.stdout.decode(errors="replace"))
        if job_id is None:
            raise _error(
                ErrorKind.INTERNAL,
                f"sbatch printed no job id: {output.stdout[:200]!r}",
                "SCHEDULER_COMMAND_FAILED",
            )
        return job_id

    async def jobs(self, run: RunWithInput, query: JobQuery) -> list[Job]:
        """sacct over the time window merged with squeue's live jobs (see merge_jobs)."""
        selection = ["--allusers"] if query.allusers else [f"--user={query.user}"]
        if query.account is not None:
            selection.append(f"--account={query.account}")
        if query.name is not None and _sacct_takes_name(query.name):
            selection.append(f"--name={query.name}")
        selection.append(f"--starttime=now-{TIME_WINDOWS[query.time_window]}hours")
        accounted, records = await asyncio.gather(
            self._sacct(run, selection),
            self._squeue(run, [] if query.allusers else [f"--user={query.user}"]),
        )
        accounted, queued, unaccounted = jobparse.listed(query, accounted, records)
        if unaccounted:
            accounted += await self._sacct(run, ["--jobs=" + ",".join(map(str, unaccounted))])
        return jobparse.merge_jobs(accounted, queued)

    async def job(self, run: RunWithInput, user: str, job_id: int) -> list[Job]:
        """sacct and squeue for one id (an array's or het job's components included)."""
        accounted, records = await asyncio.gather(
            self._sacct(run, [f"--jobs={job_id}"]),
            self._squeue(run, [f"--jobs={job_id}"]),
        )
        queued = [record.job for record in records if record.matches(job_id)]
        jobs = jobparse.merge_jobs(accounted, queued)
        if not jobs:
            raise job_not_found(job_id)
        return jobs

    async def metadata(self, run: RunWithInput, user: str, job_id: int) -> list[JobMetadata]:
        """From slurmctld while it holds the job (scontrol), else what accounting kept."""
        shown, script = await asyncio.gather(
            run(["scontrol", "show", "job", str(job_id)]),
            run(["scontrol", "write", "batch_script", str(job_id), "-"]),
        )
        if shown.exit_status != 0 and _INVALID_JOB in shown.stderr.decode(errors="replace"):
            # slurmctld has forgotten the job: only the accounting knows it.
            return await self._metadata_from_sacct(run, job_id)
        streams = jobparse.stream_paths_from_scontrol(checked_stdout(["scontrol"], shown))
        # `scontrol write batch_script` exits 0 even when it fails (e.g. another
        # user's job): only a clean stderr means stdout holds the script.
        text = script.stdout.decode(errors="replace")
        found = text if script.exit_status == 0 and not script.stderr.strip() else None
        return [JobMetadata(job_id=i, script=found, **streams[i]) for i in sorted(streams)] or [
            JobMetadata(job_id=job_id, script=found)
        ]

    async def cancel(self, run: RunWithInput, user: str, job_id: int) -> None:
        """``scancel``; an unknown id is NOT_FOUND, someone else's job PERMISSION_DENIED."""
        # Without --verbose, 22.05's scancel says nothing about unknown ids.
        output = await run(["scancel", "--verbose", str(job_id)])
        for problem in jobparse.scancel_errors(output.stderr.decode(errors="replace")):
            unreachable = _unreachable("scancel", problem)
            if unreachable is not None:
                raise unreachable
            if _INVALID_JOB in problem:
                raise job_not_found(job_id)
            if "permission denied" in problem.lower():
                raise await self._refused(run, job_id, problem)
            if "already completing or completed" in problem:
                continue  # cancelling a finished job changes nothing; FirecREST says 204 too
            raise _error(ErrorKind.FAILED_PRECONDITION, problem, "JOB_NOT_CANCELLABLE")
        if output.exit_status != 0:
            checked_stdout(["scancel"], output)

    async def attach(self, run: RunWithInput, user: str, job_id: int, command: str) -> None:
        """``srun --jobid --overlap`` running ``command``; waits for it to finish."""
        # `sh -c` runs the whole command line inside the allocation, redirections included.
        argv = ["srun", f"--jobid={job_id}", "--overlap", "--", "sh", "-c", command]
        output = await run(argv)
        if output.exit_status == 0:
            return
        message = _message(output)
        if _INVALID_JOB in message:
            raise job_not_found(job_id)
        error = _unreachable("srun", message)
        if error is None and _NOT_RUNNING.search(message):
            error = _error(
                ErrorKind.FAILED_PRECONDITION,
                f"job {job_id} is not running: {message}",
                "JOB_NOT_RUNNING",
            )
        if error is None and "permission denied" in message.lower():
            error = await self._refused(run, job_id, message)
        raise error or _error(
            ErrorKind.ABORTED,
            f"the attached command failed (exit status {output.exit_status}): {message}",
            "ATTACHED_COMMAND_FAILED",
        )

    async def snapshot(
        self, run: RunWithInput, user: str, job_ids: Collection[int]
    ) -> dict[int, Job]:
        """``user``'s jobs from one ``squeue``; sacct only for named jobs squeue lacks.

        slurmctld keeps a finished job for ``MinJobAge`` (300 s by default),
        so a watcher polling more often sees every end state in squeue; sacct
        is asked only about jobs it has forgotten (or other users' jobs on a
        Slurm that filters squeue by user).
        """
        records = await self._squeue(run, [f"--user={user}"])
        view = {
            job.job_id: job for job in jobparse.select_jobs(records, user=user, job_ids=job_ids)
        }
        missing = sorted(set(job_ids) - view.keys())
        if missing:
            for job in await self._sacct(run, ["--jobs=" + ",".join(map(str, missing))]):
                view.setdefault(job.job_id, job)
        return view

    async def _refused(self, run: RunWithInput, job_id: int, problem: str) -> ServiceError:
        """PERMISSION_DENIED for another user's job the caller can see, else NOT_FOUND.

        Under ``PrivateData=jobs`` scancel and srun still say "permission
        denied" for a job that squeue, sacct and scontrol hide from the
        caller; "Job not found.", as GetJob answers, tells nothing of it.
        """
        records = await self._squeue(run, [f"--jobs={job_id}"])
        if any(record.matches(job_id) for record in records):
            return _error(ErrorKind.PERMISSION_DENIED, problem, "JOB_NOT_OWNED")
        return job_not_found(job_id)

    # -- commands ------------------------------------------------------------------

    async def _squeue(
        self, run: RunWithInput, selection: Sequence[str]
    ) -> list[jobparse.SqueueJob]:
        """squeue's records (all states slurmctld still holds) for ``selection``."""
        argv = ["squeue", "--json", "--states=all", *selection]
        output = await run(argv)
        if output.exit_status != 0 and _INVALID_JOB in output.stderr.decode(errors="replace"):
            return []  # a Slurm that honours --jobs with --json, asked about a forgotten job
        return jobparse.jobs_from_squeue_json(checked_stdout(argv, output), int(time.time()))

    async def _sacct(self, run: RunWithInput, selection: Sequence[str]) -> list[Job]:
        """sacct's jobs for ``selection``, with exit codes that can be trusted."""
        argv = ["sacct", "--json", *selection]
        codes_argv = _exit_codes_argv(selection)
        codes: Output | None = None
        if self._sacct_exit_codes is False:  # known to be needed: ask both at once
            output, codes = await asyncio.gather(run(argv), run(codes_argv))
        else:
            output = await run(argv)
        jobs, version = jobparse.jobs_from_sacct_json(checked_stdout(argv, output))
        if version is not None:
            self._sacct_exit_codes = version.sacct_json_exit_codes
        if self._sacct_exit_codes or not jobs:
            return jobs
        if codes is None:
            codes = await run(codes_argv)
        return jobparse.with_exit_codes(
            jobs, jobparse.exit_codes_from_sacct(checked_stdout(codes_argv, codes))
        )

    async def exit_codes(
        self, run: RunWithInput, job_ids: Collection[int]
    ) -> dict[str, tuple[int, int]]:
        """(exit code, signal) of jobs ``job_ids`` and their steps, from ``sacct --parsable2``.

        What 22.05's accounting JSON (sacct's and slurmrestd's dbv0.0.38)
        reports as 0; the slurm-rest plug-in asks here for the true codes.
        """
        argv = _exit_codes_argv(["--jobs=" + ",".join(map(str, sorted(job_ids)))])
        return jobparse.exit_codes_from_sacct(checked_stdout(argv, await run(argv)))

    async def _metadata_from_sacct(self, run: RunWithInput, job_id: int) -> list[JobMetadata]:
        """Metadata of a job slurmctld forgot: the script if accounting stored it, no paths."""
        argv = ["sacct", "--batch-script", f"--jobs={job_id}"]
        output = await run(argv)
        if output.exit_status == 0:
            scripts = jobparse.scripts_from_sacct(output.stdout.decode(errors="replace"))
            if not scripts:
                raise job_not_found(job_id)
            return [JobMetadata(job_id=i, script=s) for i, s in sorted(scripts.items())]
        # A sacct without --batch-script: the job's existence is all there is to tell.
        jobs = await self._sacct(run, [f"--jobs={job_id}"])
        if not jobs:
            raise job_not_found(job_id)
        return [JobMetadata(job_id=job.job_id) for job in jobs]
