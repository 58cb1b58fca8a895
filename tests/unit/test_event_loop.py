"""The tests run on the event loop the server and the edge run on in production."""

from __future__ import annotations

import asyncio

import uvloop


async def test_the_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
