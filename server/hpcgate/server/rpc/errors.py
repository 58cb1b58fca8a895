"""Domain errors as gRPC statuses: the one table from error kind to status code.

Domain code raises :class:`~hpcgate.server.errors.ServiceError` with an
:class:`~hpcgate.server.errors.ErrorKind`; here, at the boundary, the kind
becomes a ``grpc.StatusCode`` and the error a rich status: an ``ErrorInfo``
with the machine-readable reason and metadata, and a ``BadRequest`` naming
the fields when the request itself is at fault. The edge renders both into
FirecREST's error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from hpcgate.server.errors import ErrorKind, ServiceError

DOMAIN = "hpcgate.dev"
# Trailing metadata of a server's own UNAVAILABLE (a backend down): a negative
# pushback tells a gRPC client's retry policy not to try again. Retries on
# UNAVAILABLE are for a replica that went away (the edge's service config,
# hpcgate/edge/upstream.py); a hung scheduler must cost one timeout, not three.
NO_RETRY = ("grpc-retry-pushback-ms", "-1")

# Every kind by name, so that the REST edge's HTTP statuses follow the codes
# it always had; tests/unit/test_rpc_errors.py checks that none is missing.
GRPC_CODES: Mapping[ErrorKind, grpc.StatusCode] = MappingProxyType(
    {
        ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
        ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
        ErrorKind.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
        ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
        ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
        ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
        ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
        ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
        ErrorKind.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
        ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
        ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
        ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
        ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
        ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    }
)


def grpc_code(kind: ErrorKind) -> grpc.StatusCode:
    """The gRPC status code a domain error of ``kind`` is returned with."""
    return GRPC_CODES[kind]


def rich_status(error: ServiceError) -> status_pb2.Status:
    """The google.rpc.Status of ``error``: code, message, ErrorInfo and BadRequest details."""
    details: list[Any] = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    )
    details.append(info)
    if error.fields:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in error.fields.items()
                ]
            )
        )
        details.append(bad)
    code: int = grpc_code(error.code).value[0]
    return status_pb2.Status(code=code, message=error.message, details=details)


def to_status(error: ServiceError) -> grpc.Status:
    """The grpc.Status (code, message, details) for ``error``."""
    status = rpc_status.to_status(rich_status(error))
    if grpc_code(error.code) is grpc.StatusCode.UNAVAILABLE:
        trailing = (*status.trailing_metadata, NO_RETRY)
        status = cast(Any, status)._replace(trailing_metadata=trailing)
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    """End the RPC with ``error``'s status and details."""
    # grpc-stubs lacks aio's abort_with_status; it exists since grpcio 1.38.
    await cast(Any, context).abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returned")  # pragma: no cover
