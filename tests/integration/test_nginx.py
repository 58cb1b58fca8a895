"""deploy/nginx/hpcgate.conf, run by a real nginx (Debian's) in front of real edges and a server.

The shipped file is used as it is, but for its addresses: the upstreams'
``server`` lines point at this test's edges and server, the listeners at
free loopback ports. Through it: REST and gRPC calls answer as they do
directly (status codes and error reasons included), an upload streams
through to the cluster, a killed edge is routed around, and an idle SSE
watch outlives nginx's ``proxy_read_timeout`` (shortened to 1 s) thanks to
the edge's heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from grpc_status import rpc_status
from integration.test_scheduler import cancel_quietly, running, submit

from conftest import LiveService, free_port, serve_asgi
from fleet import NGINX, nginx_main, render_nginx
from hpcgate.edge.app import create_app
from hpcgate.v1 import status_pb2, status_pb2_grpc


@dataclass
class Nginx:
    rest_url: str
    grpc_target: str
    directory: Path

    def access_log(self) -> str:
        return (self.directory / "nginx-access.log").read_text()

    def error_log(self) -> str:
        return (self.directory / "nginx-error.log").read_text()


def _start(directory: Path, conf: str) -> subprocess.Popen[bytes]:
    (directory / "hpcgate.conf").write_text(conf)
    main = directory / "nginx.conf"
    main.write_text(nginx_main(directory, directory / "hpcgate.conf"))
    check = subprocess.run([NGINX, "-t", "-c", str(main)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return subprocess.Popen([NGINX, "-c", str(main)])


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until nginx accepts connections (a connect only: the edges share this test's loop)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "nginx exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError("nginx does not listen")


@pytest.fixture
async def edges(live: LiveService) -> AsyncIterator[list[tuple[str, uvicorn.Server]]]:
    """Two more edges in front of the live server (the live edge stays untouched)."""
    started = [await serve_asgi(create_app(live.grpc_target)) for _ in range(2)]
    try:
        yield [(url.removeprefix("http://"), server) for server, _, url in started]
    finally:
        for server, task, _ in started:
            server.should_exit = True
            await task


@pytest.fixture
def nginx(
    live: LiveService, edges: list[tuple[str, uvicorn.Server]], tmp_path: Path
) -> Iterator[Nginx]:
    rest_port, grpc_port = free_port(), free_port()
    conf = render_nginx([a for a, _ in edges], [live.grpc_target], rest_port, grpc_port)
    process = _start(tmp_path, conf)
    try:
        _wait_listening(rest_port, process)
        yield Nginx(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", tmp_path)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_rest_through_nginx_answers_as_the_edge_does(live: LiveService, nginx: Nginx) -> None:
    async with httpx.AsyncClient(headers=live.headers("alice")) as http:
        direct = await http.get(f"{live.rest_url}/status/systems")
        proxied = await http.get(f"{nginx.rest_url}/status/systems")
        assert proxied.status_code == direct.status_code == 200
        assert [s["name"] for s in proxied.json()["systems"]] == [
            s["name"] for s in direct.json()["systems"]
        ]
        # Errors keep their status and body: no token is 401 with the edge's reason.
        no_token = {"Authorization": ""}
        anonymous = await http.get(f"{nginx.rest_url}/status/systems", headers=no_token)
        direct_anonymous = await http.get(f"{live.rest_url}/status/systems", headers=no_token)
        assert anonymous.status_code == direct_anonymous.status_code == 401
        assert anonymous.json() == direct_anonymous.json()
    assert "/status/systems" in nginx.access_log()


async def test_grpc_through_nginx_keeps_codes_and_reasons(live: LiveService, nginx: Nginx) -> None:
    async with grpc.aio.insecure_channel(nginx.grpc_target) as channel:
        stub = status_pb2_grpc.StatusStub(channel)
        reply = await stub.ListSystems(
            status_pb2.ListSystemsRequest(), metadata=live.metadata("alice"), timeout=10
        )
        assert live.system in [s.name for s in reply.systems]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListSystems(status_pb2.ListSystemsRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None and status.details, "the rich error status did not pass through"


async def test_an_upload_streams_through_nginx(
    live: LiveService, nginx: Nginx, remote_dir: str
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=nginx.rest_url, headers=live.headers("alice")) as http:
        reply = await http.post(
            f"/filesystem/{live.system}/ops/upload",
            params={"path": remote_dir},
            files={"file": ("data.bin", data)},
        )
        assert reply.status_code == 204, reply.text
        back = await http.get(
            f"/filesystem/{live.system}/ops/download", params={"path": f"{remote_dir}/data.bin"}
        )
    assert back.status_code == 200
    assert back.content == data


async def test_nginx_routes_around_a_dead_edge(
    live: LiveService, nginx: Nginx, edges: list[tuple[str, uvicorn.Server]]
) -> None:
    dead = edges[0][1]
    dead.should_exit = True
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=nginx.rest_url, headers=live.headers("alice")) as http:
        codes = [(await http.get("/status/systems")).status_code for _ in range(20)]
    assert codes == [200] * 20
    # ... and the dead edge was tried, refused, and stepped over.
    dead_address = edges[0][0]
    assert f'upstream: "http://{dead_address}' in nginx.error_log()


@contextlib.contextmanager
def _nginx_with_read_timeout(
    directory: Path, edge: str, server: str, read_timeout: int
) -> Iterator[str]:
    """The shipped conf in front of one edge, with a short ``proxy_read_timeout``; its REST URL."""
    rest_port, grpc_port = free_port(), free_port()
    conf = render_nginx([edge], [server], rest_port, grpc_port)
    conf, replaced = re.subn(
        r"proxy_read_timeout \d+s;", f"proxy_read_timeout {read_timeout}s;", conf
    )
    assert replaced == 1, "the shipped conf has no proxy_read_timeout to shorten"
    process = _start(directory, conf)
    try:
        _wait_listening(rest_port, process)
        yield f"http://127.0.0.1:{rest_port}"
    finally:
        _stop(process)


async def _idle_watch(live: LiveService, url: str, job_id: int, seconds: float) -> tuple[bool, int]:
    """Watch ``job_id`` (quiet) for ``seconds``: (still open at the end, comment lines seen)."""
    comments = 0
    async with (
        httpx.AsyncClient(base_url=url, headers=live.headers("bob"), timeout=None) as http,
        http.stream("GET", f"/compute/{live.system}/jobs/watch", params={"jobIds": job_id}) as r,
    ):
        assert r.status_code == 200
        try:
            async with asyncio.timeout(seconds):
                async for line in r.aiter_lines():
                    comments += line.startswith(":")
            return False, comments  # nginx ended it
        except TimeoutError:
            return True, comments
        except httpx.HTTPError:
            return False, comments  # nginx cut it mid-stream


@pytest.mark.parametrize(("heartbeat", "stays_open"), [(0.4, True), (0.0, False)])
async def test_an_idle_watch_outlives_the_proxy_timeout(
    live: LiveService, tmp_path: Path, heartbeat: float, stays_open: bool
) -> None:
    """Idle for 3x nginx's proxy_read_timeout: open with heartbeats, cut without (the control)."""
    server, task, edge_url = await serve_asgi(create_app(live.grpc_target, heartbeat=heartbeat))
    job_id = await submit(live, "bob", "sleep 60")
    try:
        await running(live, "bob", job_id)  # the watch has nothing to say for a while
        edge = edge_url.removeprefix("http://")
        with _nginx_with_read_timeout(tmp_path, edge, live.grpc_target, 1) as url:
            open_, comments = await _idle_watch(live, url, job_id, 3.5)
    finally:
        await cancel_quietly(live, "bob", job_id)
        server.should_exit = True
        await task
    assert open_ is stays_open
    if stays_open:
        assert comments >= 5
