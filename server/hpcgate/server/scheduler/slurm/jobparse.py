"""Parsers of Slurm's job commands. Pure functions, tested on real output.

Job records come from ``squeue --json`` and ``sacct --json``: JSON carries
job names with ``|``, spaces, newlines or any unicode intact, which no
delimiter-separated format can promise. Both the 22.05 layout (openapi
v0.0.38: plain numbers, state strings) and the later one (``{"set",
"number"}`` objects, state lists) are read.

Two quirks of Slurm 22.05 shape this module:

* ``squeue --json`` ignores every filter option (``--user``, ``--jobs`` ...),
  and ``sacct --json`` ignores ``--user`` (it lists everyone's jobs), so
  callers filter the records here (:func:`select_jobs`, :func:`matches`).
* ``sacct --json`` (dbv0.0.38) reports every exit code as 0, so the exit
  codes of finished jobs are read from ``sacct --parsable2`` output limited to
  ``JobIDRaw,ExitCode`` (:func:`exit_codes_from_sacct`), fields that hold no
  free text, and applied with :func:`with_exit_codes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hpcgate.server.scheduler.jobs import Job, JobQuery, JobState, JobStatus, JobTask, JobTime
from hpcgate.server.scheduler.slurm.parse import number

# Slurm's job states, long and short (squeue %t) forms, mapped onto JobState.
_STATES: Mapping[str, JobState] = {
    **dict.fromkeys(("PENDING", "PD", "RESV_DEL_HOLD", "RD"), JobState.PENDING),
    **dict.fromkeys(("RUNNING", "R", "RESIZING", "RS", "SIGNALING", "SI"), JobState.RUNNING),
    **dict.fromkeys(("SUSPENDED", "S"), JobState.SUSPENDED),
    **dict.fromkeys(("COMPLETING", "CG", "STAGE_OUT", "SO"), JobState.COMPLETING),
    **dict.fromkeys(("COMPLETED", "CD"), JobState.COMPLETED),
    **dict.fromkeys(("FAILED", "F"), JobState.FAILED),
    **dict.fromkeys(("CANCELLED", "CA"), JobState.CANCELLED),
    **dict.fromkeys(("TIMEOUT", "TO"), JobState.TIMEOUT),
    **dict.fromkeys(("NODE_FAIL", "NF"), JobState.NODE_FAIL),
    **dict.fromkeys(("PREEMPTED", "PR"), JobState.PREEMPTED),
    **dict.fromkeys(("OUT_OF_MEMORY", "OOM"), JobState.OUT_OF_MEMORY),
    **dict.fromkeys(("BOOT_FAIL", "BF"), JobState.BOOT_FAIL),
    **dict.fromkeys(("DEADLINE", "DL"), JobState.DEADLINE),
    **dict.fromkeys(
        ("REQUEUED", "RQ", "REQUEUE_HOLD", "RH", "REQUEUE_FED", "RF", "SPECIAL_EXIT", "SE"),
        JobState.REQUEUED,
    ),
    **dict.fromkeys(("CONFIGURING", "CF"), JobState.CONFIGURING),
    **dict.fromkeys(("STOPPED", "ST"), JobState.STOPPED),
    **dict.fromkeys(("REVOKED", "RV"), JobState.REVOKED),
}
# sacct writes "None assigned" where a pending job's node list would be.
_NO_NODES = {"None assigned", "(null)"}


def normalize_state(state: str) -> JobState:
    """The JobState for a Slurm state string (``"CANCELLED by 1001"`` is CANCELLED)."""
    words = state.strip().upper().split()
    return (
        _STATES.get(words[0].rstrip("+"), JobState.UNSPECIFIED) if words else JobState.UNSPECIFIED
    )


def exit_from_wait_status(status: int) -> tuple[int, int]:
    """(exit code, signal) of a raw wait(2) status, as Slurm's ``ExitCode=x:y`` shows them."""
    return (status >> 8) & 0xFF, status & 0x7F


def _int(value: Any) -> int | None:
    """A Slurm JSON number (plain or ``{"set", "infinite", "number"}``); None if unset."""
    if isinstance(value, dict) and value.get("infinite"):
        return None
    return number(value)


def _text(value: Any) -> str | None:
    """A string field; None for null, empty or Slurm's ``(null)``."""
    if not isinstance(value, str) or value in ("", "(null)"):
        return None
    return value


def _state(value: Any) -> str:
    """The state string: 22.05 gives ``"RUNNING"``, later releases ``["RUNNING", ...flags]``."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


def _exit(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from squeue's raw wait status or sacct's exit-code object."""
    if isinstance(value, int):
        if _int(value) is None:
            return None, None
        return exit_from_wait_status(value)
    if not isinstance(value, dict):
        return None, None
    code = _int(value.get("return_code"))
    signal = value.get("signal")
    number = None
    if isinstance(signal, dict):
        raw = signal.get("id", signal.get("signal_id"))
        number = _int(raw)
    if number is None and code is not None:
        number = 0
    return code, number


def _status(state: str, reason: Any, exit_code: tuple[int | None, int | None]) -> JobStatus:
    """A JobStatus keeping Slurm's state word and adding its normalised state."""
    return JobStatus(
        state=state,
        normalized_state=normalize_state(state),
        state_reason=_text(reason),
        exit_code=exit_code[0],
        interrupt_signal=exit_code[1],
    )


def _json(text: str) -> dict[str, Any]:
    """A Slurm JSON document (an object at the top)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("Slurm's JSON output is not an object")
    return data


@dataclass(frozen=True)
class SlurmVersion:
    """The Slurm release that produced a JSON document (``meta.Slurm.version``)."""

    major: int
    minor: int

    @property
    def sacct_json_exit_codes(self) -> bool:
        """Whether ``sacct --json`` reports exit codes (22.05's dbv0.0.38 writes 0)."""
        return (self.major, self.minor) >= (23, 2)


def slurm_version(data: Mapping[str, Any]) -> SlurmVersion | None:
    """The version in a Slurm JSON document's ``meta``, if it has one."""
    version = data.get("meta", {}).get("Slurm", {}).get("version", {})
    major, minor = _int(version.get("major")), _int(version.get("minor"))
    if major is None or minor is None:
        return None
    return SlurmVersion(major, minor)


def _squeue_job(raw: Mapping[str, Any], now: int) -> Job:
    """One ``squeue --json`` record; times and nodes only where they are facts, not plans."""
    state = _state(raw.get("job_state"))
    normalized = normalize_state(state)
    pending = normalized in (JobState.PENDING, JobState.REQUEUED)
    ended = normalized.terminal
    start = None if pending else _int(raw.get("start_time")) or None
    # squeue reports the expected end of a running job; only an ended job has an end.
    end = _int(raw.get("end_time")) or None if ended else None
    elapsed = 0 if start is None else max(0, (end if end is not None else now) - start)
    resources = raw.get("job_resources") or {}
    nodes = _text(resources.get("nodes")) if isinstance(resources, dict) else None
    return Job(
        job_id=_int(raw.get("job_id")) or 0,
        name=str(raw.get("name") or ""),
        status=_status(state, raw.get("state_reason"), _exit(raw.get("exit_code"))),
        time=JobTime(
            elapsed=elapsed,
            start=start,
            end=end,
            # squeue tells when a job was last suspended, not for how long:
            # a job never suspended (no such time) has been suspended 0 s.
            suspended=0 if not _int(raw.get("suspend_time")) else None,
            limit=_int(raw.get("time_limit")),
        ),
        account=_text(raw.get("account")),
        allocation_nodes=0 if pending else _int(raw.get("node_count")) or 0,
        cluster=str(raw.get("cluster") or ""),
        group=_text(raw.get("group_name")),
        nodes="" if pending else _text(raw.get("nodes")) or nodes or "",
        partition=str(raw.get("partition") or ""),
        user=_text(raw.get("user_name")),
        working_directory=str(raw.get("current_working_directory") or ""),
        priority=_int(raw.get("priority")),
    )


@dataclass(frozen=True)
class SqueueJob:
    """A squeue record and the ids that select it (array and heterogeneous job ids)."""

    job: Job
    array_job_id: int | None
    het_job_id: int | None

    def matches(self, job_id: int) -> bool:
        """Whether asking for ``job_id`` should return this record."""
        return job_id in (self.job.job_id, self.array_job_id, self.het_job_id)


def jobs_from_squeue_json(text: str, now: int) -> list[SqueueJob]:
    """Every record of ``squeue --json``; ``now`` (epoch s) dates a running job's elapsed time."""
    return jobs_from_squeue(_json(text), now)


def jobs_from_squeue(data: Mapping[str, Any], now: int) -> list[SqueueJob]:
    """Every record of a squeue document (``squeue --json``, slurmrestd's ``/slurm/vX/jobs``)."""
    found = []
    for raw in data.get("jobs") or []:
        found.append(
            SqueueJob(
                _squeue_job(raw, now),
                _int(raw.get("array_job_id")) or None,
                _int(raw.get("het_job_id")) or None,
            )
        )
    return found


def matches(
    job: Job, *, user: str | None = None, account: str | None = None, name: str | None = None
) -> bool:
    """Whether ``job`` passes every given filter (names match exactly)."""
    return (
        (user is None or job.user == user)
        and (account is None or job.account == account)
        and (name is None or job.name == name)
    )


def select_jobs(
    records: Iterable[SqueueJob],
    *,
    user: str | None = None,
    job_ids: Collection[int] = (),
    account: str | None = None,
    name: str | None = None,
) -> list[Job]:
    """The squeue records matching every given filter (22.05's squeue ignores its own).

    A record matches ``user`` or ``job_ids`` when both are given: a watch
    follows the user's jobs and any job named explicitly.
    """
    chosen = []
    for record in records:
        job = record.job
        if user is None and not job_ids:
            picked = True
        else:
            picked = job.user == user or any(record.matches(i) for i in job_ids)
        if picked and matches(job, account=account, name=name):
            chosen.append(job)
    return chosen


def listed(
    query: JobQuery, accounted: Iterable[Job], records: Iterable[SqueueJob]
) -> tuple[list[Job], list[Job], list[int]]:
    """ListJobs' accounted and queued jobs matching ``query``, and the ids to ask accounting for.

    Filtered here: 22.05 ignores --user with --json (squeue, sacct and
    slurmrestd alike), and sacct's --name takes a comma-separated list where
    an exact match is meant. For its first seconds a started job is in
    accounting by id but not yet in its time window: those ids come third,
    to be asked for by id, else the list would show such a job without the
    steps (tasks) that GET of the job shows.
    """
    user = None if query.allusers else query.user
    queued = select_jobs(records, user=user, account=query.account, name=query.name)
    kept = [
        job for job in accounted if matches(job, user=user, account=query.account, name=query.name)
    ]
    known = {job.job_id for job in kept}
    unaccounted = [
        job.job_id
        for job in queued
        if job.job_id not in known and job.status.normalized_state is not JobState.PENDING
    ]
    return kept, queued, unaccounted


def _sacct_time(raw: Mapping[str, Any]) -> JobTime:
    """The ``time`` object of a sacct job or step."""
    start = _int(raw.get("start")) or None
    return JobTime(
        elapsed=_int(raw.get("elapsed")),
        start=start,
        end=_int(raw.get("end")) or None,
        suspended=_int(raw.get("suspended")),
        limit=_int(raw.get("limit")),
    )


def _sacct_step(job_id: int, raw: Mapping[str, Any]) -> JobTask:
    """One step of a sacct job, with its full id (``1234.batch``)."""
    step = raw.get("step") or {}
    step_id = str(step.get("id") or "")
    if "." not in step_id:  # 22.05 says "batch" where later releases say "1234.batch"
        step_id = f"{job_id}.{step_id}"
    return JobTask(
        id=step_id,
        name=str(step.get("name") or ""),
        status=_status(_state(raw.get("state")), None, _exit(raw.get("exit_code"))),
        time=_sacct_time(raw.get("time") or {}),
    )


def _sacct_job(raw: Mapping[str, Any]) -> Job:
    """One ``sacct --json`` job, its steps as tasks."""
    job_id = _int(raw.get("job_id")) or 0
    state = raw.get("state") or {}
    nodes = _text(raw.get("nodes"))
    return Job(
        job_id=job_id,
        name=str(raw.get("name") or ""),
        status=_status(
            _state(state.get("current")), state.get("reason"), _exit(raw.get("exit_code"))
        ),
        time=_sacct_time(raw.get("time") or {}),
        tasks=tuple(_sacct_step(job_id, step) for step in raw.get("steps") or []),
        account=_text(raw.get("account")),
        allocation_nodes=_int(raw.get("allocation_nodes")) or 0,
        cluster=str(raw.get("cluster") or ""),
        group=_text(raw.get("group")),
        nodes="" if nodes is None or nodes in _NO_NODES else nodes,
        partition=str(raw.get("partition") or ""),
        kill_request_user=_text(raw.get("kill_request_user")),
        user=_text(raw.get("user")),
        working_directory=str(raw.get("working_directory") or ""),
        priority=_int(raw.get("priority")),
    )


def jobs_from_sacct_json(text: str) -> tuple[list[Job], SlurmVersion | None]:
    """The jobs of ``sacct --json`` (steps as tasks) and the Slurm version that wrote them."""
    return jobs_from_sacct(_json(text))


def jobs_from_sacct(data: Mapping[str, Any]) -> tuple[list[Job], SlurmVersion | None]:
    """Jobs of an accounting document (``sacct --json``, ``/slurmdb/vX/jobs``); its version."""
    return [_sacct_job(raw) for raw in data.get("jobs") or []], slurm_version(data)


_EXIT_LINE = re.compile(r"^(\d+(?:\.[\w+-]+)?)\|(\d+):(\d+)$")


def exit_codes_from_sacct(text: str) -> dict[str, tuple[int, int]]:
    """``{"1234": (exit, signal), "1234.batch": ...}`` from ``sacct -nP -o JobIDRaw,ExitCode``."""
    codes = {}
    for line in text.splitlines():
        match = _EXIT_LINE.match(line.strip())
        if match:
            codes[match[1]] = (int(match[2]), int(match[3]))
    return codes


def _with_exit(status: JobStatus, code: tuple[int, int] | None) -> JobStatus:
    """``status`` with (exit code, signal) ``code`` if there is one."""
    if code is None:
        return status
    return replace(status, exit_code=code[0], interrupt_signal=code[1])


def with_exit_codes(jobs: Iterable[Job], codes: Mapping[str, tuple[int, int]]) -> list[Job]:
    """``jobs`` with the exit codes of ``codes`` (from :func:`exit_codes_from_sacct`)."""
    return [
        replace(
            job,
            status=_with_exit(job.status, codes.get(str(job.job_id))),
            tasks=tuple(
                replace(task, status=_with_exit(task.status, codes.get(task.id)))
                for task in job.tasks
            ),
        )
        for job in jobs
    ]


def merge_jobs(accounted: Iterable[Job], queued: Iterable[Job]) -> list[Job]:
    """sacct's jobs and squeue's jobs as one list, by job id.

    As in FirecREST, both sources are read and merged by id. slurmctld (squeue)
    is the authority on a job it still holds, so its record wins; sacct lags
    it (slurmdbd is updated asynchronously) but knows the steps and who asked
    for a cancellation, which are kept from it.
    """
    merged = {job.job_id: job for job in accounted}
    for job in queued:
        known = merged.get(job.job_id)
        if known is not None:
            job = replace(
                job,
                tasks=job.tasks or known.tasks,
                kill_request_user=job.kill_request_user or known.kill_request_user,
            )
        merged[job.job_id] = job
    return [merged[job_id] for job_id in sorted(merged)]


_SBATCH_ID = re.compile(r"^\s*(\d+)(?:;\S*)?\s*$", re.MULTILINE)


def job_id_from_sbatch(text: str) -> int | None:
    """The job id ``sbatch --parsable`` printed (``"1234"`` or ``"1234;cluster"``)."""
    match = _SBATCH_ID.search(text)
    return int(match[1]) if match else None


_STREAM_KEYS = {"StdIn": "standard_input", "StdOut": "standard_output", "StdErr": "standard_error"}


def stream_paths_from_scontrol(text: str) -> dict[int, dict[str, str | None]]:
    """Standard stream paths by job id from ``scontrol show job`` (multi-line form).

    The multi-line form puts ``StdIn=``, ``StdOut=`` and ``StdErr=`` on lines
    of their own, so a path keeps its spaces (the one-line form cannot tell
    them from the next key).
    """
    found: dict[int, dict[str, str | None]] = {}
    current: dict[str, str | None] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^JobId=(\d+)\b", stripped)
        if match:
            current = found.setdefault(int(match[1]), dict.fromkeys(_STREAM_KEYS.values()))
            continue
        key, sep, value = stripped.partition("=")
        if current is not None and sep and key in _STREAM_KEYS:
            current[_STREAM_KEYS[key]] = _text(value)
    return found


_SCRIPT_HEADER = re.compile(r"^Batch Script for (\d+)\n-{20,}\n", re.MULTILINE)


def scripts_from_sacct(text: str) -> dict[int, str | None]:
    """Batch scripts by job id from ``sacct --batch-script``; None where none was stored.

    Slurm stores scripts only with ``AccountingStoreFlags=job_script`` and
    prints ``NONE`` otherwise.
    """
    scripts: dict[int, str | None] = {}
    headers = list(_SCRIPT_HEADER.finditer(text))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        body = text[header.end() : end]
        body = body.removesuffix("\n")  # sacct ends each script with an empty line
        scripts[int(header[1])] = None if body.strip() in ("", "NONE") else body
    return scripts


# scancel -v: "scancel: error: Kill job error on job id 12: Invalid job id specified"
_SCANCEL_ERROR = re.compile(r"error: Kill job error on job id \S+: (.+)$", re.MULTILINE)


def scancel_errors(stderr: str) -> list[str]:
    """The per-job errors ``scancel --verbose`` reported."""
    return [match[1].strip() for match in _SCANCEL_ERROR.finditer(stderr)]
