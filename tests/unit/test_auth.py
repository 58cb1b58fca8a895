"""Authentication end to end: real RSA keys, the real server and edge over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import SKELETON_CONFIG, Service, free_port, start_service
from devkeys import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from forged_tokens import MIN_REMAINING_LIFETIME, BadToken, bad_tokens
from hpcgate.server.auth import jwks
from hpcgate.server.auth.jwks import JwksError, url_fetcher
from hpcgate.server.auth.tokens import TokenValidator
from hpcgate.server.config import Settings, parse_config
from hpcgate.server.rpc.authentication import Authentication, current_identity
from hpcgate.server.rpc.method_table import MethodTable
from hpcgate.v1 import status_pb2, status_pb2_grpc

ISSUER = DevIssuer.generate("key-a")
CASES = bad_tokens(ISSUER)


def auth_settings(**auth: Any) -> Settings:
    section: dict[str, Any] = {
        "issuer": DEV_ISSUER,
        "audience": DEV_AUDIENCE,
        "min_remaining_lifetime": MIN_REMAINING_LIFETIME,
    }
    section.update(auth)
    return parse_config({**SKELETON_CONFIG, "auth": section})


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """Server and edge that trust ISSUER's key, from a JWKS file."""
    path = tmp_path_factory.mktemp("auth") / "jwks.json"
    ISSUER.write_jwks(path)
    async for service in start_service(auth_settings(jwks_file=str(path))):
        yield service


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason in the call's rich status (grpc-status-details-bin)."""
    trailers: Any = error.trailing_metadata()  # aio Metadata: (key, value) pairs
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = rpc_status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            assert status.message == error.details()
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    raise AssertionError(f"no ErrorInfo in the trailers of {error!r}")


async def list_systems(service: Service, token: str | None) -> status_pb2.ListSystemsResponse:
    stub = status_pb2_grpc.StatusStub(service.channel)
    metadata = bearer(token) if token is not None else None
    return await stub.ListSystems(status_pb2.ListSystemsRequest(), metadata=metadata)


async def grpc_refusal(service: Service, token: str | None) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_systems(service, token)
    return caught.value.code(), reason_of(caught.value)


async def rest_get(service: Service, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=service.rest_url) as client:
        return await client.get(path, headers=headers)


# --- refusals, over gRPC and over REST ------------------------------------------


async def test_valid_token_lists_systems(secured: Service) -> None:
    token = ISSUER.token("alice")
    reply = await list_systems(secured, token)
    assert [s.name for s in reply.systems] == ["daint", "eiger"]
    response = await rest_get(secured, "/status/systems", token)
    assert response.status_code == 200
    assert [s["name"] for s in response.json()["systems"]] == ["daint", "eiger"]


async def test_no_token(secured: Service) -> None:
    assert await grpc_refusal(secured, None) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    response = await rest_get(secured, "/status/systems", None)
    assert response.status_code == 401
    body = response.json()
    assert body["errorType"] == "error" and body["message"]
    assert body["data"]["reason"] == "TOKEN_MISSING"


async def test_not_bearer(secured: Service) -> None:
    async with httpx.AsyncClient(base_url=secured.rest_url) as client:
        response = await client.get("/status/systems", auth=("alice", "secret"))
    assert response.status_code == 401
    assert response.json()["data"]["reason"] == "TOKEN_MALFORMED"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_bad_token_refused_with_reason(secured: Service, case: BadToken) -> None:
    assert await grpc_refusal(secured, case.token) == (grpc.StatusCode.UNAUTHENTICATED, case.reason)
    response = await rest_get(secured, "/status/systems", case.token)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["errorType"] == "error" and body["message"]
    assert body["data"]["reason"] == case.reason


async def test_refusal_covers_streaming_rpcs(secured: Service) -> None:
    # WatchJobs is server streaming; its refusal comes before any reply.
    response = await rest_get(secured, "/compute/daint/jobs/watch", None)
    assert response.status_code == 401
    assert response.json()["data"]["reason"] == "TOKEN_MISSING"


# --- public methods -------------------------------------------------------------


async def test_liveness_health_and_reflection_need_no_token(secured: Service) -> None:
    status = status_pb2_grpc.StatusStub(secured.channel)
    await status.GetLiveness(status_pb2.GetLivenessRequest())
    response = await rest_get(secured, "/status/liveness/", None)
    assert response.status_code == 200

    health = health_pb2_grpc.HealthStub(secured.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = [s.name async for answer in call for s in answer.list_services_response.service]
    assert "hpcgate.v1.Status" in services


# --- the identity reaches the servicer ------------------------------------------


def _raw(data: bytes) -> bytes:
    return data


async def _who(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0)  # the identity survives awaits
    return current_identity().username.encode()


async def _who_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(2):
        await asyncio.sleep(0)
        yield current_identity().username.encode()


async def test_identity_is_visible_to_servicers(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    ISSUER.write_jwks(path)
    settings = auth_settings(jwks_file=str(path))
    assert settings.auth is not None
    server = grpc.aio.server()
    # Only a generic handler, as hand-written services have: the table
    # wraps its methods on their first call.
    table = MethodTable([Authentication(TokenValidator(settings.auth))])
    table.install(server)
    table.add_generic(
        [
            grpc.method_handlers_generic_handler(
                "test.Who",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_who),
                    "Stream": grpc.unary_stream_rpc_method_handler(_who_stream),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/test.Who/Unary", _raw, _raw)
            stream = channel.unary_stream("/test.Who/Stream", _raw, _raw)
            alice, bob = bearer(ISSUER.token("alice")), bearer(ISSUER.token("bob"))
            replies = await asyncio.gather(
                unary(b"", metadata=alice), unary(b"", metadata=bob), unary(b"", metadata=alice)
            )
            assert list(replies) == [b"alice", b"bob", b"alice"]
            assert [r async for r in stream(b"", metadata=bob)] == [b"bob", b"bob"]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unary(b"")
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(None)


# --- key rotation ---------------------------------------------------------------


async def test_rotated_key_is_picked_up_after_the_refresh_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []
    read = jwks.read_jwks_file

    def counting(path: Path) -> bytes:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(jwks, "read_jwks_file", counting)
    path = tmp_path / "jwks.json"
    ISSUER.write_jwks(path)
    rotated = DevIssuer.generate("key-b")
    token = rotated.token("alice")
    interval = 1.0
    settings = auth_settings(jwks_file=str(path), jwks_refresh_interval=interval)
    async for service in start_service(settings):
        # The first call loads the set (key A only): key B is unknown.
        assert (await grpc_refusal(service, token))[1] == "TOKEN_UNKNOWN_KEY"
        assert len(reads) == 1
        rotated.write_jwks(path)  # the issuer rotates to key B
        # Within the refresh interval the file is not read again.
        assert (await grpc_refusal(service, token))[1] == "TOKEN_UNKNOWN_KEY"
        response = await rest_get(service, "/status/systems", token)
        assert response.json()["data"]["reason"] == "TOKEN_UNKNOWN_KEY"
        assert len(reads) == 1
        await asyncio.sleep(interval * 1.2)
        reply = await list_systems(service, token)
        assert [s.name for s in reply.systems] == ["daint", "eiger"]
        assert len(reads) == 2
        # Key A was withdrawn with the rotation.
        assert (await grpc_refusal(service, ISSUER.token("alice")))[1] == "TOKEN_UNKNOWN_KEY"


# --- a JWKS served over HTTP ----------------------------------------------------


class JwksServer:
    """A JWKS endpoint on loopback that counts its GETs."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = ISSUER.jwks()
        self.status = 200
        self.gets = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.gets += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join()


async def test_jwks_url_fetched_once_for_concurrent_callers(jwks_server: JwksServer) -> None:
    async for service in start_service(auth_settings(jwks_url=jwks_server.url)):
        token = ISSUER.token("alice")
        replies = await asyncio.gather(*(list_systems(service, token) for _ in range(20)))
        assert all(len(reply.systems) == 2 for reply in replies)
        assert jwks_server.gets == 1


async def test_url_fetcher_reports_http_errors(jwks_server: JwksServer) -> None:
    fetch = url_fetcher(jwks_server.url)
    assert json.loads(await fetch()) == ISSUER.jwks()
    jwks_server.status = 404
    with pytest.raises(JwksError, match="HTTP 404"):
        await fetch()
    with pytest.raises(JwksError, match="cannot fetch"):
        await url_fetcher(f"http://127.0.0.1:{free_port()}/jwks.json", timeout=2)()


async def test_jwks_url_down_is_unavailable(jwks_server: JwksServer) -> None:
    jwks_server.status = 500
    async for service in start_service(auth_settings(jwks_url=jwks_server.url)):
        code, reason = await grpc_refusal(service, ISSUER.token("alice"))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "JWKS_UNAVAILABLE")
        response = await rest_get(service, "/status/systems", ISSUER.token("alice"))
        assert response.status_code == 503
        assert response.json()["data"]["reason"] == "JWKS_UNAVAILABLE"
