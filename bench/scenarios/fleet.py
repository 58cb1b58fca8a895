"""Scenario: the fleet's overhead: the 1,000-file workload and the load scenario through nginx.

The same figures as ``small_files`` (N = 1,000, with its floors, so its
ratios hold within the run) and ``load``, but against ``make fleet``
(``dev/fleet.py``: three server replicas on Redis, two edges, nginx in
front): REST through nginx to either edge, gRPC through nginx's
``grpc_pass`` to any server. The CPU figures add up every server replica
and every edge. On 2 cores the fleet is not faster than one server and one
edge; the figures show what the extra hops and processes cost.

A fleet that already answers (``.hpcgate/fleet.json``) is used as it is and
left running; otherwise this scenario starts one and stops it afterwards.
Figures are named ``fleet: small_files`` and ``fleet: load``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import urllib.request
from typing import Any

import grpc
import httpx

from bench import ROOT
from bench.context import Context
from bench.httpclients import ClientPerConnection
from bench.model import Figure
from bench.scenarios import load, small_files

SCENARIO = "fleet"
FLEET_SCRIPT = ROOT / "dev" / "fleet.py"
FACTS = ROOT / ".hpcgate" / "fleet.json"
PIDS = ROOT / ".hpcgate" / "fleet" / "pids.json"


def _answers(facts: dict[str, Any]) -> bool:
    try:
        with urllib.request.urlopen(f"{facts['rest']}/status/liveness/", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _fleet_up() -> tuple[dict[str, Any], bool]:
    """The fleet's facts, and whether this scenario started it."""
    if FACTS.exists():
        facts: dict[str, Any] = json.loads(FACTS.read_text())
        if _answers(facts):
            return facts, False
    command = [sys.executable, str(FLEET_SCRIPT), "start"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return json.loads(FACTS.read_text()), True


def _fleet_down() -> None:
    command = [sys.executable, str(FLEET_SCRIPT), "stop"]
    subprocess.run(command, cwd=ROOT, check=False, capture_output=True, timeout=120)


def _replicas() -> dict[str, list[int]]:
    """The fleet's server and edge pids (dev/fleet.py names them server0.., edge0..)."""
    pids: dict[str, Any] = json.loads(PIDS.read_text())
    roles: dict[str, list[int]] = {"server": [], "edge": []}
    for name, entry in pids.items():
        role = name.rstrip("0123456789")
        if role in roles:
            roles[role].append(int(entry["pid"]))
    return roles


def _renamed(figures: list[Figure]) -> list[Figure]:
    for figure in figures:
        figure.scenario = f"{SCENARIO}: {figure.scenario}"
    return figures


async def run(ctx: Context) -> list[Figure]:
    facts, started = await asyncio.to_thread(_fleet_up)
    try:
        stack = dataclasses.replace(
            ctx.stack,
            grpc_target=facts["grpc"],
            rest_url=facts["rest"],
            metrics_url=facts["metrics"],
            replicas=await asyncio.to_thread(_replicas),
            _tokens=dict(facts["tokens"]),
        )
        headers, timeout = stack.headers(), ctx.plan.timeout
        async with (
            grpc.aio.insecure_channel(stack.grpc_target) as channel,
            httpx.AsyncClient(base_url=stack.rest_url, headers=headers, timeout=timeout) as http,
            ClientPerConnection(stack.rest_url, headers, timeout) as rest,
        ):
            fleet = dataclasses.replace(
                ctx, stack=stack, channel=channel, http=http, rest=rest, sizes=(1000,)
            )
            figures = _renamed(await small_files.run(fleet))
            figures += _renamed(await load.run(fleet))
    finally:
        if started:
            await asyncio.to_thread(_fleet_down)
    return figures
