"""How failing Slurm commands are classified, and what their messages may show.

The outputs are the ones Slurm 22.05 printed on the loopback cluster with
each daemon down or hung (see test_faults_classes for the real thing).
"""

from __future__ import annotations

import json

import pytest

from hpcgate.server.config import SSHPoolLimits
from hpcgate.server.errors import ErrorKind, ServiceError, redact_addresses
from hpcgate.server.scheduler.slurm.failures import checked, command_name
from hpcgate.server.ssh import CommandResult

SLURMDBD_DOWN = (
    b"sacct: error: slurm_persist_conn_open_without_init: failed to open persistent"
    b" connection to host:127.0.0.1:29086: Connection refused\n"
    b"sacct: error: Sending PersistInit msg: Connection refused\n"
    b"sacct: error: Problem talking to the database: Connection refused\n"
)
MARIADB_DOWN = (
    b"sacct: error: slurm_persist_conn_open: Something happened with the receiving/processing"
    b" of the persistent connection init message to 127.0.0.1:29086: Unable to connect to"
    b" database\nsacct: error: Problem talking to the database: Unable to connect to database\n"
)


def _json(errors: list[dict[str, object]]) -> bytes:
    meta = {"plugin": {"type": "openapi/v0.0.38"}}
    return json.dumps({"meta": meta, "errors": errors, "jobs": []}, indent=2).encode()


def _raised(argv: list[str], status: int, stdout: bytes = b"", stderr: bytes = b"") -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        checked(argv, CommandResult(status, stdout, stderr))
    return caught.value


@pytest.mark.parametrize("stderr", [SLURMDBD_DOWN, MARIADB_DOWN])
def test_accounting_down_is_unavailable_without_its_address(stderr: bytes) -> None:
    error = _raised(["sacct", "--json", "--user=alice"], 1, stderr=stderr)
    assert error.code == ErrorKind.UNAVAILABLE
    assert error.reason == "ACCOUNTING_UNAVAILABLE"
    assert "127.0.0.1" not in error.message and "29086" not in error.message
    assert "Problem talking to the database" in error.message


def test_squeue_exiting_0_with_an_error_is_unavailable() -> None:
    """slurmctld hung or stopped: squeue --json says so only in its document."""
    failure = {"description": "Failed while looking for jobs", "error_number": -1}
    error = _raised(["squeue", "--json", "--states=all"], 0, stdout=_json([failure]))
    assert error.code == ErrorKind.UNAVAILABLE
    assert error.reason == "SCHEDULER_UNAVAILABLE"
    assert "Failed while looking for jobs" in error.message


def test_an_empty_result_is_no_failure() -> None:
    empty = {"description": "Nothing found", "error_number": 9003}
    text = checked(["sacct", "--json", "--jobs=4000000000"], CommandResult(0, _json([empty]), b""))
    assert json.loads(text)["jobs"] == []
    assert checked(["squeue", "--json"], CommandResult(0, _json([]), b""))


def test_a_missing_command_is_a_precondition_and_others_internal() -> None:
    missing = _raised(["sinfo", "--json"], 127, stderr=b"sh: sinfo: not found")
    assert missing.code == ErrorKind.FAILED_PRECONDITION
    other = _raised(["id"], 1, stderr=b"id: oops")
    assert other.code == ErrorKind.INTERNAL


def test_command_name_skips_an_env_prefix() -> None:
    assert command_name(["env", "A=1", "B=2", "sbatch", "--parsable"]) == "sbatch"
    assert command_name(["scontrol", "ping"]) == "scontrol"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("to host:localhost:6819: refused", "to <address>: refused"),
        ("ipv4:127.0.0.1:50051: Connection refused", "ipv4:<address>: Connection refused"),
        ('endpoint URL: "http://s3.internal:9000/b?x=1"', 'endpoint URL: "<address>"'),
        ("[::1]:22 and 10.0.0.7", "<address> and <address>"),
        ("started 12:30:00, job 5", "started 12:30:00, job 5"),
    ],
)
def test_addresses_are_redacted(text: str, shown: str) -> None:
    assert redact_addresses(text) == shown


def test_scheduler_share_defaults_to_half_the_channels() -> None:
    assert SSHPoolLimits(max_connections=4, max_channels=10).scheduler_commands == 20
    assert SSHPoolLimits(max_connections=1, max_channels=1).scheduler_commands == 1
    assert SSHPoolLimits(max_scheduler_commands=3).scheduler_commands == 3
