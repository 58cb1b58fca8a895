"""The Scheduler service's request checks (scheduler domain) and the servicer's hand-over."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from hpcgate.server.errors import ServiceError
from hpcgate.server.scheduler import requests
from hpcgate.server.servicers.scheduler import job_description
from hpcgate.v1 import scheduler_pb2


def refused_field(call: Any, *args: Any, **kwargs: Any) -> str:
    """The one field ``call(*args, **kwargs)`` refuses."""
    with pytest.raises(ServiceError) as error:
        call(*args, **kwargs)
    (field,) = error.value.fields
    return field


def describe(**fields: Any) -> Any:
    given: dict[str, Any] = {
        "working_directory": "/home/alice",
        "script": "#!/bin/bash\ntrue\n",
        "script_path": None,
        "env": None,
        "optional": {},
    }
    given.update(fields)
    return requests.job_description(**given)


def test_field_names_are_the_contracts_json_names() -> None:
    message = scheduler_pb2.JobDescriptionModel.DESCRIPTOR
    names = [*requests.OPTIONAL_TEXT, "working_directory", "script", "script_path", "env"]
    for name in names:
        assert requests.job_field(name) == "job." + message.fields_by_name[name].json_name


def test_environment_forms() -> None:
    assert requests.environment(None) == requests.DEFAULT_ENV
    assert requests.environment({"B": "2", "A": "1"}) == (("A", "1"), ("B", "2"))
    assert requests.environment(["X=a=b", "Y="]) == (("X", "a=b"), ("Y", ""))
    assert requests.environment({}) == ()


@pytest.mark.parametrize(
    "env",
    [
        "A=1",
        7.0,
        ["A"],
        [1.0],
        {"1A": "x"},
        {"A": 1.0},
        {"A": None},
        {"A": "x\x00y"},
        ["B-C=1"],
    ],
)
def test_bad_environments_are_refused_naming_the_field(env: Any) -> None:
    assert refused_field(requests.environment, env) == "job.env"


def test_job_description_checks_every_field() -> None:
    job = describe(optional={"partition": "debug"}, env={"A": "1"})
    assert (job.working_directory, job.partition, job.env) == (
        "/home/alice",
        "debug",
        (("A", "1"),),
    )
    assert (
        describe(script=None, script_path="/home/alice/run.sh").script_path == "/home/alice/run.sh"
    )
    assert refused_field(describe, script=None) == "job.script"
    assert refused_field(describe, script_path="/x") == "job.script"
    assert refused_field(describe, script="") == "job.script"
    assert refused_field(describe, script=None, script_path="run.sh") == "job.scriptPath"
    assert refused_field(describe, working_directory="home") == "job.workingDirectory"
    assert refused_field(describe, optional={"standard_output": ""}) == "job.standardOutput"
    assert refused_field(describe, optional={"name": "a\x00"}) == "job.name"


def test_job_query_checks_window_and_account() -> None:
    query = requests.job_query("alice", False, "proj1", None, "")
    assert (query.time_window, query.account) == ("24h", "proj1")
    assert requests.job_query("alice", True, None, "n", "7d").time_window == "7d"
    assert refused_field(requests.job_query, "alice", False, None, None, "2h") == "timeWindow"
    assert refused_field(requests.job_query, "alice", False, "a b", None, "") == "account"


def test_servicer_hands_over_both_environment_forms() -> None:
    job = scheduler_pb2.JobDescriptionModel(working_directory="/home/alice", script="true")
    assert job_description(job).env == requests.DEFAULT_ENV
    job.env.null_value = struct_pb2.NULL_VALUE
    assert job_description(job).env == requests.DEFAULT_ENV
    job.env.struct_value.update({"B": "2", "A": "1"})
    assert job_description(job).env == (("A", "1"), ("B", "2"))
    job.env.list_value.extend(["X=1"])
    assert job_description(job).env == (("X", "1"),)
    job.env.number_value = 3
    assert refused_field(job_description, job) == "job.env"
    path_job = scheduler_pb2.JobDescriptionModel(
        working_directory="/home/alice", script_path="/home/alice/run.sh", partition="debug"
    )
    described = job_description(path_job)
    assert (described.script, described.script_path) == (None, "/home/alice/run.sh")
    assert described.partition == "debug"
    no_script = scheduler_pb2.JobDescriptionModel(working_directory="/home/alice")
    assert refused_field(job_description, no_script) == "job.script"
