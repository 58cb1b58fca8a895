"""gRPC status to HTTP status, and FirecREST's error body.

One table decides the HTTP status of every gRPC code. FirecREST answers
``{"errorType": "error", "message": ...}``; hpcgate adds the rich details of
the ``google.rpc.Status`` (ErrorInfo reason, BadRequest field violations)
under ``data``.

A status without those details did not come from hpcgate's server (which
details every error it raises) but from the gRPC library itself: the server
unreachable, a message over a size limit, a deadline. Its text names
transport internals (``ipv4:127.0.0.1:...: Connection refused``, "Received
message larger than max"), so the edge answers such a status from its own
table by code (:data:`TRANSPORT_ERRORS`) instead of passing the text on,
and counts it (``hpcgate_edge_upstream_errors_total``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import JSONResponse

from hpcgate.edge.metrics import upstream_error

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


@dataclass(frozen=True)
class TransportError:
    """What the edge says for a status the gRPC library made: HTTP status, reason, message."""

    http_status: int
    reason: str
    message: str


# By code, for statuses that carry no server details (the cause: gRPC itself).
TRANSPORT_ERRORS: dict[grpc.StatusCode, TransportError] = {
    grpc.StatusCode.UNAVAILABLE: TransportError(
        503, "SERVER_UNAVAILABLE", "the hpcgate server is not reachable"
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: TransportError(
        413, "PAYLOAD_TOO_LARGE", "the request or its reply is larger than the service carries"
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: TransportError(
        408, "DEADLINE_EXCEEDED", "the call did not finish in time"
    ),
    grpc.StatusCode.CANCELLED: TransportError(499, "CANCELLED", "the call was cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: TransportError(
        501, "NOT_IMPLEMENTED", "the hpcgate server does not implement this call"
    ),
    grpc.StatusCode.UNAUTHENTICATED: TransportError(
        401, "TOKEN_REFUSED", "the bearer token was refused"
    ),
}
# Any other code without details (INTERNAL, UNKNOWN, DATA_LOSS from the library).
_TRANSPORT_DEFAULT = TransportError(502, "SERVER_ERROR", "the hpcgate server failed to answer")


def _details(metadata: Any) -> dict[str, Any] | None:
    """ErrorInfo and BadRequest details from trailing metadata, as JSON; None without any."""
    data: dict[str, Any] | None = None
    for key, value in metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        data = {}
        try:
            status = status_pb2.Status.FromString(value)
        except message.DecodeError:
            return None  # not the server's: treat as the library's status
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
    message: str,
    data: dict[str, Any] | None = None,
    user: str | None = None,
    error_type: str = "error",
) -> dict[str, Any]:
    """FirecREST's ApiResponseError, with all its keys: FirecREST writes the unknown ones as null.

    ``user`` is the authenticated caller, as in ``F7T-AuthUsername`` (null before
    authentication). ``error_type`` is ``"validation"`` for a request that does
    not parse into the operation's input, as FirecREST's (FastAPI's) request
    validation says, else ``"error"``. hpcgate has no cause chain to send (``causedBy``).
    """
    return {
        "errorType": error_type,
        "message": message,
        "causedBy": None,
        "data": data or None,
        "user": user,
    }


def _respell(message: str, data: dict[str, Any], spelled: Mapping[str, str]) -> str:
    """Field violations (and the message's leading field) named as the client spelled them.

    The server names a field by its JSON name (``sourcePath``); a client that
    sent the proto name (``path``, which the edge accepts as well) must read
    the name it sent.
    """
    for violation in data.get("fieldViolations", ()):
        name = spelled.get(violation["field"])
        if name is not None:
            if message.startswith(violation["field"] + ":"):
                message = name + message[len(violation["field"]) :]
            violation["field"] = name
    return message


def status_response(
    code: grpc.StatusCode,
    details: str | None,
    trailers: Any,
    spelled: Mapping[str, str] | None = None,
    user: str | None = None,
) -> JSONResponse:
    """The HTTP reply for an RPC that ended with ``code``.

    The server's own statuses keep their message and details; the gRPC
    library's get the edge's words for their code (see the module doc).
    ``spelled`` maps JSON names to the other spelling a client used;
    ``user`` is the authenticated caller, if known.
    """
    data = _details(trailers)
    if data is None:
        upstream_error(code.name)
        known = TRANSPORT_ERRORS.get(code, _TRANSPORT_DEFAULT)
        body = error_body(known.message, {"reason": known.reason}, user)
        return JSONResponse(body, known.http_status)
    message = details or code.name
    if spelled:
        message = _respell(message, data, spelled)
    return JSONResponse(error_body(message, data, user), HTTP_STATUS.get(code, 500))


def stream_error_body(
    code: grpc.StatusCode, details: str | None, trailers: Any, user: str | None = None
) -> dict[str, Any]:
    """The error item that ends a stream which failed after it began, by the same rules."""
    data = _details(trailers)
    if data is None:
        upstream_error(code.name)
        known = TRANSPORT_ERRORS.get(code, _TRANSPORT_DEFAULT)
        return {**error_body(known.message, {"reason": known.reason}, user), "code": code.name}
    return {**error_body(details or code.name, data, user), "code": code.name}


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def rich_status_response(
    status: status_pb2.Status,
    spelled: Mapping[str, str] | None = None,
    user: str | None = None,
) -> JSONResponse:
    """The HTTP reply for a google.rpc.Status that a call brought as one request's outcome."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    trailers = [(_DETAILS_KEY, status.SerializeToString())]
    return status_response(code, status.message, trailers, spelled, user)


def rpc_error_response(
    error: grpc.aio.AioRpcError,
    spelled: Mapping[str, str] | None = None,
    user: str | None = None,
) -> JSONResponse:
    """The HTTP reply for a failed RPC."""
    return status_response(error.code(), error.details(), error.trailing_metadata(), spelled, user)


# Reasons of the refusals the edge makes itself, by HTTP status.
_EDGE_REASONS = {400: "INVALID_ARGUMENT", 408: "REQUEST_TIMEOUT", 413: "PAYLOAD_TOO_LARGE"}


def bad_request_response(
    message: str,
    field: str | None,
    status: int = 400,
    reason: str | None = None,
    *,
    close: bool = False,
    user: str | None = None,
    error_type: str = "error",
) -> JSONResponse:
    """The HTTP reply for a request the edge refuses before any RPC (400, 401, 408, 413, 431).

    ``close``: also close the connection, for a refusal before the body was
    read in full (else the server would go on to read, and drop, all of it).
    ``user`` and ``error_type`` as in :func:`error_body`.
    """
    data: dict[str, Any] = {"reason": reason or _EDGE_REASONS.get(status, "INVALID_ARGUMENT")}
    if field:
        data["fieldViolations"] = [{"field": field, "description": message}]
    headers = {"connection": "close"} if close else None
    return JSONResponse(error_body(message, data, user, error_type), status, headers=headers)
