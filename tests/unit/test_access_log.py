"""The access log: JSON lines like the other logs, written once per event-loop turn."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from hpcgate.server.observability import ACCESS_LOGGER, AccessLog


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


async def test_lines_of_one_loop_turn_go_out_together() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.write("rpc", method="/a", code="OK", latency_ms=1.5)
    log.write("rpc", method="/b", code="NOT_FOUND", latency_ms=0.25, user=None)
    assert stream.getvalue() == ""  # not yet: the loop has not turned
    await asyncio.sleep(0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["method"], line["code"]) for line in lines] == [("/a", "OK"), ("/b", "NOT_FOUND")]
    for line in lines:
        assert (line["level"], line["logger"], line["message"]) == ("INFO", ACCESS_LOGGER, "rpc")
        assert line["time"][:2] == "20" and "T" in line["time"]
    assert lines[1]["user"] is None


def test_outside_a_loop_a_line_is_written_at_once() -> None:
    stream = io.StringIO()
    AccessLog(stream).write("rpc", method="/a")
    assert json.loads(stream.getvalue())["method"] == "/a"


def test_the_access_loggers_level_switches_it_off(access_logger_at_info: logging.Logger) -> None:
    stream = io.StringIO()
    access_logger_at_info.setLevel(logging.WARNING)
    AccessLog(stream).write("rpc", method="/a")
    assert stream.getvalue() == ""
