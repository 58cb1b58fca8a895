"""``make fleet`` (dev/fleet.py): 3 servers on Redis, 2 edges, nginx in front, on the local cluster.

Started as ``make fleet`` starts it, in a state folder of its own: the
facts it prints lead to a working service through nginx (REST and gRPC),
every replica is up and coordinated through Redis, and ``stop`` leaves no
process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cluster_fixture import Cluster
from hpcgate.v1 import status_pb2, status_pb2_grpc

FLEET = Path(__file__).resolve().parents[2] / "dev" / "fleet.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def fleet(cluster: Cluster) -> Iterator[dict[str, Any]]:
    started = subprocess.run(
        [sys.executable, str(FLEET), "start"], capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stderr[-2000:]
    root = FLEET.parents[1] / ".hpcgate"
    facts: dict[str, Any] = json.loads((root / "fleet.json").read_text())
    pids = json.loads((root / "fleet" / "pids.json").read_text())
    facts["banner"], facts["pids"] = started.stdout, pids
    try:
        yield facts
    finally:
        subprocess.run([sys.executable, str(FLEET), "stop"], capture_output=True, timeout=120)


def test_the_banner_names_the_service_and_every_replica(fleet: dict[str, Any]) -> None:
    assert fleet["rest"] in fleet["banner"] and fleet["grpc"] in fleet["banner"]
    for server in fleet["replicas"]["servers"]:
        assert server["grpc"] in fleet["banner"]
    assert len(fleet["replicas"]["servers"]) == 3
    assert len(fleet["replicas"]["edges"]) == 2


async def test_rest_and_grpc_through_nginx(fleet: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {fleet['tokens']['alice']}"}
    async with httpx.AsyncClient(base_url=fleet["rest"], headers=headers, timeout=30) as http:
        listing = await http.get(
            f"/filesystem/{fleet['system']}/ops/ls", params={"path": "/home/alice"}
        )
        assert listing.status_code == 200, listing.text
        deadline = time.monotonic() + 60
        health: dict[str, bool] = {}
        while "coordination" not in health and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # until the fleet's one prober has reported
            systems = (await http.get("/status/systems")).json()["systems"]
            health = {h["serviceType"]: h["healthy"] for h in systems[0]["servicesHealth"]}
    assert health.get("coordination") is True, health  # the replicas share Redis
    assert health.get("ssh") is True, health
    async with grpc.aio.insecure_channel(fleet["grpc"]) as channel:
        reply = await status_pb2_grpc.StatusStub(channel).ListSystems(
            status_pb2.ListSystemsRequest(),
            metadata=[("authorization", f"Bearer {fleet['tokens']['alice']}")],
            timeout=30,
        )
    assert fleet["system"] in [s.name for s in reply.systems]


def test_each_replica_answers_on_its_own(fleet: dict[str, Any]) -> None:
    for server in fleet["replicas"]["servers"]:
        assert httpx.get(server["metrics"], timeout=10).status_code == 200
    for edge in fleet["replicas"]["edges"]:
        assert httpx.get(f"{edge}/status/liveness/", timeout=10).status_code == 200


def test_stop_leaves_nothing_running(fleet: dict[str, Any]) -> None:
    pids = [entry["pid"] for entry in fleet["pids"].values()]
    assert all(_alive(pid) for pid in pids)
    subprocess.run([sys.executable, str(FLEET), "stop"], check=True, capture_output=True)
    assert not [pid for pid in pids if _alive(pid)]
