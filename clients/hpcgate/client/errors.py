"""One exception hierarchy for every failed call, decoded from the gRPC status.

The server attaches a ``google.rpc.Status`` to its errors (trailer
``grpc-status-details-bin``) with an ``ErrorInfo`` (the machine-readable
``reason``) and, for bad input, a ``BadRequest`` naming each field. Callers
catch ``HpcgateError`` or a subclass per status code and read those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path and what is wrong with it."""

    field: str
    description: str


class HpcgateError(Exception):
    """A call failed: the gRPC ``code``, the server's ``reason`` and field violations."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.violations = violations
        self.metadata = metadata or {}

    def __str__(self) -> str:
        """One line: the reason (or the code) and the message, then the fields."""
        head = self.reason or self.code.name
        fields = "; ".join(
            f"{v.field}: {v.description}"
            for v in self.violations
            if v.description not in self.message
        )
        return f"{head}: {self.message}" + (f" ({fields})" if fields else "")


class InvalidArgument(HpcgateError):
    """The request is malformed; ``violations`` names the fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(HpcgateError):
    """The system, path or job does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(HpcgateError):
    """The target exists and the call would not overwrite it."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(HpcgateError):
    """The caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(HpcgateError):
    """The token is missing, expired or not trusted."""

    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(HpcgateError):
    """The state of the target forbids the call (e.g. a directory where a file is needed)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(HpcgateError):
    """A limit was reached (size, rate, quota)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(HpcgateError):
    """The server or the cluster is unreachable for now; idempotent calls were retried."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HpcgateError):
    """The call's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class IntegrityError(HpcgateError):
    """Received bytes do not match the SHA-256 the server reported."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[HpcgateError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        IntegrityError,
    )
}


def from_rpc_error(error: grpc.RpcError) -> HpcgateError:
    """The ``HpcgateError`` subclass for ``error``'s code, with its decoded details."""
    call: Any = error
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    reason = ""
    violations: list[FieldViolation] = []
    metadata: dict[str, str] = {}
    for key, value in call.trailing_metadata() or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        message = status.message or message
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad):
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    cls = _BY_CODE.get(code, HpcgateError)
    return cls(message, code=code, reason=reason, violations=tuple(violations), metadata=metadata)
