"""The edge observes itself: access log, request ids, metrics, /healthz and /readyz.

A real server for the loopback cluster on a port of the test's choosing (so
that it can be stopped and started again on it), and a real edge in front
of it with its access log on a buffer and its metrics on a port of their own.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cluster_fixture import Cluster
from conftest import free_port, live_settings, serve_asgi
from devkeys import DevIssuer
from hpcgate.edge.accesslog import AccessLog
from hpcgate.edge.app import create_app
from hpcgate.edge.metrics import serve_metrics
from hpcgate.edge.probes import READY_TTL
from hpcgate.server.app import Running, start
from hpcgate.server.config import Settings
from hpcgate.server.rpc.observability import ACCESS_LOGGER
from hpcgate.server.rpc.observability import access_log as server_access_log


@dataclass
class Setup:
    url: str
    log: io.StringIO
    metrics_url: str
    issuer: DevIssuer
    settings: Settings
    listen: str
    server: Running | None

    def headers(self, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token('alice')}", **more}

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the edge's metrics, as Prometheus scrapes it (0 if absent)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            if (
                match
                and match[1] == name
                and ",".join(sorted((match[2] or "").split(","))) == (wanted)
            ):
                return float(match[3])
        return 0.0


@pytest.fixture(scope="module")
def metrics_url() -> str:
    return f"http://127.0.0.1:{serve_metrics(f'127.0.0.1:{free_port()}')}/metrics"


@pytest.fixture
async def setup(cluster: Cluster, tmp_path: Path, metrics_url: str) -> AsyncIterator[Setup]:
    issuer = DevIssuer.generate()
    jwks = tmp_path / "jwks.json"
    issuer.write_jwks(jwks)
    base = live_settings(cluster, jwks)
    settings = base.model_copy(
        update={"server": base.server.model_copy(update={"metrics_listen": None})}
    )
    listen = f"127.0.0.1:{free_port()}"
    log = io.StringIO()
    server = await start(settings, listen)
    edge, task, url = await serve_asgi(create_app(listen, access_log=AccessLog(log)))
    state = Setup(url, log, metrics_url, issuer, settings, listen, server)
    try:
        yield state
    finally:
        edge.should_exit = True
        await task
        if state.server is not None:
            await state.server.stop(grace=0)


@pytest.fixture
def server_log_at_info() -> Iterator[None]:
    logger = logging.getLogger(ACCESS_LOGGER)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def flushed(setup: Setup) -> list[dict[str, object]]:
    await asyncio.sleep(0.3)  # the access log writes a few times a second
    return setup.lines()


@pytest.mark.usefixtures("server_log_at_info")
async def test_one_json_line_per_request_with_the_id_the_server_saw_too(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    token = setup.issuer.token("alice")
    async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
        reply = await http.get(
            "/status/systems", headers=setup.headers(**{"X-Request-Id": "obs-test-1"})
        )
        fresh = await http.get("/status/systems", headers=setup.headers())
        odd = await http.get(
            "/status/systems", headers=setup.headers(**{"X-Request-Id": "x" * 500})
        )
        missing = await http.get("/no/such/route", headers=setup.headers())
    assert reply.status_code == fresh.status_code == odd.status_code == 200
    assert reply.headers["x-request-id"] == "obs-test-1"
    made_up = fresh.headers["x-request-id"]
    assert made_up and made_up != "obs-test-1"
    assert odd.headers["x-request-id"] != "x" * 500  # too long for a log or for gRPC: replaced
    assert missing.status_code == 404 and missing.headers["x-request-id"]

    lines = await flushed(setup)
    by_id = {line["request_id"]: line for line in lines}
    line = by_id["obs-test-1"]
    assert line["message"] == "request" and line["logger"] == "hpcgate.edge.access"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/status/systems", 200)
    assert line["user"] == "alice"
    assert line["bytes"] == len(reply.content)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert by_id[made_up]["route"] == "/status/systems"
    assert by_id[missing.headers["x-request-id"]]["route"] == "-"  # never the raw path
    assert "/no/such/route" not in setup.log.getvalue()
    assert token not in setup.log.getvalue()

    # The server logged the same id for the call the edge made.
    server_access_log.flush()
    server_lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x[:1] == "{"]
    (call,) = [x for x in server_lines if x.get("request_id") == "obs-test-1"]
    assert call["method"] == "/hpcgate.v1.Status/ListSystems"


async def test_metrics_count_requests_by_route_and_status(setup: Setup) -> None:
    ok = {"method": "GET", "route": "/status/systems", "status": "200"}
    unauthenticated = {**ok, "status": "401"}
    before, refused_before = (
        setup.metric("hpcgate_edge_requests_total", **ok),
        setup.metric("hpcgate_edge_requests_total", **unauthenticated),
    )
    histogram_before = setup.metric(
        "hpcgate_edge_request_duration_seconds_count", route="/status/systems"
    )
    async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
        for _ in range(3):
            assert (await http.get("/status/systems", headers=setup.headers())).status_code == 200
        assert (await http.get("/status/systems")).status_code == 401
    assert setup.metric("hpcgate_edge_requests_total", **ok) == before + 3
    assert setup.metric("hpcgate_edge_requests_total", **unauthenticated) == refused_before + 1
    assert (
        setup.metric("hpcgate_edge_request_duration_seconds_count", route="/status/systems")
        == histogram_before + 4
    )
    # An open watch is in flight until it ends.
    idle = setup.metric("hpcgate_edge_requests_in_flight")
    url = f"/compute/{setup.settings.systems[0].name}/jobs/watch"
    async with (
        httpx.AsyncClient(base_url=setup.url, timeout=30) as http,
        http.stream("GET", url, headers=setup.headers()) as watch,
    ):
        assert watch.status_code == 200
        assert setup.metric("hpcgate_edge_requests_in_flight") == idle + 1


async def test_readyz_follows_the_server_and_healthz_does_not(setup: Setup) -> None:
    async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json() == {"status": "ready"}

        assert setup.server is not None
        await setup.server.stop(grace=0)
        setup.server = None
        unavailable = setup.metric("hpcgate_edge_upstream_errors_total", code="UNAVAILABLE")
        await asyncio.sleep(READY_TTL + 0.1)  # past the cached verdict
        down = await http.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.json()["data"]["reason"] == "SERVER_UNAVAILABLE"
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        # A call that cannot reach the server counts as an upstream error.
        refused = await http.get("/status/systems", headers=setup.headers())
        assert refused.status_code == 503
        assert (
            setup.metric("hpcgate_edge_upstream_errors_total", code="UNAVAILABLE")
            >= unavailable + 1
        )

        setup.server = await start(setup.settings, setup.listen)
        for _ in range(60):  # the channel reconnects with backoff
            back = await http.get("/readyz")
            if back.status_code == 200:
                break
            await asyncio.sleep(0.5)
        assert back.status_code == 200, back.text
