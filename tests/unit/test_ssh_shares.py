"""The per-user cap on one service class's concurrent requests (ssh.shares)."""

from __future__ import annotations

import asyncio

import pytest

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh.shares import Share


async def test_a_full_share_makes_the_next_wait_and_frees_in_order() -> None:
    share = Share("cluster", "scheduler", limit=2, wait=30)
    release = asyncio.Event()
    order: list[int] = []

    async def hold(n: int) -> None:
        async with share.hold("alice", None):
            order.append(n)
            await release.wait()

    tasks = [asyncio.create_task(hold(n)) for n in range(3)]
    for _ in range(10):  # let every task run up to where it blocks
        await asyncio.sleep(0)
    assert share.held("alice") == 2
    assert order == [0, 1]  # the third waits
    async with share.hold("bob", None):  # another user's share is his own
        assert share.held("bob") == 1
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert share.held("alice") == 0 and share.tracked() == 0  # forgotten once idle


async def test_a_share_that_does_not_move_is_unavailable() -> None:
    share = Share("cluster", "scheduler", limit=1, wait=0.05)
    async with share.hold("alice", None):
        with pytest.raises(ServiceError) as caught:
            async with share.hold("alice", None):
                pass
    assert caught.value.code == ErrorKind.UNAVAILABLE
    assert caught.value.reason == "SCHEDULER_BUSY"
    assert share.held("alice") == 0
