"""Scenario 6: the resident memory of the server and the edge, idle and after the load scenarios.

RSS is read from /proc (``VmRSS``), five readings 0.2 s apart, so the
figure shows whether memory still moves (for example, pools closing idle
connections) rather than a single snapshot. Each reading gives three
figures: the server, the edge, and the two together (the issue's target).

After a load scenario, :func:`settled` reads the two together until they
are back within :data:`SETTLED` of idle, or :data:`SETTLE_TIME` has passed:
its ratio to the idle figure says whether memory came back.
"""

from __future__ import annotations

import asyncio
import time

from bench.context import Context
from bench.model import Figure
from bench.procfs import rss_bytes

SCENARIO = "memory"
READINGS = 5
INTERVAL = 0.2
PROCESSES = ("server", "edge")
BOTH = "server + edge RSS"
IDLE = "idle"
# Back to idle: within 10 % of it, within 60 s (the target).
SETTLED = 1.10
SETTLE_TIME = 60.0
SETTLE_STEP = 5.0


def _both(ctx: Context) -> float:
    return sum(rss_bytes(ctx.stack.pids[name]) for name in PROCESSES) / 2**20


async def rss(ctx: Context, when: str) -> list[Figure]:
    """RSS in MiB of the server, the edge and both, labelled ``when`` (for example "idle")."""
    figures = {name: Figure(SCENARIO, f"{name} RSS, {when}", "MiB") for name in PROCESSES}
    both = Figure(SCENARIO, f"{BOTH}, {when}", "MiB")
    if when != IDLE:
        both.baseline = f"{BOTH}, {IDLE}"
    for _ in range(READINGS):
        for name, figure in figures.items():
            figure.samples.append(rss_bytes(ctx.stack.pids[name]) / 2**20)
        both.samples.append(sum(figures[name].samples[-1] for name in PROCESSES))
        await asyncio.sleep(INTERVAL)
    return [*figures.values(), both]


async def settled(ctx: Context, idle: list[Figure], when: str) -> list[Figure]:
    """Server + edge RSS once back within :data:`SETTLED` of ``idle``, or after :data:`SETTLE_TIME`.

    The figure's ``extra`` says how long it took (``seconds``) and whether it came back.
    """
    idle_both = next(f for f in idle if f.name == f"{BOTH}, {IDLE}").median or 0.0
    started = time.monotonic()
    for _ in range(int(SETTLE_TIME / SETTLE_STEP)):  # polled: RSS has no event to wait for
        if _both(ctx) <= idle_both * SETTLED:
            break
        await asyncio.sleep(SETTLE_STEP)
    waited = time.monotonic() - started
    figures = await rss(ctx, f"{when}, up to {SETTLE_TIME:.0f} s later")
    figures[-1].extra = {"seconds": round(waited, 1), "back": _both(ctx) <= idle_both * SETTLED}
    return figures
