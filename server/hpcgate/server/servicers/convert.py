"""Conversions between domain values and message fields that every servicer shares."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from google.protobuf import timestamp_pb2

from hpcgate.server.errors import invalid_argument


def timestamp(when: float | datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp of epoch seconds (to the nanosecond) or of a datetime."""
    stamp = timestamp_pb2.Timestamp()
    if isinstance(when, datetime):
        stamp.FromDatetime(when)
    else:
        # Whole seconds apart: ``when * 1e9`` would round to 256 ns at today's epochs.
        seconds = math.floor(when)
        stamp.FromNanoseconds(seconds * 1_000_000_000 + round((when - seconds) * 1e9))
    return stamp


def job_id(value: int, field: str = "jobId") -> int:
    """A job id from a request; 0 is what an absent one parses to (INVALID_ARGUMENT)."""
    if value == 0:
        raise invalid_argument(field, "must be a job id (a positive number)")
    return value


def job_ids(values: Iterable[int], field: str = "jobIds") -> frozenset[int]:
    """The job ids of a request's list (none: every job), each a job id."""
    ids = frozenset(values)
    if 0 in ids:
        raise invalid_argument(field, "must be job ids (positive numbers)")
    return ids
