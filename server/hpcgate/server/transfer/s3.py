"""boto3 clients for a system's S3 store, and the few S3 facts transfers rely on.

One builder makes every client of the staging area, so addressing style,
region, credentials and timeouts are decided in one place. boto3 is
imported on first use: it takes ~0.3 s, which a server whose systems have no
S3 should not pay at start-up. The health probe builds no client
(:class:`BucketLister`).

boto3 calls block: callers run them with :meth:`S3Clients.call`, in threads
of the store's own. A client is thread-safe once built, so one client per
system and purpose serves every thread. Presigning is local computation (an
HMAC), no I/O.

Why threads of its own: a hung store holds every thread that calls it for
botocore's read timeout and retries. In asyncio's default executor those
threads are the ones that also resolve host names for new SSH connections and
read key files, so a hung S3 once stalled calls that never touch S3.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from hpcgate.server.config import (
    MAX_PART_SIZE,
    S3_MAX_OBJECT_SIZE,
    S3_MAX_PARTS,
    S3Config,
)
from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument, redact_addresses

MIB = 1024 * 1024
# S3's rules for bucket names: 3 to 63 of [a-z0-9.-], starting and ending
# with a letter or digit (we never use dots: they break TLS virtual hosting).
_BUCKET_CHARS = re.compile(r"[^a-z0-9-]")
BUCKET_MAX = 63
# Threads per store for blocking boto3 calls: botocore's default connection
# pool size, so no call waits for a pooled connection inside its thread.
S3_THREADS = 10

P = ParamSpec("P")
T = TypeVar("T")


# The staging clients' botocore timeouts (seconds) and attempts per call.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
ATTEMPTS = 3


def build_client(config: S3Config, endpoint: str) -> Any:
    """A boto3 S3 client for ``endpoint`` with ``config``'s credentials and addressing."""
    import boto3  # deferred: boto3 takes ~0.3 s to import
    from botocore.config import Config

    # A session per client: boto3's default session is not thread-safe.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=config.region,
        aws_access_key_id=config.access_key.reveal(),
        aws_secret_access_key=config.secret_key.reveal(),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if config.path_style else "auto"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        ),
    )


class S3ProbeError(Exception):
    """The store answered the probe, but not with its list of buckets."""


_ERROR_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


class BucketLister:
    """S3's ListBuckets at ``endpoint``, signed with ``config``'s keys: the health probe's call.

    The request FirecREST's S3 check makes, signed and sent by botocore's own
    SigV4 signer and HTTP session (the TLS and proxy settings of boto3's
    clients) but without a client: building a boto3 S3 client loads the S3
    service model, which an idle server then held only for its probe
    (25 MiB of the server's idle 105 MiB, against 9 MiB this way). Short
    timeouts and no retries: a probe must report a slow store, not hide it.
    """

    def __init__(self, config: S3Config, endpoint: str, timeout: float = 5) -> None:
        from botocore.credentials import Credentials
        from botocore.httpsession import URLLib3Session

        self._url = endpoint.rstrip("/") + "/"
        self._region = config.region
        self._credentials = Credentials(config.access_key.reveal(), config.secret_key.reveal())
        self._session = URLLib3Session(timeout=timeout)

    def list_buckets(self) -> None:
        """Ask for the buckets (blocking); raises S3ProbeError, or botocore's connection errors."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="GET", url=self._url)
        S3SigV4Auth(self._credentials, "s3", self._region).add_auth(request)
        response = self._session.send(request.prepare())
        if response.status_code != 200:
            code = _ERROR_CODE.search(response.content or b"")
            said = code.group(1).decode() if code else "no S3 error code"
            raise S3ProbeError(f"ListBuckets answered HTTP {response.status_code} ({said})")


class S3Clients:
    """A system's clients, built on first use (from any thread).

    ``private`` talks to ``endpoint``: the server's own calls, and the URLs
    that jobs on the cluster use. ``public`` only presigns the URLs clients
    get, naming ``public_endpoint``; it is ``private`` when none is set.
    """

    def __init__(self, config: S3Config, name: str = "s3") -> None:
        self.config = config
        self._lock = threading.Lock()
        self._private: Any = None
        self._public: Any = None
        self._threads = ThreadPoolExecutor(S3_THREADS, thread_name_prefix=name)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in one of this store's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the threads; calls still waiting for a thread are dropped."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def private(self) -> Any:
        with self._lock:
            if self._private is None:
                self._private = build_client(self.config, self.config.endpoint)
            return self._private

    @property
    def public(self) -> Any:
        if self.config.public_endpoint in (None, self.config.endpoint):
            return self.private
        with self._lock:
            if self._public is None:
                self._public = build_client(self.config, self.config.client_endpoint)
            return self._public


def bucket_name(prefix: str, user: str) -> str:
    """User ``user``'s bucket: ``<prefix>-<user>`` (``<user>`` without a prefix).

    A name S3 would refuse (upper case, ``_``, too short or too long) is
    made valid and gets a hash of the real name appended, so two users never
    share a bucket.
    """
    wanted = f"{prefix}-{user}" if prefix else user
    cleaned = _BUCKET_CHARS.sub("-", wanted.lower()).strip("-")
    if cleaned == wanted and 3 <= len(cleaned) <= BUCKET_MAX:
        return cleaned
    digest = hashlib.sha256(user.encode()).hexdigest()[:10]
    return f"{cleaned[: BUCKET_MAX - 11].rstrip('-')}-{digest}".lstrip("-")


def plan_parts(size: int, part_size: int, field: str, max_parts: int = S3_MAX_PARTS) -> int:
    """The part size for a ``size``-byte object, from the configured ``part_size``.

    S3 takes at most 10,000 parts (``max_parts``; fewer for downloads, whose
    part URLs travel in the job script): a file that would need more gets
    larger parts, rounded up to whole MiB. INVALID_ARGUMENT naming ``field``
    for a negative size or one beyond S3's 5 TiB per object.
    """
    if size < 0:
        raise invalid_argument(field, f"must not be negative, got {size}", "INVALID_FILE_SIZE")
    if size > S3_MAX_OBJECT_SIZE:
        raise invalid_argument(
            field,
            f"{size} bytes is more than S3 takes in one object ({S3_MAX_OBJECT_SIZE} bytes)",
            "FILE_TOO_LARGE",
        )
    if math.ceil(size / part_size) > max_parts:
        part_size = math.ceil(math.ceil(size / max_parts) / MIB) * MIB
    if part_size > MAX_PART_SIZE:  # not reachable within 5 TiB; kept as the rule
        raise invalid_argument(
            field, f"{size} bytes would need parts beyond {MAX_PART_SIZE} bytes", "FILE_TOO_LARGE"
        )
    return part_size


def part_count(size: int, part_size: int) -> int:
    """Parts of a ``size``-byte object: an empty file is one empty part."""
    return max(1, math.ceil(size / part_size))


def error_code(error: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (``NoSuchUpload``, ``404`` ...)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def unavailable(error: BaseException, system: str | None = None) -> ServiceError:
    """The ServiceError for an S3 call that failed: the store is unusable for now.

    botocore names the endpoint URL in its messages; the body names only the failure.
    """
    where = {"system": system} if system else {}
    return ServiceError(
        ErrorKind.UNAVAILABLE,
        f"S3 is not answering: {redact_addresses(str(error)) or type(error).__name__}",
        "S3_UNAVAILABLE",
        metadata={**where, "service": "s3"},
    )
