"""The access log: JSON lines like the other logs, buffered and written a few times a second."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from hpcgate.server.rpc.observability import ACCESS_LOGGER, FLUSH_INTERVAL, FLUSH_LINES, AccessLog


@pytest.fixture(autouse=True)
def access_logger_at_info() -> Iterator[logging.Logger]:
    """The level the server sets (configure_logging); tests run with WARNING otherwise."""
    logger = logging.getLogger(ACCESS_LOGGER)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.setLevel(previous)


async def test_lines_wait_for_the_flush_interval_then_go_out_together() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.write("rpc", method="/a", code="OK", latency_ms=1.5)
    log.write("rpc", method="/b", code="NOT_FOUND", latency_ms=0.25, user=None)
    await asyncio.sleep(0)
    assert stream.getvalue() == ""  # buffered: nothing written per call
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["method"], line["code"]) for line in lines] == [("/a", "OK"), ("/b", "NOT_FOUND")]
    for line in lines:
        assert (line["level"], line["logger"], line["message"]) == ("INFO", ACCESS_LOGGER, "rpc")
        assert line["time"][:2] == "20" and "T" in line["time"]
    assert lines[1]["user"] is None


async def test_a_full_buffer_is_written_at_once() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    for n in range(FLUSH_LINES):
        log.rpc(f"id-{n}", "alice", "/a", "OK", 0.001)
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES  # no wait for the timer
    log.flush()  # nothing left: the timer was cancelled, no line is written twice
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES


async def test_rpc_lines_are_json_whatever_their_strings_hold() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    awkward = 'id "quoted" \\ with\nnewline and \u00e9\u2603'
    log.rpc(awkward, None, "/hpcgate.v1.Status/ListSystems", "OK", 0.0012345)
    log.rpc("plain", 'al"ice', "/m", "PERMISSION_DENIED", 2.5)
    log.flush()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": ACCESS_LOGGER,
        "message": "rpc",
        "request_id": awkward,
        "user": None,
        "method": "/hpcgate.v1.Status/ListSystems",
        "code": "OK",
        "latency_ms": 1.234,
    }
    assert (second["user"], second["code"], second["latency_ms"]) == (
        'al"ice',
        "PERMISSION_DENIED",
        2500.0,
    )


def test_outside_a_loop_a_line_is_written_at_once() -> None:
    stream = io.StringIO()
    AccessLog(stream).write("rpc", method="/a")
    assert json.loads(stream.getvalue())["method"] == "/a"


def test_the_access_loggers_level_switches_it_off(access_logger_at_info: logging.Logger) -> None:
    stream = io.StringIO()
    access_logger_at_info.setLevel(logging.WARNING)
    log = AccessLog(stream)
    log.write("rpc", method="/a")
    log.rpc("id", "alice", "/a", "OK", 0.001)
    log.flush()
    assert stream.getvalue() == ""
