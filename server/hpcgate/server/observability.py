"""Metrics and access logs for every RPC, and JSON log formatting.

The interceptor counts RPCs by method and code, times them into a histogram,
and writes one JSON log line per RPC with a request id (the caller's
``x-request-id``, else a fresh one), the user, the method, the code and the
latency. Prometheus serves the metrics on a separate port.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from hpcgate.server.errors import ServiceError
from hpcgate.server.interceptors import Around, Context, Streaming, Unary, WrappingInterceptor

access_log = logging.getLogger("hpcgate.access")

RPCS = Counter("hpcgate_rpc_total", "RPCs handled, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "hpcgate_rpc_seconds",
    "RPC latency in seconds, by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass
class RequestInfo:
    """What the logs say about the current RPC; auth fills in the user."""

    request_id: str
    method: str
    user: str | None = None


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "hpcgate_request", default=None
)


def current_request() -> RequestInfo | None:
    """The RPC being served in this task, if any."""
    return _current.get()


def _code(error: BaseException | None, context: Context) -> grpc.StatusCode:
    if error is None:
        code = context.code() if hasattr(context, "code") else None
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
    if isinstance(error, ServiceError):
        return error.code
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _request_id(context: Context) -> str:
    """The caller's ``x-request-id`` (the edge sends one), else a fresh id."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return uuid.uuid4().hex


class _Observe(Around):
    def __init__(self, method: str) -> None:
        self.method = method

    def _done(
        self, info: RequestInfo, started: float, error: BaseException | None, context: Context
    ) -> None:
        elapsed = time.perf_counter() - started
        code = _code(error, context)
        RPCS.labels(self.method, code.name).inc()
        LATENCY.labels(self.method).observe(elapsed)
        access_log.info(
            "rpc",
            extra={
                "request_id": info.request_id,
                "user": info.user,
                "method": self.method,
                "code": code.name,
                "latency_ms": round(elapsed * 1000, 3),
            },
        )

    async def unary(self, call: Unary, request: Any, context: Context) -> Any:
        info = RequestInfo(_request_id(context), self.method)
        token = _current.set(info)
        started, error = time.perf_counter(), None
        try:
            return await call(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._done(info, started, error, context)
            _current.reset(token)

    async def streaming(
        self, call: Streaming, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        info = RequestInfo(_request_id(context), self.method)
        token = _current.set(info)
        started, error = time.perf_counter(), None
        try:
            async for reply in call(request, context):
                yield reply
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._done(info, started, error, context)
            _current.reset(token)


class ObservabilityInterceptor(WrappingInterceptor):
    """Metrics and one access-log line per RPC."""

    def around(self, method: str) -> Around:
        return _Observe(method)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON logs on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # asyncssh logs every channel open and close at INFO: a line per command
    # would drown the access log and cost more CPU than the command itself.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
