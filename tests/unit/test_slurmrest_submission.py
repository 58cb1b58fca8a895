"""slurmrestd's job/submit body: #SBATCH directives as properties, the request's fields on top."""

from __future__ import annotations

import pytest

from hpcgate.server.scheduler.jobs import JobDescription
from hpcgate.server.scheduler.slurmrest.submission import directives, minutes, rest_submission


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", 10),
        ("10:30", 11),  # seconds round up, as Slurm does
        ("1:00:00", 60),
        ("2-0", 2880),
        ("1-2:3", 1563),
        ("1-0:0:1", 1441),
        ("soon", None),
        ("1:2:3:4", None),
    ],
)
def test_time_limits_in_minutes(text: str, expected: int | None) -> None:
    assert minutes(text) == expected


def test_directives_long_short_and_spaced() -> None:
    script = "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH --partition=debug",
            "#SBATCH -J 'a b'  # a comment",
            "#SBATCH --time 5 -n2",
            "",
            "# a comment does not end them",
            "#SBATCH --output=/tmp/o-%j",
            "echo hi",
            "#SBATCH --account=late",  # after the first command: not a directive
        ]
    )
    assert directives(script) == {
        "partition": "debug",
        "name": "a b",
        "time_limit": 5,
        "tasks": 2,
        "standard_output": "/tmp/o-%j",
    }


@pytest.mark.parametrize(
    "line",
    ["#SBATCH --gres=gpu:1", "#SBATCH --time=soon", "#SBATCH -x hpc2", "#SBATCH --partition"],
)
def test_a_directive_not_understood_leaves_it_to_sbatch(line: str) -> None:
    job = JobDescription(working_directory="/w", script=f"#!/bin/bash\n{line}\ntrue\n")
    assert rest_submission(job, "v0.0.38") is None


def test_the_requests_fields_override_the_directives() -> None:
    job = JobDescription(
        working_directory="/w",
        script="#!/bin/bash\n#SBATCH --partition=debug --chdir=/elsewhere\ntrue\n",
        env=(("A", "1,2"),),
        partition="normal",
    )
    body = rest_submission(job, "v0.0.38")
    assert body is not None
    assert body["script"] == job.script
    properties = body["job"]
    assert properties["partition"] == "normal"
    assert properties["current_working_directory"] == "/w"
    assert properties["environment"] == {"A": "1,2"}
    assert rest_submission(job, "v0.0.40")["job"]["environment"] == ["A=1,2"]  # type: ignore[index]
