"""Read a request body within a size limit and in time.

uvicorn bounds neither the size of a body nor how slowly it may come
(its ``timeout_keep_alive`` covers only the idle time between requests), and
Starlette's ``Request.stream()`` yields whatever arrives, however long it
takes. So the edge reads every body through :func:`bounded_stream`: a
declared ``Content-Length`` over the limit is refused before a byte is read,
a body without one is cut once it passes the limit, and a sender that goes
quiet, or trickles slower than a floor rate, is cut off. Both refusals carry
the HTTP status to answer with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.requests import Request


class BodyError(Exception):
    """The body cannot be read: too large (413) or too slow (408)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class BodyLimits:
    """How much of a body the edge reads, and how patiently.

    ``json``: bytes of a JSON body (FirecREST's largest, a job script, is
    far below it); ``upload``: bytes of a multipart upload. ``idle``: the
    longest pause between two pieces; ``min_rate`` (bytes/s): the slowest
    average rate accepted once ``grace`` seconds have passed.
    """

    json: int = 1024 * 1024
    upload: int = 64 * 1024 * 1024
    idle: float = 10.0
    min_rate: float = 16 * 1024
    grace: float = 10.0


def declared_length(request: Request) -> int | None:
    """The body length the request declares, None without a (valid) Content-Length."""
    # getlist, not get: Headers.get raises and catches a KeyError for a
    # missing header, and most requests (every GET) declare no length.
    declared = request.headers.getlist("content-length")
    return int(declared[0]) if declared and declared[0].isdigit() else None


def has_body(request: Request) -> bool:
    """Whether the request comes with a body (declared or chunked)."""
    length = declared_length(request)
    return bool(length) or "transfer-encoding" in request.headers


def check_declared(request: Request, limit: int) -> None:
    """Refuse at once a body whose declared length is over ``limit``."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyError(413, "PAYLOAD_TOO_LARGE", f"request body larger than {limit} bytes")


async def bounded_stream(
    request: Request, limit: int, limits: BodyLimits
) -> AsyncGenerator[bytes, None]:
    """The body of ``request`` piece by piece; BodyError once it breaks ``limit`` or the pace."""
    check_declared(request, limit)
    stream = request.stream()
    started = time.monotonic()
    seen = 0
    while True:
        try:
            async with asyncio.timeout(limits.idle):
                piece = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyError(
                408, "REQUEST_TIMEOUT", f"no request body data for {limits.idle:g} s"
            ) from None
        seen += len(piece)
        if seen > limit:
            raise BodyError(413, "PAYLOAD_TOO_LARGE", f"request body larger than {limit} bytes")
        elapsed = time.monotonic() - started
        if elapsed > limits.grace and seen < limits.min_rate * (elapsed - limits.grace):
            raise BodyError(
                408,
                "REQUEST_TIMEOUT",
                f"request body sent slower than {limits.min_rate:g} bytes/s",
            )
        yield piece


async def read_body(request: Request, limit: int, limits: BodyLimits) -> bytes:
    """The whole body of ``request``, read by :func:`bounded_stream`."""
    pieces = [piece async for piece in bounded_stream(request, limit, limits)]
    return b"".join(pieces)
