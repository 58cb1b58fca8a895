"""A system's S3 staging area: one bucket per user, multipart uploads, presigned URLs.

Every large transfer passes through an object ``<uuid4>/<basename>`` in the
caller's bucket (created on first use, with a lifecycle rule that expires
objects after ``lifecycle_days`` and aborts forgotten multipart uploads).
The server opens the multipart upload and presigns every URL up front; the
bytes then move between the client, the bucket and the cluster without
passing through the server.

Next to the objects the server keeps a small record per transfer, in the
same bucket (so it expires with it, and only its owner's calls ever read it):

* ``.hpcgate/objects/<uuid>.json``, the :class:`~.records.Manifest`: what was staged,
  where to, and until when an unfinished multipart upload may live;
* ``.hpcgate/jobs/<system>/<job id>/<uuid>``, an empty object mapping the
  transfer job to its manifest (written once sbatch named the job).

Unfinished multipart uploads are aborted three ways: by the job when it
gives up, by :meth:`Staging.sweep` (periodically, for uploads past their
manifest's deadline) and by :meth:`Staging.settle` when someone asks about a
transfer whose job has ended; the lifecycle rule is the last resort.

Every boto3 call runs in a worker thread; presigning is done there too when
it comes in batches (thousands of parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import posixpath
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ParamSpec, TypeVar

from hpcgate.server.config import S3Config
from hpcgate.server.coordination import Coordinator, MemoryCoordinator
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.transfer.records import (
    DownloadPlan,
    Lost,
    Manifest,
    ObjectState,
    ObjectView,
    Operation,
    UploadPlan,
)
from hpcgate.server.transfer.s3 import (
    S3Clients,
    bucket_name,
    error_code,
    unavailable,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# Where the server's records live inside a user's bucket.
RECORDS = ".hpcgate"
# Object keys of staged files: "<uuid4>/<basename>".
_STAGED_KEY = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12})/")
# Seconds past a deadline before the sweep aborts (the job's own abort goes first).
SWEEP_GRACE = 60.0
# Pauses (seconds) between the looks that confirm a staged object is gone.
ABSENT_CONFIRMATION = (0.5, 1.0, 2.0)
# Errors that mean "there is no such thing (any more)".
_GONE = {"NoSuchUpload", "NoSuchKey", "NoSuchBucket", "404"}


def _job_index(system: str, job_id: int) -> str:
    return f"{RECORDS}/jobs/{system.lower()}/{job_id}/"


def _manifest_key(transfer_id: str) -> str:
    return f"{RECORDS}/objects/{transfer_id}.json"


def staged_key(path: str) -> str:
    """A fresh object key for the file at ``path``: ``<uuid4>/<basename>``."""
    return f"{uuid.uuid4()}/{posixpath.basename(path) or 'file'}"


def s3_unavailable(error: ServiceError) -> bool:
    """Whether ``error`` says S3 is down (a failed call, or the health checker's finding)."""
    return error.code == ErrorKind.UNAVAILABLE and error.metadata.get("service") == "s3"


class Staging:
    """The staging area of one system (its S3 store), shared by every caller."""

    def __init__(
        self,
        system: str,
        config: S3Config,
        clock: Callable[[], float] = time.time,
        *,
        gate: Callable[[], None] | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        """``gate`` raises UNAVAILABLE while the health checker finds S3 down.

        Without it, a call to a hung store waits out botocore's timeouts and
        retries (minutes) before it fails. ``coordinator``: in a fleet, one
        replica at a time sweeps (the holder of the system's sweep lease).
        """
        self._coordinator: Coordinator = coordinator or MemoryCoordinator()
        self.system = system
        self.config = config
        self.clients = S3Clients(config, name=f"s3-{system}")
        self._clock = clock
        self._gate = gate
        self._ready: set[str] = set()  # buckets known to exist with our lifecycle rule
        self._sweeper: asyncio.Task[None] | None = None

    # -- running S3 calls --------------------------------------------------------------

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in a worker thread; S3 failures become UNAVAILABLE (ServiceErrors pass)."""
        if self._gate is not None:
            self._gate()
        try:
            return await self.clients.call(fn, *args, **kwargs)
        except ServiceError:
            raise
        except Exception as error:
            if type(error).__module__.startswith(("botocore", "boto3", "urllib3")):
                raise unavailable(error, self.system) from error
            raise

    def bucket(self, user: str) -> str:
        """``user``'s bucket."""
        return bucket_name(self.config.bucket_prefix, user)

    def _ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if needed and (once per process) set its lifecycle rule."""
        if bucket in self._ready:
            return
        client = self.clients.private
        create: dict[str, Any] = {"Bucket": bucket}
        if self.config.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        try:
            client.create_bucket(**create)
        except Exception as error:
            if error_code(error) == "BucketAlreadyExists":
                raise ServiceError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"S3 bucket {bucket} belongs to someone else: choose another s3.bucket_prefix",
                    "BUCKET_TAKEN",
                ) from error
            if error_code(error) != "BucketAlreadyOwnedByYou":
                raise
        rule = {
            "ID": "hpcgate-staging",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": self.config.lifecycle_days},
            "AbortIncompleteMultipartUpload": {
                "DaysAfterInitiation": math.ceil(self.config.job_url_expiry / 86400) + 1
            },
        }
        try:
            client.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [rule]}
            )
        except Exception as error:
            # A store without lifecycle support still works; the sweep cleans up.
            log.warning("S3 bucket %s: no lifecycle rule set: %s", bucket, error)
        self._ready.add(bucket)

    def _presign(
        self, client: Any, operation: str, expiry: int, method: str | None = None, **params: Any
    ) -> str:
        url: str = client.generate_presigned_url(
            operation, Params=params, ExpiresIn=expiry, HttpMethod=method
        )
        return url

    def _open(
        self, operation: Operation, user: str, path: str, size: int, part_size: int, wait: float
    ) -> Manifest:
        """Create the bucket if needed, open the multipart upload and record it."""
        bucket = self.bucket(user)
        self._ensure_bucket(bucket)
        key = staged_key(path)
        try:
            upload = self.clients.private.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType="application/octet-stream"
            )
        except Exception as error:
            if error_code(error) != "NoSuchBucket":
                raise
            # Deleted behind our back since we made it: make it again, once.
            self._ready.discard(bucket)
            self._ensure_bucket(bucket)
            upload = self.clients.private.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType="application/octet-stream"
            )
        now = self._clock()
        manifest = Manifest(
            operation=operation,
            system=self.system,
            bucket=bucket,
            key=key,
            upload_id=upload["UploadId"],
            path=path,
            size=size,
            part_size=part_size,
            created=now,
            deadline=now + wait,
        )
        self.clients.private.put_object(
            Bucket=bucket,
            Key=_manifest_key(manifest.transfer_id),
            Body=json.dumps(asdict(manifest)).encode(),
            ContentType="application/json",
        )
        return manifest

    # -- opening transfers ---------------------------------------------------------------

    def _open_upload(self, user: str, path: str, size: int, part_size: int) -> UploadPlan:
        config = self.config
        manifest = self._open("upload", user, path, size, part_size, config.ingress_wait)
        where = {"Bucket": manifest.bucket, "Key": manifest.key}
        upload = {**where, "UploadId": manifest.upload_id}
        public, private = self.clients.public, self.clients.private
        client_expiry, job_expiry = config.url_expiry, config.job_url_expiry
        return UploadPlan(
            manifest=manifest,
            part_urls=tuple(
                self._presign(public, "upload_part", client_expiry, PartNumber=n, **upload)
                for n in range(1, manifest.parts + 1)
            ),
            complete_url=self._presign(
                public, "complete_multipart_upload", client_expiry, "POST", **upload
            ),
            head_url=self._presign(private, "head_object", job_expiry, **where),
            get_url=self._presign(private, "get_object", job_expiry, **where),
            abort_url=self._presign(private, "abort_multipart_upload", job_expiry, **upload),
            parts_url=self._presign(private, "list_parts", job_expiry, **upload),
        )

    async def open_upload(self, user: str, path: str, size: int, part_size: int) -> UploadPlan:
        """Open a multipart upload of ``size`` bytes for ``path`` and presign its URLs."""
        return await self._call(self._open_upload, user, path, size, part_size)

    def _open_download(self, user: str, path: str, size: int, part_size: int) -> DownloadPlan:
        config = self.config
        manifest = self._open("download", user, path, size, part_size, config.job_url_expiry)
        where = {"Bucket": manifest.bucket, "Key": manifest.key}
        upload = {**where, "UploadId": manifest.upload_id}
        private, expiry = self.clients.private, config.job_url_expiry
        return DownloadPlan(
            manifest=manifest,
            part_urls=tuple(
                self._presign(private, "upload_part", expiry, PartNumber=n, **upload)
                for n in range(1, manifest.parts + 1)
            ),
            complete_url=self._presign(
                private, "complete_multipart_upload", expiry, "POST", **upload
            ),
            abort_url=self._presign(private, "abort_multipart_upload", expiry, **upload),
            delete_url=self._presign(private, "delete_object", expiry, **where),
            download_url=self._download_url(manifest),
        )

    async def open_download(self, user: str, path: str, size: int, part_size: int) -> DownloadPlan:
        """Open a multipart upload the egress job fills from ``path``, and presign its URLs."""
        return await self._call(self._open_download, user, path, size, part_size)

    def _download_url(self, manifest: Manifest) -> str:
        return self._presign(
            self.clients.public,
            "get_object",
            self.config.url_expiry,
            Bucket=manifest.bucket,
            Key=manifest.key,
        )

    async def download_url(self, manifest: Manifest) -> str:
        """A fresh presigned GET of a staged object, for the client (public endpoint)."""
        return await self._call(self._download_url, manifest)

    # -- records -------------------------------------------------------------------------

    def _link(self, manifest: Manifest, job_id: int) -> None:
        self.clients.private.put_object(
            Bucket=manifest.bucket,
            Key=_job_index(self.system, job_id) + manifest.transfer_id,
            Body=b"",
        )

    async def link(self, manifest: Manifest, job_id: int) -> None:
        """Record that job ``job_id`` carries out the transfer of ``manifest``."""
        await self._call(self._link, manifest, job_id)

    def _load(self, bucket: str, transfer_id: str) -> Manifest | None:
        try:
            body = self.clients.private.get_object(Bucket=bucket, Key=_manifest_key(transfer_id))
        except Exception as error:
            if error_code(error) in _GONE:
                return None
            raise
        return Manifest(**json.loads(body["Body"].read()))

    def _find(self, user: str, job_id: int) -> Manifest | Lost | None:
        bucket = self.bucket(user)
        try:
            listed = self.clients.private.list_objects_v2(
                Bucket=bucket, Prefix=_job_index(self.system, job_id), MaxKeys=1
            )
        except Exception as error:
            if error_code(error) == "NoSuchBucket":
                self._ready.discard(bucket)
                return Lost(f"the staging bucket {bucket} is gone from S3")
            if error_code(error) in _GONE:
                return None
            raise
        for item in listed.get("Contents", []):
            manifest = self._load(bucket, item["Key"].rsplit("/", 1)[1])
            return manifest or Lost("the transfer's record is gone from the staging bucket")
        return None

    async def find(self, user: str, job_id: int) -> Manifest | Lost | None:
        """The manifest of ``user``'s transfer job ``job_id``.

        :class:`Lost` when S3 no longer holds what the transfer was staged in
        (its bucket, or its record beside the job's link); None when there is
        no link to the job (not a staged transfer, or one S3 never recorded).
        """
        return await self._call(self._find, user, job_id)

    # -- state and cleanup --------------------------------------------------------------------

    def _complete(self, manifest: Manifest) -> ObjectView | None:
        """The object's view if it exists (the upload is complete), else None."""
        try:
            head = self.clients.private.head_object(Bucket=manifest.bucket, Key=manifest.key)
        except Exception as error:
            if error_code(error) not in _GONE:
                raise
            return None
        return ObjectView(
            ObjectState.COMPLETE,
            parts_uploaded=manifest.parts,
            bytes_uploaded=int(head["ContentLength"]),
            etag=str(head["ETag"]).strip('"'),
        )

    def _inspect(self, manifest: Manifest) -> ObjectView:
        complete = self._complete(manifest)
        if complete is not None:
            return complete
        try:
            pages = self.clients.private.get_paginator("list_parts").paginate(
                Bucket=manifest.bucket, Key=manifest.key, UploadId=manifest.upload_id
            )
            parts = [part for page in pages for part in page.get("Parts", [])]
        except Exception as error:
            if error_code(error) not in _GONE:
                raise
            # Completed between the two requests, or really gone: the object tells.
            return self._complete(manifest) or ObjectView(ObjectState.ABSENT)
        return ObjectView(
            ObjectState.UPLOADING,
            parts_uploaded=len(parts),
            bytes_uploaded=sum(int(part["Size"]) for part in parts),
        )

    async def inspect(self, manifest: Manifest) -> ObjectView:
        """The staged object's state: complete, still uploading (how far), or gone."""
        return await self._call(self._inspect, manifest)

    def _abort(self, bucket: str, key: str, upload_id: str) -> bool:
        try:
            self.clients.private.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as error:
            if error_code(error) in _GONE:
                return False
            raise
        return True

    async def abort(self, manifest: Manifest) -> bool:
        """Abort the transfer's multipart upload; False if it was no longer open."""
        return await self._call(self._abort, manifest.bucket, manifest.key, manifest.upload_id)

    async def stays_absent(self, manifest: Manifest) -> bool:
        """Whether the object stays absent over a few seconds.

        A completion in flight shows neither the open upload nor the object
        for a moment; a transfer is taken as lost only when that lasts.
        """
        for pause in ABSENT_CONFIRMATION:
            await asyncio.sleep(pause)
            if (await self.inspect(manifest)).state is not ObjectState.ABSENT:
                return False
        return True

    def expired(self, manifest: Manifest) -> bool:
        """Whether the transfer's time is up (its URLs expired or its job gives up)."""
        return self._clock() >= manifest.deadline

    async def settle(self, manifest: Manifest, view: ObjectView, job_ended: bool) -> ObjectView:
        """Abort an open upload that nothing will finish: its job ended or its time is up."""
        if view.state is ObjectState.UPLOADING and (job_ended or self.expired(manifest)):
            await self.abort(manifest)
            return ObjectView(ObjectState.ABSENT)
        return view

    def _ours(self, bucket: str) -> bool:
        prefix = self.config.bucket_prefix
        return not prefix or bucket.startswith(prefix + "-")

    def _sweep(self) -> int:
        """Abort the open multipart uploads past their deadline, in every user's bucket."""
        client, now, aborted = self.clients.private, self._clock(), 0
        # Nothing can be due before the shortest deadline a transfer gets.
        earliest = min(self.config.ingress_wait, self.config.job_url_expiry)
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            if not self._ours(name):
                continue
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=name)
            for upload in (u for page in pages for u in page.get("Uploads", [])):
                found = _STAGED_KEY.match(upload["Key"])
                initiated = upload["Initiated"].timestamp()
                if found is None or now - initiated < earliest:
                    continue
                manifest = self._load(name, found.group(1))
                deadline = manifest.deadline if manifest else initiated + self.config.job_url_expiry
                if now >= deadline + SWEEP_GRACE:
                    aborted += self._abort(name, upload["Key"], upload["UploadId"])
        return aborted

    async def sweep(self) -> int:
        """Abort every expired multipart upload of this store; returns how many."""
        return await self._call(self._sweep)

    # -- the periodic sweep --------------------------------------------------------------

    def start(self) -> None:
        """Sweep every ``sweep_interval`` seconds until :meth:`close`."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name=f"s3-sweep-{self.system}")

    async def sweep_if_ours(self) -> int | None:
        """Sweep if this replica's turn: None while another replica holds the sweep.

        The lease outlives one interval, so its holder keeps sweeping and the
        others take over only when it stops.
        """
        lease = f"s3-sweep:{self.system.lower()}"
        if await self._coordinator.claim(lease, 2 * self.config.sweep_interval) is None:
            return None
        return await self.sweep()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                aborted = await self.sweep_if_ours()
            except Exception as error:  # the store may be down: try again next time
                log.warning("%s: S3 sweep failed: %s", self.system, error)
            else:
                if aborted:
                    log.info("%s: aborted %d expired multipart uploads", self.system, aborted)

    async def close(self) -> None:
        """Stop the sweep and the store's threads."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.clients.close()
