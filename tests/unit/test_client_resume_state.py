"""The state file of a resumable staged upload: what it keeps and when it is no longer valid."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hpcgate.client.resume import Identity, UploadState
from hpcgate.v1 import transfer_pb2


def _started(job_id: int = 7) -> transfer_pb2.TransferUploadResponse:
    directives = transfer_pb2.TransferDirectives(
        parts_upload_urls=["http://s3/p1", "http://s3/p2"],
        complete_upload_url="http://s3/done",
        max_part_size=5,
    )
    return transfer_pb2.TransferUploadResponse(
        transfer_job=transfer_pb2.TransferJob(job_id=job_id), transfer_directives=directives
    )


def _identity(local: Path, remote: str = "/home/me/f") -> Identity:
    return Identity.of("gate:1", "cluster", remote, local)


def test_parts_recorded_are_found_by_a_later_upload_of_the_same_file(tmp_path: Path) -> None:
    local, states = tmp_path / "f", tmp_path / "states"
    local.write_bytes(b"0123456789")
    state = UploadState.begin(states, _identity(local), _started())
    state.record(0, '"etag-1"')
    (written,) = states.iterdir()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # presigned URLs inside
    again = UploadState.load(states, _identity(local))
    assert again is not None
    assert (again.job_id, again.etags) == (7, {0: '"etag-1"'})
    assert list(again.directives.parts_upload_urls) == ["http://s3/p1", "http://s3/p2"]
    again.remove()
    assert list(states.iterdir()) == []


def test_a_changed_file_another_target_or_a_broken_state_is_not_resumed(tmp_path: Path) -> None:
    local, states = tmp_path / "f", tmp_path / "states"
    local.write_bytes(b"0123456789")
    UploadState.begin(states, _identity(local), _started())
    assert UploadState.load(states, _identity(local, "/home/me/other")) is None
    os.utime(local, ns=(1, 1))  # same size, another modification time
    assert UploadState.load(states, _identity(local)) is None
    UploadState.begin(states, _identity(local), _started(8))  # a new upload of it
    assert UploadState.load(states, _identity(local)) is not None
    (written,) = states.iterdir()
    written.write_text("{not json")  # torn by hand: no state rather than an error
    assert UploadState.load(states, _identity(local)) is None
