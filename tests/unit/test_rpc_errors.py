"""The one table from the domain's error kinds to gRPC codes, and the statuses made from it."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from hpcgate.edge.errors import HTTP_STATUS, status_response
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.rpc.errors import DOMAIN, GRPC_CODES, grpc_code, to_status

DETAILS_KEY = "grpc-status-details-bin"  # where gRPC carries a rich status's details


def test_every_kind_maps_to_the_grpc_code_of_its_name() -> None:
    # Same names as before ErrorKind existed, so callers' codes and HTTP statuses are unchanged.
    assert set(GRPC_CODES) == set(ErrorKind)
    for kind in ErrorKind:
        assert grpc_code(kind) is grpc.StatusCode[kind.name]
    assert len(set(GRPC_CODES.values())) == len(ErrorKind)


def test_no_kind_is_a_success_or_the_library_own() -> None:
    # OK, CANCELLED and UNKNOWN are gRPC's to give; a domain error is none of them.
    codes = set(GRPC_CODES.values())
    assert not codes & {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_status_carries_code_reason_fields_and_metadata(kind: ErrorKind) -> None:
    error = ServiceError(
        kind, "path: too long", "PATH_TOO_LONG", fields={"path": "too long"}, metadata={"a": "b"}
    )
    status = to_status(error)
    assert status.code is grpc.StatusCode[kind.name]
    assert status.details == "path: too long"
    decoded = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_KEY])
    assert decoded.code == status.code.value[0] and decoded.message == status.details
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    assert decoded.details[0].Unpack(info) and decoded.details[1].Unpack(bad)
    assert (info.reason, info.domain, dict(info.metadata)) == ("PATH_TOO_LONG", DOMAIN, {"a": "b"})
    assert [(v.field, v.description) for v in bad.field_violations] == [("path", "too long")]


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_edge_renders_each_kind_with_its_http_status(kind: ErrorKind) -> None:
    status = to_status(ServiceError(kind, "no such job", "JOB_NOT_FOUND"))
    response = status_response(status.code, status.details, status.trailing_metadata, user="u")
    assert response.status_code == HTTP_STATUS.get(grpc.StatusCode[kind.name], 500)
    body = json.loads(bytes(response.body))
    assert body["message"] == "no such job"
    assert body["data"]["reason"] == "JOB_NOT_FOUND"
