"""Rich gRPC errors: a status code, a message, and ``google.rpc`` details.

Every error the server returns carries an ``ErrorInfo`` with a machine-readable
reason (``TOKEN_EXPIRED``, ``PATH_OUTSIDE_FILESYSTEMS`` ...), and a
``BadRequest`` naming the fields when the request itself is at fault. The
edge renders both into FirecREST's error body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "hpcgate.dev"

# Addresses of the processes behind the server, as backends print them in
# their errors: URLs, "host:port" (Slurm's "host:localhost:6819" too) and
# bare IPv4 addresses. A host must hold a letter, so "12:30" stays.
_ADDRESS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+"
    r"|(?:\bhost:)?"
    r"(?:\[[0-9a-f:.]+\]|\b(?:\d{1,3}\.){3}\d{1,3}|\b[a-z0-9.-]*[a-z][a-z0-9.-]*)"
    r":\d{1,5}\b(?!\.)"
    r"|\b(?:\d{1,3}\.){3}\d{1,3}\b",
    re.IGNORECASE,
)


class ServiceError(Exception):
    """An error meant for the caller, raised by domain code.

    Domain code never sees gRPC; the servicer layer turns these into a
    status with details (see :func:`to_status`).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        *,
        fields: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = dict(fields or {})
        self.metadata = dict(metadata or {})


def redact_addresses(text: str) -> str:
    """``text`` with every network address replaced by ``<address>``.

    Error bodies name what failed, never where the server's backends live
    (an S3 endpoint, slurmdbd's port, a gRPC peer).
    """
    return _ADDRESS.sub("<address>", text)


def invalid_argument(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> ServiceError:
    """A ServiceError for one bad request field; the message names the field."""
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}", reason, fields={field: message}
    )


def invalid_in_words(field: str, words: str) -> ServiceError:
    """A ServiceError for one bad field, in words that name it themselves.

    For FirecREST's own texts (clients match on them), which must not get
    the ``field: `` prefix of :func:`invalid_argument`.
    """
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT, words, "INVALID_ARGUMENT", fields={field: words}
    )


def to_status(error: ServiceError) -> grpc.Status:
    """The grpc.Status (code, message, details) for ``error``."""
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
    code: int = error.code.value[0]
    status = status_pb2.Status(code=code, message=error.message, details=details)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    """End the RPC with ``error``'s status and details."""
    # grpc-stubs lacks aio's abort_with_status; it exists since grpcio 1.38.
    await cast(Any, context).abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returned")  # pragma: no cover
