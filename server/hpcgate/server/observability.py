"""Metrics and access logs for every RPC, and JSON log formatting.

The interceptor counts RPCs by method and code, times them into a histogram,
and writes one JSON log line per RPC with a request id (the caller's
``x-request-id``, else a fresh one), the user, the method, the code and the
latency. Prometheus serves the metrics on a separate port.

The access log is the one log written per RPC, so it bypasses the logging
machinery (see :class:`AccessLog`); its lines have the shape of every other
log line and go to the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from prometheus_client import Counter, Histogram

from hpcgate.server.errors import ServiceError
from hpcgate.server.interceptors import Around, Context

ACCESS_LOGGER = "hpcgate.access"
# Request ids of calls without x-request-id: a per-process random prefix and
# a counter (a uuid4 per call is a system call for randomness nobody needs).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)

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
    return f"{_ID_PREFIX}-{next(_ids)}"


class AccessLog:
    """JSON access-log lines, written to the log stream once per turn of the event loop.

    Why not a ``logging.Logger``: py-spy on a server answering ListSystems put
    a quarter of its Python time in ``Logger.info`` for the access line
    (LogRecord, handler lock, formatter, and a write and flush per line). Here
    a call queues a tuple; the lines of one loop turn are formatted and go
    out in one write. The lines keep the shape of the other log lines (time, level,
    logger, message, fields), and the ``hpcgate.access`` logger's level still
    switches them off.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        """``stream``: where lines go; default the current ``sys.stderr``, as the other logs."""
        self._stream = stream
        self._pending: list[tuple[float, str, dict[str, Any]]] = []
        self._scheduled = False
        self._logger = logging.getLogger(ACCESS_LOGGER)
        # One encoder for all lines: json.dumps(default=...) builds one per call.
        self._encode = json.JSONEncoder(default=str).encode
        self._second = -1
        self._stamp = ""

    def write(self, message: str, **fields: Any) -> None:
        """Queue one line; it is written when the event loop next turns (at once outside one).

        Formatting waits for the write too, so that a call only pays for a tuple.
        """
        if not self._logger.isEnabledFor(logging.INFO):
            return
        self._pending.append((time.time(), message, fields))
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:
            self.flush()

    def _time(self, when: float) -> str:
        """The other log lines' time format, computed once per second."""
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return self._stamp

    def flush(self) -> None:
        """Write the queued lines now."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        encode = self._encode
        lines = [
            encode(
                {
                    "time": self._time(when),
                    "level": "INFO",
                    "logger": ACCESS_LOGGER,
                    "message": message,
                    **fields,
                }
            )
            for when, message, fields in pending
        ]
        stream = self._stream or sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()


access_log = AccessLog()


class _Observe(Around):
    def __init__(self, method: str) -> None:
        self.method = method
        # The metrics' children of this method, looked up once.
        self._latency = LATENCY.labels(method)
        self._counts: dict[grpc.StatusCode, Any] = {}

    def _done(
        self, info: RequestInfo, started: float, error: BaseException | None, context: Context
    ) -> None:
        elapsed = time.perf_counter() - started
        code = _code(error, context)
        count = self._counts.get(code)
        if count is None:
            count = self._counts[code] = RPCS.labels(self.method, code.name)
        count.inc()
        self._latency.observe(elapsed)
        access_log.write(
            "rpc",
            request_id=info.request_id,
            user=info.user,
            method=self.method,
            code=code.name,
            latency_ms=round(elapsed * 1000, 3),
        )

    async def enter(self, context: Context) -> tuple[RequestInfo, contextvars.Token[Any], float]:
        info = RequestInfo(_request_id(context), self.method)
        return info, _current.set(info), time.perf_counter()

    def exit(
        self,
        state: tuple[RequestInfo, contextvars.Token[Any], float],
        error: BaseException | None,
        context: Context,
    ) -> None:
        info, token, started = state
        self._done(info, started, error, context)
        # A stream finalised from another context (garbage collection) cannot
        # reset; that context never saw the request anyway.
        with contextlib.suppress(ValueError):
            _current.reset(token)


class Observability:
    """Metrics and one access-log line per RPC (a concern of the server's interceptor)."""

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
