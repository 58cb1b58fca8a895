"""slurmrestd stopped: /status shows it and compute calls answer 503 within one probe interval.

The fault is real (the cluster's slurmrestd gets SIGTERM, tests/faults.py)
and short: the daemon is started again in a ``finally``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from conftest import LiveService
from faults import while_stopped

pytestmark = pytest.mark.asyncio


async def _scheduler_health(client: httpx.AsyncClient, live: LiveService) -> dict[str, Any]:
    response = await client.get("/status/systems", headers=live.headers("alice"))
    assert response.status_code == 200, response.text
    (system,) = [s for s in response.json()["systems"] if s["name"] == live.system]
    (health,) = [h for h in system["servicesHealth"] if h["serviceType"] == "scheduler"]
    return dict(health)


async def test_slurmrestd_stopped_is_shown_and_refused_with_its_reason(
    live_rest: LiveService,
) -> None:
    live = live_rest
    config = live.running.runtime.system(live.system).config
    # One probe interval, plus the probe's own timeout and a poll's slack.
    within = config.probing.interval + config.probing.timeout + 1

    async with httpx.AsyncClient(base_url=live.rest_url, timeout=30) as client:
        assert (await _scheduler_health(client, live))["healthy"]

        async def observe() -> tuple[dict[str, Any], httpx.Response]:
            deadline = time.monotonic() + within
            while (health := await _scheduler_health(client, live))["healthy"]:
                assert time.monotonic() < deadline, f"still healthy after {within} s"
                await asyncio.sleep(0.2)
            jobs = await client.get(f"/compute/{live.system}/jobs", headers=live.headers("alice"))
            return health, jobs

        health, jobs = await while_stopped("slurmrestd", observe)

        assert "slurmrestd is not answering" in health["message"]
        assert jobs.status_code == 503, jobs.text
        assert jobs.json()["data"]["reason"] == "SLURMRESTD_UNAVAILABLE"

        # Back up: the checker sees it by itself, and the calls go through again.
        deadline = time.monotonic() + 60
        while not (await _scheduler_health(client, live))["healthy"]:
            assert time.monotonic() < deadline, "slurmrestd not healthy again within 60 s"
            await asyncio.sleep(0.5)
        again = await client.get(f"/compute/{live.system}/jobs", headers=live.headers("alice"))
        assert again.status_code == 200, again.text
