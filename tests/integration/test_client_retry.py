"""The client's retry policy against a real UNAVAILABLE: a server stopped, then started again.

The test owns its server (the live fixture's settings, so the same tokens)
on a fixed port. While it is stopped, a call that is not idempotent fails at
once with :class:`Unavailable`, and an idempotent one is retried with backoff
until the server is back, then answers: the caller never sees the outage.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import LiveService, free_port
from hpcgate.client import CallPolicy, Client, Unavailable
from hpcgate.server.app import start
from hpcgate.v1 import scheduler_pb2, status_pb2

# Five attempts (gRPC's most), backing off up to 2, 4, 8, 10 s (each drawn from
# [0, that]): about 12 s on average, far more than the restart takes.
POLICY = CallPolicy(attempts=5, initial_backoff=2.0, max_backoff=10.0, backoff_multiplier=2.0)
DOWN = 0.5  # seconds the server stays away before it is started again


async def test_an_idempotent_call_is_retried_across_a_server_restart(live: LiveService) -> None:
    target = f"127.0.0.1:{free_port()}"
    running = await start(live.settings, target)
    with Client(target, live.token("alice"), system=live.system, policy=POLICY) as client:
        try:
            systems = status_pb2.ListSystemsRequest()
            assert await asyncio.to_thread(client.status.ListSystems, systems)  # connected
            await running.stop(grace=0)
            cancel = scheduler_pb2.CancelJobRequest(system_name=live.system, job_id=1)
            with pytest.raises(Unavailable):  # not idempotent: never retried
                await asyncio.to_thread(client.scheduler.CancelJob, cancel)
            retried = asyncio.ensure_future(asyncio.to_thread(client.status.ListSystems, systems))
            await asyncio.sleep(DOWN)
            assert not retried.done(), retried  # still retrying: nothing listens yet
            running = await start(live.settings, target)
            reply = await asyncio.wait_for(retried, 60)
            assert [s.name for s in reply.systems] == [live.system]
        finally:
            await running.stop(grace=0)
