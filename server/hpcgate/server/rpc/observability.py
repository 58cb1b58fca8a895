"""Metrics and access logs for every RPC, and JSON log formatting.

:class:`Observability`, a concern of the method table (:mod:`.method_table`),
hooks every call: it tallies the RPC by method and code, with its latency,
in :mod:`.metrics` (Prometheus scrapes them on a separate port), and writes
one JSON access-log line per RPC with a request id (the caller's
``x-request-id``, else a fresh one), the user (set by the authentication
hook through :func:`current_request`), the method, the code and the latency.
:func:`configure_logging` makes every other log line JSON too.

The access log is the one log written per RPC, so it bypasses the logging
machinery (see :class:`AccessLog`); its lines have the shape of every other
log line and go to the same stream.
"""

from __future__ import annotations

import asyncio
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

from hpcgate.server.errors import ServiceError
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.errors import grpc_code
from hpcgate.server.rpc.method_table import Around, Metadata
from hpcgate.server.rpc.metrics import RPC_METRICS

ACCESS_LOGGER = "hpcgate.access"
# Request ids of calls without x-request-id: a per-process random prefix and
# a counter (a uuid4 per call is a system call for randomness nobody needs).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)
# The access log's buffer: written at least this often (seconds), and at once
# when this many lines wait.
FLUSH_INTERVAL = 0.1
FLUSH_LINES = 1000


@dataclass(slots=True)
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


_NAMES = {code: code.name for code in grpc.StatusCode}  # Enum.name is a property call


def _code(error: BaseException | None, context: Context) -> str:
    """The name of the status the call ended with."""
    code = context.code() if hasattr(context, "code") else None
    if error is None:
        return "OK" if code is None else _NAMES.get(code, "OK")
    if isinstance(error, ServiceError):
        return _NAMES[grpc_code(error.code)]
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN" if code is None else _NAMES.get(code, "UNKNOWN")


_quote = json.encoder.encode_basestring_ascii  # json's own (C) string escaper


def _request_id(metadata: Metadata) -> str:
    """The caller's ``x-request-id`` (the edge sends one), else a fresh id."""
    for key, value in metadata:
        if key == "x-request-id":
            return str(value)
    return f"{_ID_PREFIX}-{next(_ids)}"


class AccessLog:
    """JSON access-log lines, buffered and written a few times a second.

    Why not a ``logging.Logger``: py-spy on a server answering ListSystems put
    a quarter of its Python time in ``Logger.info`` for the access line
    (LogRecord, handler lock, formatter, and a write and flush per line). Here
    a call queues a tuple; the queued lines are formatted and go out in one
    write every :data:`FLUSH_INTERVAL` seconds, or as soon as
    :data:`FLUSH_LINES` are waiting (nginx's ``access_log buffer= flush=``
    does the same). The server flushes when it stops. The lines keep the
    shape of the other log lines (time, level, logger, message, fields), and
    the ``hpcgate.access`` logger's level still switches them off.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        """``stream``: where lines go; default the current ``sys.stderr``, as the other logs."""
        self._stream = stream
        # (time, message, fields): a dict, or an RPC's tuple (see rpc()).
        self._pending: list[tuple[float, str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._logger = logging.getLogger(ACCESS_LOGGER)
        # One encoder for all lines: json.dumps(default=...) builds one per call.
        self._encode = json.JSONEncoder(default=str).encode
        self._second = -1
        self._stamp = ""

    def write(self, message: str, **fields: Any) -> None:
        """Queue one line; it is written within :data:`FLUSH_INTERVAL` (at once outside a loop).

        Formatting waits for the write too, so that a call only pays for a tuple.
        """
        self._queue(message, fields)

    def rpc(
        self, request_id: str, user: str | None, method: str, code: str, seconds: float
    ) -> None:
        """Queue the line of one finished RPC (the hot path: a tuple, formatted at the flush)."""
        self._queue("rpc", (request_id, user, method, code, seconds))

    def _queue(self, message: str, fields: Any) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        self._pending.append((time.time(), message, fields))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
        except RuntimeError:
            self.flush()

    def _line(self, when: float, message: str, fields: Any) -> str:
        stamp = self._time(when)
        if isinstance(fields, dict):
            head = {"time": stamp, "level": "INFO", "logger": ACCESS_LOGGER, "message": message}
            return self._encode({**head, **fields})
        # An RPC line, written out by hand: the JSON encoder's set-up per
        # object cost more than the rest of the line. Strings go through
        # json's own escaping, so the line is valid JSON whatever they hold.
        request_id, user, method, code, seconds = fields
        return (
            f'{{"time": "{stamp}", "level": "INFO", "logger": "{ACCESS_LOGGER}", '
            f'"message": "rpc", "request_id": {_quote(request_id)}, '
            f'"user": {"null" if user is None else _quote(user)}, "method": {_quote(method)}, '
            f'"code": "{code}", "latency_ms": {round(seconds * 1000, 3)!r}}}'
        )

    def _time(self, when: float) -> str:
        """The other log lines' time format, computed once per second."""
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return self._stamp

    def flush(self) -> None:
        """Write the queued lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        lines = [self._line(when, message, fields) for when, message, fields in pending]
        stream = self._stream or sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()


access_log = AccessLog()


class _Observe(Around):
    def __init__(self, method: str) -> None:
        self.method = method
        self._stats = RPC_METRICS.method(method)

    async def enter(self, context: Context, metadata: Metadata) -> tuple[RequestInfo, float]:
        info = RequestInfo(_request_id(metadata), self.method)
        # Not reset on exit: grpc.aio runs every call in a task of its own,
        # whose copy of the context ends with the call.
        _current.set(info)
        return info, time.perf_counter()

    def exit(
        self, state: tuple[RequestInfo, float], error: BaseException | None, context: Context
    ) -> None:
        info, started = state
        elapsed = time.perf_counter() - started
        code = _code(error, context)
        self._stats.record(code, elapsed)
        access_log.rpc(info.request_id, info.user, self.method, code, elapsed)


class Observability:
    """Metrics and one access-log line per RPC (a concern of the method table)."""

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
