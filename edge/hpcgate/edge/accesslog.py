"""The edge's access log: one JSON line per request, queued, formatted and written in batches.

A line says when the request came (``time``), ``method``, ``route`` (the
template, ``/filesystem/{system_name}/ops/ls``: never the path itself,
which holds users' file names), ``status``, ``duration_ms``, ``bytes``
(of the response body), ``request_id`` (the one forwarded to the server and
echoed in ``X-Request-Id``) and ``user`` (the caller the server named;
null before authentication). Never a header, so never the token.

The lines have the shape of the server's (``time``, ``level``, ``logger``,
``message``, fields), so one pipeline reads both. On the hot path a request
only appends a tuple: the lines are built (orjson) and written in one
write every :data:`FLUSH_INTERVAL` seconds, or as soon as
:data:`FLUSH_LINES` are waiting, and when the edge stops.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from typing import TextIO

import orjson

LOGGER = "hpcgate.edge.access"
FLUSH_INTERVAL = 0.1
FLUSH_LINES = 1000

# started (epoch), method, route, status, seconds, bytes, request id, user
Entry = tuple[float, str, str, int, float, int, str, str | None]


class AccessLog:
    """Buffered JSON access-log lines on ``stream`` (default: the current ``sys.stderr``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None

    def request(self, entry: Entry) -> None:
        """Queue the line of one answered request."""
        self._pending.append(entry)
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Write the queued lines now."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        pending, self._pending = self._pending, []
        if pending:
            stream = self._stream or sys.stderr
            stream.write(b"".join(map(_line, pending)).decode())
            stream.flush()


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    """The server's log time format (local time, to the second); lines of a second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


def _line(entry: Entry) -> bytes:
    started, method, route, status, seconds, sent, request_id, user = entry
    fields = {
        "time": _stamp(int(started)),
        "level": "INFO",
        "logger": LOGGER,
        "message": "request",
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "bytes": sent,
        "user": user,
    }
    return orjson.dumps(fields) + b"\n"
