"""deploy/nginx/hpcgate.conf, run by a real nginx (Debian's) in front of real edges and a server.

The shipped file is used as it is, but for its addresses: the upstreams'
``server`` lines point at this test's edges and server, the listeners at
free loopback ports. Through it: REST and gRPC calls answer as they do
directly (status codes and error reasons included), an upload streams
through to the cluster, and a killed edge is routed around.
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

from conftest import LiveService, free_port, serve_asgi
from hpcgate.edge.app import create_app
from hpcgate.v1 import status_pb2, status_pb2_grpc

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "hpcgate.conf"
NGINX = "/usr/sbin/nginx"


@dataclass
class Nginx:
    rest_url: str
    grpc_target: str
    directory: Path

    def access_log(self) -> str:
        return (self.directory / "access.log").read_text()

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text()


def _upstream(conf: str, name: str, addresses: list[str]) -> str:
    """``conf`` with upstream ``name``'s server lines replaced by ``addresses``."""
    block = re.search(rf"upstream {name} \{{.*?\n\}}", conf, re.DOTALL)
    assert block is not None, f"no upstream {name} in {CONF}"
    body = re.sub(r"\n    server [^;]+;", "", block.group(0))
    lines = "".join(f"\n    server {a} max_fails=1 fail_timeout=5s;" for a in addresses)
    return conf.replace(block.group(0), body.replace("{", "{" + lines, 1))


def _render(edges: list[str], servers: list[str], rest_port: int, grpc_port: int) -> str:
    conf = CONF.read_text()
    conf = _upstream(conf, "hpcgate_edges", edges)
    conf = _upstream(conf, "hpcgate_servers", servers)
    conf, rest = re.subn(r"listen 8080;", f"listen 127.0.0.1:{rest_port};", conf)
    conf, grpc_ = re.subn(r"listen 50050 http2;", f"listen 127.0.0.1:{grpc_port} http2;", conf)
    assert rest == grpc_ == 1, "the shipped listeners changed: update this test"
    return conf


def _start(directory: Path, conf: str) -> subprocess.Popen[bytes]:
    (directory / "hpcgate.conf").write_text(conf)
    temp = {k: directory / k for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main = f"""
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {directory}/hpcgate.conf;
}}
"""
    (directory / "nginx.conf").write_text(main)
    check = subprocess.run(
        [NGINX, "-t", "-c", str(directory / "nginx.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    return subprocess.Popen([NGINX, "-c", str(directory / "nginx.conf")])


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
    conf = _render([a for a, _ in edges], [live.grpc_target], rest_port, grpc_port)
    process = _start(tmp_path, conf)
    try:
        _wait_listening(rest_port, process)
        yield Nginx(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", tmp_path)
    finally:
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
