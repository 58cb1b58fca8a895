"""gRPC status to HTTP status, and FirecREST's error body.

One table decides the HTTP status of every gRPC code. FirecREST answers
``{"errorType": "error", "message": ...}``; hpcgate adds the rich details of
the ``google.rpc.Status`` (ErrorInfo reason, BadRequest field violations)
under ``data``.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import JSONResponse

# Where FirecREST differs from google's canonical mapping it wins: an existing
# target is 400, a remote timeout 408, an oversized file 413.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


def _details(metadata: Any) -> dict[str, Any]:
    """ErrorInfo and BadRequest details from trailing metadata, as JSON."""
    data: dict[str, Any] = {}
    for key, value in metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                data["reason"] = info.reason
                if info.metadata:
                    data["metadata"] = dict(info.metadata)
            elif detail.Unpack(bad):
                data["fieldViolations"] = [
                    {"field": v.field, "description": v.description} for v in bad.field_violations
                ]
    return data


def error_body(
    message: str, data: dict[str, Any] | None = None, user: str | None = None
) -> dict[str, Any]:
    """FirecREST's ApiResponseError, with all its keys: FirecREST writes the unknown ones as null.

    ``user`` is the authenticated caller, as in ``F7T-AuthUsername`` (null before
    authentication). hpcgate has no cause chain to send (``causedBy``).
    """
    return {
        "errorType": "error",
        "message": message,
        "causedBy": None,
        "data": data or None,
        "user": user,
    }


def status_response(code: grpc.StatusCode, details: str | None, trailers: Any) -> JSONResponse:
    """The HTTP reply for an RPC that ended with ``code``."""
    body = error_body(details or code.name, _details(trailers))
    return JSONResponse(body, HTTP_STATUS.get(code, 500))


def rpc_error_response(error: grpc.aio.AioRpcError) -> JSONResponse:
    """The HTTP reply for a failed RPC."""
    return status_response(error.code(), error.details(), error.trailing_metadata())


def bad_request_response(message: str, field: str | None, status: int = 400) -> JSONResponse:
    """The HTTP reply for a request the edge refuses before any RPC (400, or 413)."""
    reason = "INVALID_ARGUMENT" if status == 400 else "PAYLOAD_TOO_LARGE"
    data: dict[str, Any] = {"reason": reason}
    if field:
        data["fieldViolations"] = [{"field": field, "description": message}]
    return JSONResponse(error_body(message, data), status)
