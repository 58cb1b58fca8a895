"""The edge's access log: JSON lines, buffered, never more than the fields it names."""

from __future__ import annotations

import asyncio
import io
import json

from hpcgate.edge.accesslog import FLUSH_INTERVAL, FLUSH_LINES, LOGGER, AccessLog, Entry


def entry(request_id: str, user: str | None = "alice", status: int = 200) -> Entry:
    return (1767225600.5, "GET", "/status/systems", status, 0.0012345, 321, request_id, user)


async def test_lines_are_buffered_then_written_together() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.request(entry("a"))
    log.request(entry("b", None, 401))
    await asyncio.sleep(0)
    assert stream.getvalue() == ""  # nothing formatted or written per request
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": LOGGER,
        "message": "request",
        "request_id": "a",
        "method": "GET",
        "route": "/status/systems",
        "status": 200,
        "duration_ms": 1.234,
        "bytes": 321,
        "user": "alice",
    }
    assert first["time"][:2] == "20" and "T" in first["time"]
    assert (second["request_id"], second["user"], second["status"]) == ("b", None, 401)


async def test_a_full_buffer_is_written_at_once_and_only_once() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    for n in range(FLUSH_LINES):
        log.request(entry(f"id-{n}"))
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES
    log.flush()
    await asyncio.sleep(FLUSH_INTERVAL * 2)
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES


def test_lines_stay_json_whatever_the_strings_hold() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)  # no running loop: written at once
    awkward = 'id "q" \\ \n\u00e9\u2603'
    log.request(entry(awkward, 'al"ice'))
    (line,) = stream.getvalue().splitlines()
    parsed = json.loads(line)
    assert (parsed["request_id"], parsed["user"]) == (awkward, 'al"ice')
