"""Scenario 6: the server's resident memory, idle and after the small-files scenario.

RSS is read from /proc (``VmRSS``), five readings 0.2 s apart, so the
figure shows whether memory still moves (for example, pools closing idle
connections) rather than a single snapshot.
"""

from __future__ import annotations

import asyncio

from bench.context import Context
from bench.model import Figure
from bench.procfs import rss_bytes

SCENARIO = "memory"
READINGS = 5
INTERVAL = 0.2


async def server_rss(ctx: Context, when: str) -> Figure:
    """Server RSS in MiB, labelled ``when`` (for example "idle")."""
    figure = Figure(SCENARIO, f"server RSS, {when}", "MiB")
    for _ in range(READINGS):
        figure.samples.append(rss_bytes(ctx.stack.pids["server"]) / 2**20)
        await asyncio.sleep(INTERVAL)
    return figure
