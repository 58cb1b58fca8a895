"""Start what the benchmarks measure: the cluster, the server, the edge, the echo floor.

The server and the edge are started exactly as ``make run`` starts them
(dev/run.py: the same configuration from dev/localsite.py, separate
processes), but from their own folder ``.hpcgate/bench`` and on free ports,
so a running ``make run`` is neither reused nor disturbed. The loopback
cluster is shared: ``cluster.py start`` reuses one that already runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import run as devrun
from bench import ROOT
from bench.procfs import alive
from devkeys import DevIssuer
from localsite import SYSTEM

RUN_DIR = ROOT / ".hpcgate" / "bench"
READY_TIMEOUT = 60.0
TOKEN_LIFETIME = 3 * 3600.0
Metadata = tuple[tuple[str, str], ...]  # gRPC call metadata


@dataclass
class Stack:
    """The running processes under test and how to reach them."""

    cluster: dict[str, Any]
    config: dict[str, Any]
    issuer: DevIssuer
    grpc_target: str
    rest_url: str
    metrics_url: str
    echo_target: str
    http_floor_url: str  # the trivial HTTP server beside the echo (bench/echo.py)
    pids: dict[str, int]  # "server", "edge", "echo"
    system: str = SYSTEM
    # A fleet's processes by role ("server": its replicas...), where more than one.
    replicas: dict[str, list[int]] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def token(self, user: str = "alice") -> str:
        """A bearer token for ``user``, valid for longer than a whole run."""
        if user not in self._tokens:
            self._tokens[user] = self.issuer.token(user, lifetime=TOKEN_LIFETIME)
        return self._tokens[user]

    def metadata(self, user: str = "alice") -> Metadata:
        """gRPC call metadata authenticating as ``user``."""
        return (("authorization", f"Bearer {self.token(user)}"),)

    def headers(self, user: str = "alice") -> dict[str, str]:
        """HTTP headers authenticating as ``user``."""
        return {"Authorization": f"Bearer {self.token(user)}"}

    async def cluster_restarts(self) -> list[str]:
        """Cluster processes restarted since the last call (other test suites may do that).

        A restarted sshd or slurmctld disturbs the figures taken meanwhile;
        the run notes it rather than hiding it.
        """
        pids: dict[str, int] = self.cluster.get("pids", {})
        restarted = sorted(name for name, pid in pids.items() if not alive(pid))
        if restarted:
            self.cluster = await asyncio.to_thread(_cluster_info)
        return restarted

    def processes(self, role: str) -> list[int]:
        """The pids of ``role`` ("server", "edge"): the replicas of a fleet, else the one."""
        return self.replicas.get(role) or [self.pids[role]]

    @property
    def home(self) -> str:
        """alice's home directory on the cluster (under a configured filesystem)."""
        home: str = self.cluster["users"]["alice"]["home"]
        return home


def _cluster_info() -> dict[str, Any]:
    """The cluster JSON as it is now (``cluster.py info``: pids included)."""
    script = ROOT / "dev" / "cluster" / "cluster.py"
    result = subprocess.run(
        [sys.executable, str(script), "info"], capture_output=True, text=True, check=True
    )
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def _spawn_echo(port: int, http_port: int) -> int:
    """Start the floors (bench/echo.py) in their own session, like the server."""
    argv = [sys.executable, "-m", "bench.echo", "--port", str(port), "--http-port", str(http_port)]
    with (RUN_DIR / "echo.log").open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
    return process.pid


async def _wait_grpc_health(target: str, service: str, log: str) -> None:
    """Wait until grpc.health.v1 says ``service`` is SERVING (the first probe passed)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{target}: {service!r} not SERVING; see {log}")
            await asyncio.sleep(0.2)


@asynccontextmanager
async def started() -> AsyncIterator[Stack]:
    """Start the cluster (or reuse it), the server, the edge and the echo server."""
    cluster = await asyncio.to_thread(devrun.start_cluster)
    pids_file = RUN_DIR / "pids.json"
    if pids_file.exists():  # left by a run that was killed: stop what it started
        devrun.stop_processes(json.loads(pids_file.read_text()))
    issuer, config_path, config = devrun.write_config(cluster, RUN_DIR)
    processes = devrun.spawn_service(config_path, RUN_DIR)
    echo_port, http_port = devrun.free_port(), devrun.free_port()
    processes["echo"] = {
        "pid": _spawn_echo(echo_port, http_port),
        "address": f"127.0.0.1:{echo_port}",
        "http": f"http://127.0.0.1:{http_port}",
    }
    pids_file.write_text(json.dumps(processes, indent=2))
    try:
        rest = processes["edge"]["address"]
        await asyncio.to_thread(
            devrun.wait_http, f"{rest}/status/liveness/", READY_TIMEOUT, RUN_DIR / "edge.log"
        )
        server_log = str(RUN_DIR / "server.log")
        await _wait_grpc_health(processes["server"]["address"], SYSTEM, server_log)
        await _wait_grpc_health(processes["echo"]["address"], "", str(RUN_DIR / "echo.log"))
        http_floor = processes["echo"]["http"]
        await asyncio.to_thread(
            devrun.wait_http, f"{http_floor}/bytes?size=1", READY_TIMEOUT, RUN_DIR / "echo.log"
        )
        yield Stack(
            cluster=cluster,
            config=config,
            issuer=issuer,
            grpc_target=processes["server"]["address"],
            rest_url=rest,
            metrics_url=f"http://{config['server']['metrics_listen']}/metrics",
            echo_target=processes["echo"]["address"],
            http_floor_url=http_floor,
            pids={name: entry["pid"] for name, entry in processes.items()},
        )
    finally:
        devrun.stop_processes(processes)
        pids_file.unlink(missing_ok=True)
