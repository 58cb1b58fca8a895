"""The errors the SSH layer raises for transport failures, shared by its modules."""

from __future__ import annotations

import os

from hpcgate.server.errors import ErrorKind, ServiceError, redact_addresses


def unavailable(message: str, reason: str) -> ServiceError:
    """UNAVAILABLE with ``reason``: the cluster, not the request, is at fault."""
    return ServiceError(ErrorKind.UNAVAILABLE, message, reason)


def describe(error: Exception) -> str:
    """What went wrong, without the address asyncio's socket errors repeat."""
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return redact_addresses(str(error)) or type(error).__name__
