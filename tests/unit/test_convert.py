"""The converters every servicer shares: timestamps and job ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hpcgate.server.errors import ServiceError
from hpcgate.server.servicers.convert import job_id, job_ids, timestamp


def test_timestamp_of_epoch_seconds_keeps_the_nanoseconds() -> None:
    stamp = timestamp(1_700_000_000.25)
    assert (stamp.seconds, stamp.nanos) == (1_700_000_000, 250_000_000)
    assert timestamp(1_700_000_000).ToSeconds() == 1_700_000_000


def test_timestamp_of_a_datetime() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    assert timestamp(when).ToDatetime(tzinfo=UTC) == when


def test_job_ids_refuse_zero_naming_the_field() -> None:
    assert job_id(42) == 42
    with pytest.raises(ServiceError) as error:
        job_id(0)
    assert set(error.value.fields) == {"jobId"}
    assert job_ids([3, 4, 3]) == frozenset({3, 4})
    assert job_ids([]) == frozenset()
    with pytest.raises(ServiceError) as error:
        job_ids([5, 0])
    assert set(error.value.fields) == {"jobIds"}
