"""A job's watch survives a restart of the server, losing no transition.

The test owns its server (the live fixture's settings, so the same tokens)
on a fixed port: it stops it while the watch is open and starts a new one
on the same port. The watch reconnects with ``send_initial`` and reports
the state the job reached meanwhile, each transition once.
"""

from __future__ import annotations

import asyncio

from conftest import LiveService, free_port
from hpcgate.client import AsyncClient
from hpcgate.server.app import start
from hpcgate.v1 import scheduler_pb2

S = scheduler_pb2


async def test_a_watch_across_a_server_restart(live: LiveService, remote_dir: str) -> None:
    target = f"127.0.0.1:{free_port()}"
    running = await start(live.settings, target)
    try:
        async with AsyncClient(target, live.token("alice"), system=live.system) as client:
            job = await client.submit(
                "#!/bin/bash\nsleep 6\n", working_directory=remote_dir, name="restart"
            )
            states: list[int] = []
            first = asyncio.Event()

            async def follow() -> None:
                async for event in job.watch():
                    states.append(event.job.status.normalized_state)
                    first.set()

            watcher = asyncio.create_task(follow())
            await asyncio.wait_for(first.wait(), 30)
            await running.stop(grace=0)
            await asyncio.sleep(2)  # the watch is broken meanwhile
            running = await start(live.settings, target)
            await asyncio.wait_for(watcher, 60)
    finally:
        await running.stop(grace=0)
    assert states[-1] == S.JOB_STATE_COMPLETED, states
    assert states[0] in {S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING}, states
    assert len(states) == len(set(states)), states  # none reported twice
