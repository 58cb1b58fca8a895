"""The edge's JSON rules, read from the contracts' options and the fields' presence."""

from __future__ import annotations

from hpcgate.edge.jsonmap import to_json
from hpcgate.v1 import filesystem_pb2, scheduler_pb2, status_pb2, transfer_pb2


def test_ids_and_listing_sizes_are_strings_other_64_bit_integers_numbers() -> None:
    assert to_json(scheduler_pb2.SubmitJobResponse(job_id=42)) == {"jobId": "42"}
    listing = to_json(filesystem_pb2.LsResponse(output=[filesystem_pb2.File(size=2**40)]))
    assert listing["output"][0]["size"] == str(2**40)
    stat = to_json(filesystem_pb2.StatResponse(output=filesystem_pb2.FileStat(size=2**40)))
    assert stat["output"]["size"] == 2**40
    job = to_json(transfer_pb2.TransferCpResponse(transfer_job=transfer_pb2.TransferJob(job_id=7)))
    assert job["transferJob"]["jobId"] == "7"


def test_unset_fields_with_presence_are_null_never_left_out() -> None:
    job = to_json(scheduler_pb2.JobModel(job_id=1, time=scheduler_pb2.JobTime(limit=5)))
    assert job["time"] == {
        "elapsed": None,
        "start": None,
        "end": None,
        "suspended": None,
        "limit": 5,
    }
    assert job["status"] is None  # an unset message, too
    assert (job["killRequestUser"], job["priority"], job["allocationNodes"]) == (None, None, 0)
    assert to_json(scheduler_pb2.SubmitJobResponse()) == {"jobId": None}


def test_members_of_a_real_oneof_stay_out() -> None:
    reply = to_json(filesystem_pb2.DownloadStreamResponse(chunk=b"ab"))
    assert reply == {"chunk": "YWI="}


def test_omit_null_messages_leave_nulls_and_marked_empty_lists_out() -> None:
    directives = transfer_pb2.TransferDirectives(transfer_method="s3", download_url="u")
    reply = to_json(
        transfer_pb2.TransferDownloadResponse(
            transfer_job=transfer_pb2.TransferJob(job_id=3), transfer_directives=directives
        )
    )
    assert reply["transferDirectives"] == {"transferMethod": "s3", "downloadUrl": "u"}
    assert "logs" not in reply["transferJob"]
    # Elsewhere the same message writes its nulls, and null for the empty list.
    status = to_json(transfer_pb2.TransferStatus(transfer_directives=directives))
    assert status["transferDirectives"]["partsUploadUrls"] is None
    assert status["transferDirectives"]["completeUploadUrl"] is None


def test_maps_and_well_known_types_keep_protobufs_forms() -> None:
    liveness = status_pb2.GetLivenessResponse(last_update=3)
    liveness.healthcheck_runs["cluster"].FromSeconds(0)
    assert to_json(liveness) == {
        "healthcheckRuns": {"cluster": "1970-01-01T00:00:00Z"},
        "lastUpdate": 3,
    }


def test_fields_of_other_union_kinds_stay_out() -> None:
    s3 = status_pb2.DataTransferConfig(service_type="s3", name="store", ttl=0)
    assert to_json(s3) == {"serviceType": "s3", "name": "store", "ttl": 0}
    health = status_pb2.ServiceHealth(service_type="ssh", healthy=True)
    assert "path" not in to_json(health) and to_json(health)["latency"] is None


def test_an_empty_map_marked_null_when_empty_is_null() -> None:
    assert to_json(status_pb2.ProbingServices(interval_check=60)) == {
        "intervalCheck": 60,
        "services": None,
    }
    probing = status_pb2.ProbingServices(interval_check=60)
    probing.services["ssh"].timeout = 5
    assert to_json(probing)["services"]["ssh"]["timeout"] == 5
