"""REST watches that live through proxies: SSE heartbeats, event ids, and resuming a watch.

The real edge and server on the loopback cluster's Slurm. An idle SSE watch
carries ``: keepalive`` comments; every event carries an ``id:``; a client
that comes back with ``Last-Event-ID`` sees the state changes it missed:
replayed (CHANGE events) when the server's poller followed the user's jobs
meanwhile, as a resync (INITIAL snapshots) when it did not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from integration.test_scheduler import finished, submit
from integration.test_watch import hub, open_watch

from conftest import LiveService, serve_asgi
from hpcgate.edge.app import create_app

HEARTBEAT = 0.3


@dataclass
class SSE:
    """What an SSE stream carried: its events (id, kind, data) and comment lines."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False


async def read_sse(response: httpx.Response, sse: SSE, stop: Any = None, within: float = 60) -> SSE:
    """Parse ``response`` into ``sse`` until it ends, ``stop(sse)`` holds or ``within`` passes."""
    block: dict[str, str] = {}
    with_timeout = asyncio.timeout(within)
    try:
        async with with_timeout:
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    sse.comments.append(line)
                elif line:
                    name, _, value = line.partition(": ")
                    block[name] = value
                elif "data" in block:
                    sse.events.append(
                        (block.get("id", ""), block.get("event", ""), json.loads(block["data"]))
                    )
                    block = {}
                if stop is not None and stop(sse):
                    return sse
            sse.ended = True
    except TimeoutError:
        if not with_timeout.expired():
            raise
    return sse


@pytest.fixture
async def edge_url(live: LiveService) -> AsyncIterator[str]:
    """An edge with a short SSE heartbeat in front of the live server."""
    server, task, url = await serve_asgi(create_app(live.grpc_target, heartbeat=HEARTBEAT))
    try:
        yield url
    finally:
        server.should_exit = True
        await task


def watch_url(live: LiveService) -> str:
    return f"/compute/{live.system}/jobs/watch"


async def test_an_idle_watch_gets_heartbeats(live: LiveService, edge_url: str) -> None:
    job_id = await submit(live, "bob", "sleep 30")
    params = {"jobIds": str(job_id)}  # no snapshot: quiet while the job sleeps
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=edge_url, headers=live.headers("bob"), timeout=30) as http,
        http.stream("GET", watch_url(live), params=params) as response,
    ):
        assert response.status_code == 200
        sse = await read_sse(response, SSE(), stop=lambda s: len(s.comments) >= 4)
    elapsed = time.monotonic() - started
    assert sse.comments[:4] == [": keepalive"] * 4
    # One per heartbeat of silence, not a flood.
    assert elapsed >= 3 * HEARTBEAT, elapsed
    # The live edge (default heartbeat, 15 s) was quiet meanwhile: the interval is the edge's.
    async with (
        httpx.AsyncClient(base_url=live.rest_url, headers=live.headers("bob"), timeout=30) as http,
        http.stream("GET", watch_url(live), params=params) as response,
    ):
        quiet = await read_sse(response, SSE(), within=4 * HEARTBEAT)
    assert quiet.comments == []


async def _first_event(http: httpx.AsyncClient, live: LiveService, job_id: int) -> str:
    """Open a watch of ``job_id`` with its snapshot, read one event, hang up; its id."""
    params = {"jobIds": str(job_id), "sendInitial": "true"}
    async with http.stream("GET", watch_url(live), params=params) as response:
        assert response.status_code == 200
        sse = await read_sse(response, SSE(), stop=lambda s: len(s.events) >= 1)
    ((event_id, _, data),) = sse.events
    assert data["eventType"] == "JOB_EVENT_TYPE_INITIAL"
    assert data["job"]["status"]["state"] in {"PENDING", "RUNNING"}
    assert event_id == data["eventId"]
    assert event_id.endswith(f"-{job_id}")
    return event_id


async def _resumed(http: httpx.AsyncClient, live: LiveService, job_id: int, last: str) -> SSE:
    headers = {"Last-Event-ID": last}
    params = {"jobIds": str(job_id)}
    async with http.stream("GET", watch_url(live), params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return await read_sse(response, SSE())


async def test_a_resumed_watch_sees_what_happened_while_away(
    live: LiveService, edge_url: str
) -> None:
    """No other watcher kept the poller: the resumed watch starts with a resync."""
    job_id = await submit(live, "alice", "sleep 2")
    async with httpx.AsyncClient(
        base_url=edge_url, headers=live.headers("alice"), timeout=60
    ) as http:
        last = await _first_event(http, live, job_id)
        await finished(live, "alice", job_id)  # ... while no watch is open
        sse = await _resumed(http, live, job_id, last)
    assert sse.ended  # the watched job has ended: so has the stream
    kinds = {data["eventType"] for _, _, data in sse.events}
    assert kinds == {"JOB_EVENT_TYPE_INITIAL"}, sse.events
    assert sse.events[-1][2]["job"]["status"]["state"] == "COMPLETED"
    assert all(event_id for event_id, _, _ in sse.events)


async def test_a_resumed_watch_replays_the_changes_it_missed(
    live: LiveService, edge_url: str
) -> None:
    """Another watch of the user kept the poller: the missed changes come as they were seen."""
    job_id = await submit(live, "alice", "sleep 2")
    keeper = open_watch(live, "alice")  # all of alice's jobs: the poller stays on
    try:
        async with httpx.AsyncClient(
            base_url=edge_url, headers=live.headers("alice"), timeout=60
        ) as http:
            last = await _first_event(http, live, job_id)
            await finished(live, "alice", job_id)
            await asyncio.sleep(2 * hub(live).min_interval + 1)  # a poll has seen the end
            sse = await _resumed(http, live, job_id, last)
    finally:
        keeper.cancel()
    assert sse.ended
    events = [data for _, _, data in sse.events]
    assert events, "the resumed watch saw nothing"
    assert {e["eventType"] for e in events} == {"JOB_EVENT_TYPE_CHANGE"}, events
    assert events[-1]["job"]["status"]["state"] == "COMPLETED"
    # Each replayed change is later than the event the client had.
    assert all(int(i.split("-")[0]) >= int(last.split("-")[0]) for i, _, _ in sse.events)


async def test_a_bad_last_event_id_is_invalid(live: LiveService) -> None:
    async with httpx.AsyncClient(
        base_url=live.rest_url, headers=live.headers("alice"), timeout=30
    ) as http:
        reply = await http.get(watch_url(live), headers={"Last-Event-ID": "yesterday"})
        by_query = await http.get(watch_url(live), params={"lastEventId": "x-1"})
    for bad in (reply, by_query):
        assert bad.status_code == 400, bad.text
        assert "lastEventId" in bad.text
    # gRPC's own field, same rule.
    call = open_watch(live, "alice", last_event_id="12")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
