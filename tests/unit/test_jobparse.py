"""Parsers of Slurm's job commands, on output captured from the loopback cluster (22.05.8).

The records are real output trimmed to the keys the parsers read; the one
document in the later layout (``{"set", "number"}`` objects, state lists) is
written after Slurm 23.11's openapi v0.0.40 and says so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hpcgate.server.scheduler.jobs import Job, JobDescription, JobState
from hpcgate.server.scheduler.slurm import jobparse
from hpcgate.server.scheduler.slurm.jobs import sbatch_argv

META_22_05 = {
    "plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
    "Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"},
}
_COMMON = {
    "account": "proj1",
    "array_job_id": 0,
    "cluster": "hpcgate",
    "current_working_directory": "/scratch/alice",
    "group_name": "alice",
    "het_job_id": 0,
    "node_count": 1,
    "partition": "debug",
    "suspend_time": 0,
    "time_limit": 10,
    "user_name": "alice",
}
SQUEUE_RUNNING = {
    **_COMMON,
    "end_time": 1795399711,  # the expected end: not an end yet
    "exit_code": 0,
    "job_id": 216,
    "job_resources": {"nodes": "hpc1"},
    "job_state": "RUNNING",
    "name": "a|b c ü",
    "nodes": "hpc1",
    "priority": 4294901562,
    "start_time": 1795399111,
    "state_reason": "None",
    "submit_time": 1795399111,
}
SQUEUE_PENDING = {
    **_COMMON,
    "end_time": 0,
    "exit_code": 0,
    "job_id": 217,
    "job_resources": {},
    "job_state": "PENDING",
    "name": "pend",
    "nodes": "",
    "priority": 4294901561,
    "start_time": 0,
    "state_reason": "Reservation",
    "submit_time": 1795399111,
}
SQUEUE_FAILED = {
    **_COMMON,
    "end_time": 1795398793,
    "exit_code": 768,  # a raw wait status: exit 3
    "job_id": 49,
    "job_resources": {"nodes": "hpc1"},
    "job_state": "FAILED",
    "name": "sbatch",
    "nodes": "hpc1",
    "priority": 4294901715,
    "start_time": 1795398790,
    "state_reason": "NonZeroExitCode",
    "submit_time": 1795398789,
}
SQUEUE_BOB = {
    **SQUEUE_RUNNING,
    "job_id": 300,
    "name": "bobs",
    "user_name": "bob",
    "group_name": "bob",
}
SACCT_FAILED = {
    "account": "proj1",
    "allocation_nodes": 1,
    "cluster": "hpcgate",
    "exit_code": {"status": "SUCCESS", "return_code": 0},  # sic: 22.05 says 0 for exit 3
    "group": "alice",
    "job_id": 49,
    "kill_request_user": None,
    "name": "sbatch",
    "nodes": "hpc1",
    "partition": "debug",
    "priority": 4294901715,
    "state": {"current": "FAILED", "reason": "None"},
    "steps": [
        {
            "step": {"job_id": 49, "het": {"component": None}, "id": "batch", "name": "batch"},
            "state": "FAILED",
            "exit_code": {"status": "SUCCESS", "return_code": 0},
            "time": {"elapsed": 3, "end": 1795398793, "start": 1795398790, "suspended": 0},
        }
    ],
    "time": {
        "elapsed": 3,
        "end": 1795398793,
        "start": 1795398790,
        "submission": 1795398789,
        "suspended": 0,
        "limit": 10,
    },
    "user": "alice",
    "working_directory": "/scratch/alice",
}
SACCT_CANCELLED_PENDING = {
    "account": "proj1",
    "allocation_nodes": 0,
    "cluster": "hpcgate",
    "exit_code": {"status": "SUCCESS", "return_code": 0},
    "group": "alice",
    "job_id": 217,
    "kill_request_user": "alice",
    "name": "pend",
    "nodes": "None assigned",
    "partition": "debug",
    "priority": 4294901561,
    "state": {"current": "CANCELLED", "reason": "Reservation"},
    "steps": [],
    "time": {
        "elapsed": 0,
        "end": 1795399113,
        "start": 1795399113,
        "submission": 1795399111,
        "suspended": 0,
        "limit": 10,
    },
    "user": "alice",
    "working_directory": "/scratch/alice",
}
SACCT_EXIT_CODES = "49|3:0\n49.batch|3:0\n217|0:0\n"
SCONTROL_SHOW_JOB = """\
JobId=216 JobName=a|b c ü
   UserId=alice(1001) GroupId=alice(1002) MCS_label=N/A
   JobState=RUNNING Reason=None Dependency=(null)
   Command=(null)
   WorkDir=/scratch/alice
   StdErr=/scratch/alice/out 216.txt
   StdIn=/dev/null
   StdOut=/scratch/alice/out 216.txt
   Power=

"""
NOW = 1795399131


def squeue(*jobs: dict[str, Any]) -> str:
    return json.dumps({"meta": META_22_05, "errors": [], "jobs": list(jobs)})


def sacct(*jobs: dict[str, Any]) -> str:
    meta = {**META_22_05, "plugin": {"type": "openapi/dbv0.0.38"}}
    return json.dumps({"meta": meta, "errors": [], "jobs": list(jobs)})


def one(text: str) -> Job:
    (record,) = jobparse.jobs_from_squeue_json(text, NOW)
    return record.job


@pytest.mark.parametrize(
    ("state", "normalized"),
    [
        ("PENDING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.COMPLETING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("REQUEUE_HOLD", JobState.REQUEUED),
        ("CF", JobState.CONFIGURING),
        ("CD", JobState.COMPLETED),
        ("running", JobState.RUNNING),
        ("WHATEVER", JobState.UNSPECIFIED),
        ("", JobState.UNSPECIFIED),
    ],
)
def test_states_normalise(state: str, normalized: JobState) -> None:
    assert jobparse.normalize_state(state) is normalized


def test_terminal_states() -> None:
    assert JobState.TIMEOUT.terminal and JobState.CANCELLED.terminal
    assert not JobState.COMPLETING.terminal and not JobState.REQUEUED.terminal


def test_wait_status_gives_exit_code_and_signal() -> None:
    assert jobparse.exit_from_wait_status(768) == (3, 0)
    assert jobparse.exit_from_wait_status(9) == (0, 9)
    assert jobparse.exit_from_wait_status(0) == (0, 0)


def test_running_job_from_squeue() -> None:
    job = one(squeue(SQUEUE_RUNNING))
    assert job.job_id == 216
    assert job.name == "a|b c ü"
    assert job.status.state == "RUNNING"
    assert job.status.normalized_state is JobState.RUNNING
    assert job.status.state_reason == "None"
    assert (job.status.exit_code, job.status.interrupt_signal) == (0, 0)
    assert job.time.start == 1795399111
    assert job.time.end is None  # squeue's end_time of a running job is only expected
    assert job.time.elapsed == NOW - 1795399111
    assert job.time.limit == 10
    assert (job.nodes, job.allocation_nodes) == ("hpc1", 1)
    assert (job.user, job.group, job.account) == ("alice", "alice", "proj1")
    assert job.working_directory == "/scratch/alice"
    assert job.priority == 4294901562


def test_pending_job_has_no_start_or_nodes() -> None:
    job = one(squeue(SQUEUE_PENDING))
    assert job.status.normalized_state is JobState.PENDING
    assert job.status.state_reason == "Reservation"
    assert (job.time.start, job.time.end, job.time.elapsed) == (None, None, 0)
    assert (job.nodes, job.allocation_nodes) == ("", 0)


def test_failed_job_from_squeue_has_its_exit_code() -> None:
    job = one(squeue(SQUEUE_FAILED))
    assert job.status.normalized_state is JobState.FAILED
    assert (job.status.exit_code, job.status.interrupt_signal) == (3, 0)
    assert (job.time.start, job.time.end, job.time.elapsed) == (1795398790, 1795398793, 3)


def test_later_json_layout() -> None:
    """Numbers as {"set", "number"} objects and state lists (openapi v0.0.40, Slurm 23.11)."""

    def number(n: int, infinite: bool = False) -> dict[str, Any]:
        return {"set": True, "infinite": infinite, "number": n}

    raw = {
        **SQUEUE_FAILED,
        "job_id": number(49),
        "job_state": ["FAILED"],
        "exit_code": {
            "status": ["SIGNALED"],
            "return_code": number(0),
            "signal": {"id": number(9), "name": "KILL"},
        },
        "start_time": number(1795398790),
        "end_time": number(1795398793),
        "time_limit": number(0, infinite=True),
        "priority": number(7),
        "node_count": number(1),
    }
    job = one(squeue(raw))
    assert job.job_id == 49
    assert job.status.state == "FAILED"
    assert (job.status.exit_code, job.status.interrupt_signal) == (0, 9)
    assert job.time.limit is None  # unlimited
    assert job.priority == 7


def test_squeue_records_are_filtered_here() -> None:
    """22.05's squeue --json ignores --user and --jobs: everyone's jobs come back."""
    array_task = {**SQUEUE_RUNNING, "job_id": 401, "array_job_id": 400}
    records = jobparse.jobs_from_squeue_json(
        squeue(SQUEUE_RUNNING, SQUEUE_PENDING, SQUEUE_BOB, array_task), NOW
    )

    def ids(**filters: Any) -> list[int]:
        return [job.job_id for job in jobparse.select_jobs(records, **filters)]

    assert ids(user="alice") == [216, 217, 401]
    assert ids(user="bob") == [300]
    assert ids(user="bob", job_ids=[217]) == [217, 300]  # a named job of someone else
    assert ids(job_ids=[400]) == [401]  # an array's tasks answer to the array's id
    assert ids(user="alice", name="a|b c ü") == [216, 401]
    assert ids(account="proj2") == []


def test_sacct_job_with_steps_and_version() -> None:
    jobs, version = jobparse.jobs_from_sacct_json(sacct(SACCT_FAILED, SACCT_CANCELLED_PENDING))
    assert version is not None and (version.major, version.minor) == (22, 5)
    assert not version.sacct_json_exit_codes
    failed, cancelled = jobs
    assert failed.status.normalized_state is JobState.FAILED
    assert failed.time.elapsed == 3
    (batch,) = failed.tasks
    assert (batch.id, batch.name, batch.status.state) == ("49.batch", "batch", "FAILED")
    assert cancelled.nodes == ""  # not "None assigned"
    assert cancelled.kill_request_user == "alice"
    assert cancelled.status.state_reason == "Reservation"


def test_exit_codes_of_22_05_come_from_parsable_sacct() -> None:
    jobs, _ = jobparse.jobs_from_sacct_json(sacct(SACCT_FAILED))
    assert jobs[0].status.exit_code == 0  # what 22.05's JSON claims
    codes = jobparse.exit_codes_from_sacct(SACCT_EXIT_CODES + "garbage|x\n")
    assert codes == {"49": (3, 0), "49.batch": (3, 0), "217": (0, 0)}
    (fixed,) = jobparse.with_exit_codes(jobs, codes)
    assert (fixed.status.exit_code, fixed.status.interrupt_signal) == (3, 0)
    assert fixed.tasks[0].status.exit_code == 3


def test_merge_prefers_squeue_and_keeps_sacct_details() -> None:
    accounted, _ = jobparse.jobs_from_sacct_json(sacct(SACCT_FAILED, SACCT_CANCELLED_PENDING))
    queued = [
        r.job for r in jobparse.jobs_from_squeue_json(squeue(SQUEUE_RUNNING, SQUEUE_FAILED), NOW)
    ]
    merged = jobparse.merge_jobs(accounted, queued)
    assert [job.job_id for job in merged] == [49, 216, 217]
    failed = merged[0]
    assert failed.status.exit_code == 3  # squeue's, right where 22.05's sacct JSON is wrong
    assert [t.id for t in failed.tasks] == ["49.batch"]  # steps only sacct knows
    assert merged[2].kill_request_user == "alice"


@pytest.mark.parametrize(
    ("output", "job_id"),
    [("12\n", 12), ("12;hpcgate\n", 12), ("warning first\n13\n", 13), ("", None)],
)
def test_sbatch_parsable_output(output: str, job_id: int | None) -> None:
    assert jobparse.job_id_from_sbatch(output) == job_id


def test_stream_paths_keep_spaces() -> None:
    assert jobparse.stream_paths_from_scontrol(SCONTROL_SHOW_JOB) == {
        216: {
            "standard_input": "/dev/null",
            "standard_output": "/scratch/alice/out 216.txt",
            "standard_error": "/scratch/alice/out 216.txt",
        }
    }


def test_scripts_from_sacct() -> None:
    rule = "-" * 80
    text = (
        f"Batch Script for 5\n{rule}\nNONE\n\nBatch Script for 6\n{rule}\n#!/bin/bash\necho hi\n\n"
    )
    assert jobparse.scripts_from_sacct(text) == {5: None, 6: "#!/bin/bash\necho hi\n"}
    assert jobparse.scripts_from_sacct("") == {}


def test_scancel_verbose_errors() -> None:
    stderr = (
        "scancel: Terminating job 99999\n"
        "scancel: error: Kill job error on job id 99999: Invalid job id specified\n"
    )
    assert jobparse.scancel_errors(stderr) == ["Invalid job id specified"]
    assert jobparse.scancel_errors("scancel: Terminating job 5\n") == []


def test_sbatch_command_line() -> None:
    job = JobDescription(
        working_directory="/scratch/alice",
        script_path="/scratch/alice/job.sh",
        env=(("GREETING", "hello, 'world'"), ("PATH", "/opt/bin:/usr/bin")),
        name="a|b c ü",
        partition="debug",
    )
    assert sbatch_argv(job) == [
        "env",
        "GREETING=hello, 'world'",  # via sbatch's own environment: any value survives
        "sbatch",
        "--parsable",
        "--export=ALL,PATH=/opt/bin:/usr/bin",  # sbatch itself must not use this PATH
        "--chdir=/scratch/alice",
        "--job-name=a|b c ü",
        "--partition=debug",
        "--",
        "/scratch/alice/job.sh",
    ]
    inline = JobDescription(working_directory="/tmp", script="#!/bin/bash\n")
    assert sbatch_argv(inline) == ["sbatch", "--parsable", "--export=ALL", "--chdir=/tmp"]
