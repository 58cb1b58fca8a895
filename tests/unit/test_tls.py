"""The server's gRPC listener over TLS and mutual TLS (``server.tls``), with dev CA certificates.

A real server on loopback, real handshakes: a client that trusts the CA
gets answers; a plaintext client, one that does not trust the CA, and
(with ``client_ca``) one without a client certificate are refused at the
handshake, before any call, so no token crosses the socket in clear.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import SKELETON_CONFIG, serve_asgi
from devtls import DevCA
from hpcgate.edge import create_app
from hpcgate.edge.upstream import UpstreamTLS
from hpcgate.server.app import Running, start
from hpcgate.server.config import ConfigError, parse_config

HEALTH = health_pb2.HealthCheckRequest(service="")
ANY_TOKEN = {"Authorization": "Bearer e30.e30.x"}  # the skeleton checks no token's signature


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.load_or_create(tmp_path_factory.mktemp("tls"))


def _settings(tls: dict[str, Any]) -> Any:
    config = copy.deepcopy(SKELETON_CONFIG)
    config["server"] = {"metrics_listen": None, "tls": tls}
    return parse_config(config)


async def _started(tls: dict[str, Any]) -> AsyncIterator[tuple[Running, str]]:
    running = await start(_settings(tls), "127.0.0.1:0")
    try:
        yield running, f"localhost:{running.port}"
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def tls_server(ca: DevCA) -> AsyncIterator[tuple[Running, str]]:
    tls = {"certificate": str(ca.server.certificate), "key": {"file": str(ca.server.key)}}
    async for started in _started(tls):
        yield started


@pytest.fixture
async def mtls_server(ca: DevCA) -> AsyncIterator[tuple[Running, str]]:
    tls = {
        "certificate": str(ca.server.certificate),
        "key": {"file": str(ca.server.key)},
        "client_ca": str(ca.ca),
    }
    async for started in _started(tls):
        yield started


async def _check(
    channel: grpc.aio.Channel,
) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    reply = await health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=5)
    return reply.status


def _credentials(ca: DevCA, client: bool = False) -> grpc.ChannelCredentials:
    if not client:
        return grpc.ssl_channel_credentials(ca.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        ca.ca.read_bytes(), ca.client.key.read_bytes(), ca.client.certificate.read_bytes()
    )


async def test_a_client_trusting_the_ca_is_answered(
    ca: DevCA, tls_server: tuple[Running, str]
) -> None:
    _, target = tls_server
    async with grpc.aio.secure_channel(target, _credentials(ca)) as channel:
        assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(tls_server: tuple[Running, str]) -> None:
    _, target = tls_server
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_client_not_trusting_the_ca_is_refused(
    tmp_path: Path, tls_server: tuple[Running, str]
) -> None:
    _, target = tls_server
    other = DevCA.load_or_create(tmp_path / "other")
    async with grpc.aio.secure_channel(target, _credentials(other)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_wants_a_client_certificate_the_ca_signed(
    ca: DevCA, tmp_path: Path, mtls_server: tuple[Running, str]
) -> None:
    _, target = mtls_server
    async with grpc.aio.secure_channel(target, _credentials(ca, client=True)) as channel:
        assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.secure_channel(target, _credentials(ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await _check(channel)
    assert anonymous.value.code() is grpc.StatusCode.UNAVAILABLE
    stranger = DevCA.load_or_create(tmp_path / "stranger")
    foreign = grpc.ssl_channel_credentials(
        ca.ca.read_bytes(),
        stranger.client.key.read_bytes(),
        stranger.client.certificate.read_bytes(),
    )
    async with grpc.aio.secure_channel(target, foreign) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await _check(channel)
    assert forged.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_the_edge_reaches_a_mutual_tls_server_with_its_certificate(
    ca: DevCA, mtls_server: tuple[Running, str]
) -> None:
    _, target = mtls_server
    tls = UpstreamTLS(ca.ca, ca.client.certificate, ca.client.key)
    web, task, url = await serve_asgi(create_app(target, tls=tls))
    try:
        async with httpx.AsyncClient(base_url=url, headers=ANY_TOKEN) as http:
            reply = await http.get("/status/systems")
        assert reply.status_code == 200, reply.text
    finally:
        web.should_exit = True
        await task
    # Without its certificate the same edge is refused at the handshake: 503, never plaintext.
    web, task, url = await serve_asgi(create_app(target, tls=UpstreamTLS(ca.ca)))
    try:
        async with httpx.AsyncClient(base_url=url, headers=ANY_TOKEN) as http:
            reply = await http.get("/status/systems")
        assert reply.status_code == 503, reply.text
    finally:
        web.should_exit = True
        await task


async def test_an_unreadable_certificate_stops_the_start_with_the_key_named(
    ca: DevCA, tmp_path: Path
) -> None:
    tls = {"certificate": str(tmp_path / "missing.pem"), "key": {"file": str(ca.server.key)}}
    with pytest.raises(ConfigError, match=r"server\.tls: cannot read .*missing\.pem"):
        await start(_settings(tls), "127.0.0.1:0")


def test_the_dev_ca_is_reused_while_valid(tmp_path: Path) -> None:
    first = DevCA.load_or_create(tmp_path)
    pem = first.ca.read_bytes()
    assert DevCA.load_or_create(tmp_path).ca.read_bytes() == pem
    assert first.server.key.stat().st_mode & 0o077 == 0
