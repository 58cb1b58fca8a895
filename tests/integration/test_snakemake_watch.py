"""The plugin's job tracker keeps its one WatchJobs stream across a server restart.

The test owns its server (the live fixture's settings, so the same tokens)
on a fixed port, stops it while the tracker's stream is open, and starts a
new one on the same port. The job ends during the outage: the tracker
learns of the end from the reopened stream's snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from conftest import LiveService, free_port
from hpcgate.client import Client, NotFound
from hpcgate.server.app import start
from hpcgate.v1 import scheduler_pb2
from snakemake_executor_plugin_hpcgate.tracker import JobTracker, is_terminal

S = scheduler_pb2


async def _until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


async def test_the_tracker_reconnects_and_sees_an_end_during_the_outage(
    live: LiveService, remote_dir: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    running = await start(live.settings, target)
    client = Client(target, live.token("alice"), system=live.system)
    tracker = JobTracker(client, live.system)
    try:
        tracker.start()
        job = await asyncio.to_thread(
            client.submit, "#!/bin/bash\nsleep 4\n", working_directory=remote_dir, name="trk"
        )
        tracker.expect(job.job_id)

        def seen() -> bool:
            return tracker.status(job.job_id) is not None

        await _until(seen, 30)
        first = tracker.status(job.job_id)
        assert first is not None and not is_terminal(first), first
        await running.stop(grace=0)
        await asyncio.sleep(8)  # the job ends while the stream is down
        assert tracker.connects == 1
        running = await start(live.settings, target)

        def ended() -> bool:
            status = tracker.status(job.job_id)
            return status is not None and is_terminal(status)

        await _until(ended, 60)
    finally:
        await asyncio.to_thread(tracker.stop)
        client.close()
        await running.stop(grace=0)
    final = tracker.status(job.job_id)
    assert final is not None and final.normalized_state == S.JOB_STATE_COMPLETED, final
    assert tracker.connects >= 2


async def test_a_refused_watch_ends_with_the_reason(live: LiveService) -> None:
    client = Client(live.grpc_target, live.token("alice"), system="no-such-system")
    tracker = JobTracker(client, "no-such-system")
    try:
        tracker.start()
        await _until(lambda: tracker.error is not None, 30)
    finally:
        await asyncio.to_thread(tracker.stop)
        client.close()
    assert isinstance(tracker.error, NotFound), tracker.error
    assert tracker.error.reason == "SYSTEM_NOT_FOUND", tracker.error
    assert tracker.connects == 0
