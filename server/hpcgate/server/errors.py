"""The domain's errors: a kind, a message, a reason, and the fields at fault.

Domain code raises :class:`ServiceError` and never sees gRPC: its
:class:`ErrorKind` says what went wrong in the terms callers act on (not
found, invalid argument, unavailable ...). The boundary
(:mod:`hpcgate.server.rpc.errors`) maps each kind to a gRPC status code in
one table and renders the reason (``TOKEN_EXPIRED``, ``PATH_OUTSIDE_FILESYSTEMS``
...), fields and metadata as ``google.rpc`` details, which the edge renders
into FirecREST's error body.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

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


class ErrorKind(enum.Enum):
    """What kind of failure a :class:`ServiceError` is, for the caller to act on.

    Named after the gRPC codes they become (``rpc.errors.GRPC_CODES``), so that
    a reader knows the status at a glance; only the kinds the server raises.
    """

    ABORTED = enum.auto()
    ALREADY_EXISTS = enum.auto()
    DATA_LOSS = enum.auto()
    DEADLINE_EXCEEDED = enum.auto()
    FAILED_PRECONDITION = enum.auto()
    INTERNAL = enum.auto()
    INVALID_ARGUMENT = enum.auto()
    NOT_FOUND = enum.auto()
    OUT_OF_RANGE = enum.auto()
    PERMISSION_DENIED = enum.auto()
    RESOURCE_EXHAUSTED = enum.auto()
    UNAUTHENTICATED = enum.auto()
    UNAVAILABLE = enum.auto()
    UNIMPLEMENTED = enum.auto()


class ServiceError(Exception):
    """An error meant for the caller, raised by domain code.

    ``code`` is an :class:`ErrorKind`, not a gRPC code: the boundary turns
    the error into a status with details (``rpc.errors.to_status``).
    """

    def __init__(
        self,
        code: ErrorKind,
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
        ErrorKind.INVALID_ARGUMENT, f"{field}: {message}", reason, fields={field: message}
    )


def invalid_in_words(field: str, words: str) -> ServiceError:
    """A ServiceError for one bad field, in words that name it themselves.

    For FirecREST's own texts (clients match on them), which must not get
    the ``field: `` prefix of :func:`invalid_argument`.
    """
    return ServiceError(
        ErrorKind.INVALID_ARGUMENT, words, "INVALID_ARGUMENT", fields={field: words}
    )
