"""The typed Python client of hpcgate: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from hpcgate.client import Client, ClientCredentials

    with Client("gate:50051", ClientCredentials(url, id, secret), system="cluster", tls=True) as c:
        job = c.submit("#!/bin/bash\\necho hi", working_directory="/home/me")
        print(job.wait().status.state)

See the README's "Client" section for the whole surface.
"""

from hpcgate.client.channel import CallPolicy
from hpcgate.client.client import AsyncClient, Client
from hpcgate.client.credentials import ClientCredentials, StaticToken, TokenFile, TokenSource
from hpcgate.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    HpcgateError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from hpcgate.client.files import BulkResult, Progress
from hpcgate.client.jobs import TERMINAL, AsyncJob, Job

__all__ = [
    "TERMINAL",
    "AlreadyExists",
    "AsyncClient",
    "AsyncJob",
    "BulkResult",
    "CallPolicy",
    "Client",
    "ClientCredentials",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "HpcgateError",
    "IntegrityError",
    "InvalidArgument",
    "Job",
    "NotFound",
    "PermissionDenied",
    "Progress",
    "ResourceExhausted",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
]
