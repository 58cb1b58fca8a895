"""The Transfer service's pure parts: buckets, parts, directives, logs, phases, config."""

from __future__ import annotations

from typing import Any

import pytest

from hpcgate.server.config import ConfigError, parse_config
from hpcgate.server.errors import ServiceError
from hpcgate.server.scheduler.jobs import JobState, JobStatus
from hpcgate.server.transfer.jobs import (
    check_account,
    directives,
    log_paths,
    work_directory,
)
from hpcgate.server.transfer.progress import Phase, phase_of
from hpcgate.server.transfer.records import ObjectState, ObjectView
from hpcgate.server.transfer.s3 import bucket_name, part_count, plan_parts
from hpcgate.server.transfer.staging import staged_key

MIB = 1024 * 1024
TIB = 1024**4
FIELD = "transferDirectives.fileSize"


def test_bucket_per_user_named_after_the_user() -> None:
    assert bucket_name("hpcgate", "alice") == "hpcgate-alice"
    assert bucket_name("", "alice") == "alice"  # FirecREST's naming
    # Names S3 refuses are made valid, and a hash keeps them apart.
    odd = [bucket_name("hpcgate", u) for u in ("Alice", "alice_1", "alice-1", "al", "x" * 80)]
    assert len(set(odd)) == len(odd)
    for name in [*odd, bucket_name("", "al"), bucket_name("", "_x_")]:
        assert 3 <= len(name) <= 63, name
        assert name == name.lower() and name[0].isalnum() and name[-1].isalnum(), name
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"), name


@pytest.mark.parametrize(
    ("size", "parts"),
    [(0, 1), (1, 1), (MIB - 1, 1), (MIB, 1), (MIB + 1, 1), (5 * MIB, 1), (64 * MIB, 13)],
)
def test_parts_of_five_mib(size: int, parts: int) -> None:
    part_size = plan_parts(size, 5 * MIB, FIELD)
    assert part_size == 5 * MIB
    assert part_count(size, part_size) == parts


def test_more_than_ten_thousand_parts_get_larger_parts() -> None:
    size = 10_000 * 5 * MIB + 1
    part_size = plan_parts(size, 5 * MIB, FIELD)
    assert part_size % MIB == 0 and part_size > 5 * MIB
    assert part_count(size, part_size) <= 10_000
    # 5 TiB, S3's largest object, still fits, with parts below the contract's uint32.
    part_size = plan_parts(5 * TIB, 5 * MIB, FIELD)
    assert part_count(5 * TIB, part_size) <= 10_000 and part_size < 2**32
    # Downloads bound their parts further (their URLs are in the job script).
    assert part_count(64 * MIB, plan_parts(64 * MIB, 5 * MIB, FIELD, max_parts=4)) <= 4


@pytest.mark.parametrize("size", [-1, 5 * TIB + 1])
def test_impossible_sizes_are_invalid_naming_the_field(size: int) -> None:
    with pytest.raises(ServiceError) as caught:
        plan_parts(size, 5 * MIB, FIELD)
    assert caught.value.fields.keys() == {FIELD}


def test_staged_keys_are_uuid_slash_basename() -> None:
    key = staged_key("/home/alice/data/run 1.h5")
    transfer_id, _, name = key.partition("/")
    assert name == "run 1.h5" and len(transfer_id) == 36 and transfer_id[14] == "4"
    assert staged_key("/home/alice/a") != staged_key("/home/alice/a")


def test_directives_take_the_account() -> None:
    lines = ["#SBATCH --partition=xfer", "#SBATCH --account={account}"]
    assert directives(lines, "proj1") == ["#SBATCH --partition=xfer", "#SBATCH --account=proj1"]
    assert directives(["#SBATCH -p xfer"], None) == ["#SBATCH -p xfer"]
    with pytest.raises(ServiceError) as caught:
        directives(lines, None)
    assert caught.value.fields.keys() == {"account"}
    assert caught.value.reason == "ACCOUNT_REQUIRED"


@pytest.mark.parametrize("account", ["", "a b", "p\n#SBATCH --x", "a'b", "{account}", "x" * 65])
def test_accounts_that_are_no_account_names_are_invalid(account: str) -> None:
    with pytest.raises(ServiceError) as caught:
        check_account(account)
    assert caught.value.fields.keys() == {"account"}


def _system(**changes: Any) -> dict[str, Any]:
    system = {
        "name": "c",
        "ssh": {"host": "h", "known_hosts_entry": "x"},
        "filesystems": [{"path": "/scratch"}, {"path": "/home/", "default_work_dir": True}],
        "s3": {"endpoint": "http://s3", "access_key": {"value": "a"}, "secret_key": {"value": "b"}},
    }
    system.update(changes)
    return system


def test_jobs_run_in_the_users_directory_with_logs_named_after_the_job() -> None:
    config = parse_config({"systems": [_system()]}).systems[0]
    assert work_directory(config, "alice") == "/home/alice"
    assert log_paths("/home/alice", 42) == (
        "/home/alice/.hpcgate-transfer-42.log",
        "/home/alice/.hpcgate-transfer-42.err",
    )
    bare = parse_config({"systems": [_system(filesystems=[])]}).systems[0]
    with pytest.raises(ServiceError):
        work_directory(bare, "alice")


def test_s3_config_defaults_and_keys_named_in_errors() -> None:
    s3 = parse_config({"systems": [_system()]}).systems[0].s3
    assert s3 is not None
    assert (s3.lifecycle_days, s3.url_expiry, s3.ingress_wait) == (10, 3600, 3600)
    assert s3.client_endpoint == "http://s3"
    for key, value in [
        ("bucket_prefix", "Bad_Prefix"),
        ("max_part_size", 2**32),
        ("max_part_size", MIB),
        ("url_expiry", 8 * 24 * 3600),
    ]:
        broken = _system()
        broken["s3"] = {**broken["s3"], key: value}
        with pytest.raises(ConfigError, match=f"systems.0.s3.{key}"):
            parse_config({"systems": [broken]})
    with pytest.raises(ConfigError, match="datatransfer_jobs_directives"):
        parse_config(
            {"systems": [_system(data_operation={"datatransfer_jobs_directives": ["--nodes=1"]})]}
        )


def _status(state: JobState, exit_code: int | None = None) -> JobStatus:
    return JobStatus(state=state.value, normalized_state=state, exit_code=exit_code)


@pytest.mark.parametrize(
    ("operation", "state", "exit_code", "view", "phase"),
    [
        ("upload", JobState.PENDING, None, ObjectState.UPLOADING, Phase.WAITING_FOR_CLIENT),
        ("upload", JobState.RUNNING, None, ObjectState.UPLOADING, Phase.WAITING_FOR_CLIENT),
        ("upload", JobState.PENDING, None, ObjectState.COMPLETE, Phase.QUEUED),
        ("upload", JobState.RUNNING, None, ObjectState.COMPLETE, Phase.RUNNING),
        ("upload", JobState.COMPLETED, 0, ObjectState.COMPLETE, Phase.SUCCEEDED),
        ("upload", JobState.FAILED, 1, ObjectState.ABSENT, Phase.FAILED),
        ("upload", JobState.CANCELLED, None, ObjectState.ABSENT, Phase.FAILED),
        ("download", JobState.RUNNING, None, ObjectState.UPLOADING, Phase.RUNNING),
        ("download", JobState.COMPLETED, 0, ObjectState.COMPLETE, Phase.SUCCEEDED),
        ("download", JobState.TIMEOUT, None, ObjectState.ABSENT, Phase.FAILED),
        # The object is gone (aborted, or S3 lost it) while the job waits: failed.
        ("upload", JobState.RUNNING, None, ObjectState.ABSENT, Phase.FAILED),
        ("download", JobState.PENDING, None, ObjectState.ABSENT, Phase.FAILED),
        ("cp", JobState.PENDING, None, None, Phase.QUEUED),
        ("cp", JobState.RUNNING, None, None, Phase.RUNNING),
        ("cp", JobState.COMPLETED, 0, None, Phase.SUCCEEDED),
        ("cp", JobState.COMPLETED, 1, None, Phase.FAILED),
    ],
)
def test_phase_from_job_and_object(
    operation: str, state: JobState, exit_code: int | None, view: ObjectState | None, phase: Phase
) -> None:
    seen = None if view is None else ObjectView(view)
    assert phase_of(operation, _status(state, exit_code), seen)[0] is phase


def test_only_success_and_failure_are_terminal() -> None:
    assert {p for p in Phase if p.terminal} == {Phase.SUCCEEDED, Phase.FAILED}
