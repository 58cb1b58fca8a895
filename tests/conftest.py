"""Shared fixtures: an in-process hpcgate server and edge on free loopback ports.

The server and the edge run in the test session's event loop but talk over
real sockets (gRPC over HTTP/2, REST over HTTP/1.1), exactly as the separate
processes of a deployment do.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import uvicorn
import uvloop
from firecrest.v2 import AsyncFirecrest

from devkeys import DevIssuer
from hpcgate.edge import create_app
from hpcgate.server.app import Running, start
from hpcgate.server.config import Settings, parse_config
from localsite import SYSTEM, local_config
from oidc import Provider

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first would
    from cluster_fixture import Cluster  # stop pytest from rewriting its asserts

pytest_plugins = ["cluster_fixture"]

UNIT_TESTS = Path(__file__).parent / "unit"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``cluster`` every test that needs the loopback cluster, and keep the layout true.

    A test needs it when it uses the ``cluster`` fixture, directly or through
    other fixtures (``live``, ``remote_dir``, ...), or carries the mark itself
    (it reaches the cluster some other way). ``make test-fast`` (``-m "not
    cluster"``) then runs exactly the tests that need none, and those live
    under tests/unit: a collected test on the wrong side of that line stops
    the run, naming it.
    """
    misplaced: list[str] = []
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
        needs_cluster = item.get_closest_marker("cluster") is not None
        if needs_cluster == item.path.is_relative_to(UNIT_TESTS):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "tests that need the cluster live outside tests/unit, and tests that need none in"
            " it (or mark one that reaches the cluster without the fixture"
            " @pytest.mark.cluster):\n  " + "\n  ".join(misplaced)
        )


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SKELETON_CONFIG: dict[str, Any] = {
    "systems": [
        {
            "name": "daint",
            "ssh": {"host": "daint.example.org", "port": 2222, "known_hosts_entry": "x"},
            "filesystems": [
                {"path": "/home", "data_type": "users", "default_work_dir": True},
                {"path": "/scratch", "data_type": "scratch"},
            ],
        },
        {
            "name": "eiger",
            "ssh": {"host": "eiger.example.org", "known_hosts_entry": "x"},
            "scheduler": {"type": "slurm", "version": "24.05"},
        },
    ]
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop, as ``hpcgate-server`` runs: the tests exercise that loop.

    (``hpcgate-edge`` runs on asyncio's own loop, see ``hpcgate.edge.serve``;
    the in-process edges of the tests share the server's.)
    """
    return {"uvloop": uvloop.new_event_loop}


@dataclass
class Service:
    """A running server and edge, with how to reach them."""

    settings: Settings
    running: Running
    grpc_target: str
    rest_url: str
    channel: grpc.aio.Channel


async def serve_asgi(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Serve ``app`` with uvicorn on a free loopback port; returns its base URL too."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


async def start_service(settings: Settings) -> AsyncIterator[Service]:
    """Start a server and an edge for ``settings`` on free ports (metrics too)."""
    server = settings.server.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    running = await start(settings.model_copy(update={"server": server}), "127.0.0.1:0")
    target = f"127.0.0.1:{running.port}"
    edge, edge_task, url = await serve_asgi(create_app(target))
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Service(settings, running, target, url, channel)
    finally:
        await channel.close(None)
        edge.should_exit = True
        await edge_task
        await running.stop(grace=1)


@pytest.fixture(scope="session")
async def skeleton() -> AsyncIterator[Service]:
    """Server and edge configured with two fake systems (no cluster needed)."""
    async for service in start_service(parse_config(SKELETON_CONFIG)):
        yield service


@dataclass
class LiveService(Service):
    """The service configured for the loopback cluster, with a token issuer."""

    issuer: DevIssuer
    system: str

    def token(self, user: str) -> str:
        return self.issuer.token(user)

    def metadata(self, user: str) -> list[tuple[str, str]]:
        """gRPC call metadata authenticating as ``user``."""
        return [("authorization", f"Bearer {self.token(user)}")]

    def headers(self, user: str) -> dict[str, str]:
        """HTTP headers authenticating as ``user``."""
        return {"Authorization": f"Bearer {self.token(user)}"}


def live_settings(cluster: Cluster, jwks: Path, plugin: str = "slurm", **system: Any) -> Settings:
    """Settings for the loopback cluster; ``system`` overrides keys of the system.

    ``plugin`` is the scheduler plug-in (localsite.SCHEDULERS) the system uses.
    """
    config = local_config(cluster.raw, jwks, scheduler=plugin)
    config["systems"][0].update({"probing": {"interval": 2, "timeout": 5}, **system})
    return parse_config(config)


async def _live(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, scheduler: str
) -> AsyncIterator[LiveService]:
    """Server and edge on the loopback cluster with the ``scheduler`` plug-in, real tokens."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("live") / "jwks.json"
    issuer.write_jwks(jwks)
    settings = live_settings(cluster, jwks, scheduler)
    async for service in start_service(settings):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


@pytest.fixture(scope="session")
async def live_cli(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """Server and edge on the loopback cluster, with real tokens (shared by the session)."""
    async for service in _live(cluster, tmp_path_factory, "slurm"):
        yield service


@pytest.fixture(scope="session")
def live(live_cli: LiveService) -> LiveService:
    """The service of most tests: the scheduler reached by its commands over SSH."""
    return live_cli


@pytest.fixture(scope="session")
async def live_rest(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """As ``live``, the scheduler reached through slurmrestd (the ``slurm-rest`` plug-in)."""
    async for service in _live(cluster, tmp_path_factory, "slurm-rest"):
        yield service


# The scheduler plug-ins the scheduler tests run once each with (see live_per_plugin).
PLUGINS = ("slurm", "slurm-rest")


def live_per_plugin(request: pytest.FixtureRequest) -> LiveService:
    """The ``live`` service of the plug-in ``request.param`` names.

    A test module runs its tests once per plug-in by overriding ``live``
    with a fixture parametrised over :data:`PLUGINS` that returns this:
    the same tests, the same answers.
    """
    name = "live_cli" if request.param == "slurm" else "live_rest"
    service: LiveService = request.getfixturevalue(name)
    return service


# Short enough that a test outlives a token, long enough for a few calls per token.
OIDC_TEST_LIFETIME = 20


@pytest.fixture(scope="session")
def oidc() -> Iterator[Provider]:
    """The local OIDC provider (dev/oidc.py) on loopback, issuing 20-second tokens.

    It runs in a thread of its own, as a separate process would: pyfirecrest's
    ClientCredentialsAuth fetches tokens with blocking ``requests`` even in its
    async client, which would otherwise stall the loop serving the provider.
    """
    port = free_port()
    provider = Provider.create(f"http://127.0.0.1:{port}", lifetime=OIDC_TEST_LIFETIME)
    config = uvicorn.Config(provider.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="oidc-provider", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the OIDC provider did not start")
        time.sleep(0.01)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join()


# How soon a server trusting the provider refetches its keys for an unknown kid.
OIDC_REFRESH_INTERVAL = 1.0


@pytest.fixture(scope="session")
async def oidc_live(cluster: Cluster, oidc: Provider) -> AsyncIterator[Service]:
    """Server and edge on the loopback cluster trusting the local OIDC provider.

    Configured as a production site is: only the issuer, whose discovery
    document names the JWKS.
    """
    config = local_config(cluster.raw, issuer=oidc.issuer)
    config["auth"]["jwks_refresh_interval"] = OIDC_REFRESH_INTERVAL
    config["systems"][0]["probing"] = {"interval": 2, "timeout": 5}
    async for service in start_service(parse_config(config)):
        for system in service.running.runtime.systems.values():
            await system.health.wait_first_run()
        yield service


class StaticToken:
    """pyfirecrest's authorization contract: any object with ``get_access_token()``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_access_token(self) -> str:
        return self._token


@pytest.fixture
async def client(live: LiveService) -> AsyncIterator[AsyncFirecrest]:
    """The official pyfirecrest v2 client, unchanged, as alice against the edge."""
    firecrest = AsyncFirecrest(live.rest_url, StaticToken(live.token("alice")))
    try:
        yield firecrest
    finally:
        await firecrest.close_session()


@pytest.fixture
async def remote_dir(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh directory of alice's on the cluster, removed after the test."""
    path = f"/home/alice/test-{uuid.uuid4().hex[:12]}"
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "--", path]), check=True)
        try:
            yield path
        finally:
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)
