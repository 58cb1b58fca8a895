"""What the staging area records and hands out: manifests, plans, object views.

Plain values, shared by :mod:`.staging` (which writes and reads them in S3)
and :mod:`.service` and :mod:`.progress` (which plan and tell transfers
with them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from hpcgate.server.transfer.s3 import part_count

Operation = Literal["upload", "download"]


class ObjectState(enum.Enum):
    """Where a staged object stands (``hpcgate.v1.TransferObjectState`` without prefix)."""

    UNSPECIFIED = "UNSPECIFIED"  # no record of it (expired, or never written)
    UPLOADING = "UPLOADING"  # the multipart upload is open
    COMPLETE = "COMPLETE"  # the object exists
    ABSENT = "ABSENT"  # neither: aborted, expired or deleted


@dataclass(frozen=True)
class Manifest:
    """The server's record of one staged transfer."""

    operation: Operation
    system: str
    bucket: str
    key: str
    upload_id: str
    # Target path (upload) or source path (download) on the system.
    path: str
    size: int
    part_size: int
    # Epoch seconds: when the transfer was requested, and after which an
    # unfinished multipart upload is dead (its URLs expired or its job gave up).
    created: float
    deadline: float

    @property
    def parts(self) -> int:
        return part_count(self.size, self.part_size)

    @property
    def transfer_id(self) -> str:
        return self.key.split("/", 1)[0]


@dataclass(frozen=True)
class Lost:
    """A transfer whose staging records S3 no longer has: it can never finish."""

    reason: str


@dataclass(frozen=True)
class ObjectView:
    """A staged object as S3 reports it now."""

    state: ObjectState
    parts_uploaded: int = 0
    bytes_uploaded: int = 0
    etag: str | None = None


@dataclass(frozen=True)
class UploadPlan:
    """An opened upload: the client's URLs (public) and the ingress job's (private)."""

    manifest: Manifest
    part_urls: tuple[str, ...]
    complete_url: str
    head_url: str
    get_url: str
    abort_url: str
    # The job's check that the multipart upload still exists while it waits.
    parts_url: str


@dataclass(frozen=True)
class DownloadPlan:
    """An opened download: the egress job's URLs (private) and the client's GET (public)."""

    manifest: Manifest
    part_urls: tuple[str, ...]
    complete_url: str
    abort_url: str
    delete_url: str
    download_url: str
