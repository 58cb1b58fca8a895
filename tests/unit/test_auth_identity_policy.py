"""The identity policy end to end, over gRPC and REST: real keys, the real server and edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from unit.test_auth import grpc_refusal, list_systems, rest_get

from conftest import SKELETON_CONFIG, Service, start_service
from devkeys import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from forged_tokens import claims_for, signed
from hpcgate.server.config import parse_config

ISSUER = DevIssuer.generate("key-policy")
SERVICE_ACCOUNT = "hpcgate-svc"
MAX_TOKEN_BYTES = 4096  # small, so that REST's test token stays far below any header limit


@pytest.fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """Server and edge with the default policy, a service account and a token size limit."""
    path = tmp_path_factory.mktemp("policy") / "jwks.json"
    ISSUER.write_jwks(path)
    auth: dict[str, Any] = {
        "jwks_file": str(path),
        "issuer": DEV_ISSUER,
        "audience": DEV_AUDIENCE,
        "max_token_bytes": MAX_TOKEN_BYTES,
    }
    config = {**SKELETON_CONFIG, "auth": auth, "credentials": {"service_account": SERVICE_ACCOUNT}}
    async for service in start_service(parse_config(config)):
        yield service


async def assert_refused(
    service: Service, token: str, code: grpc.StatusCode, status: int, reason: str
) -> None:
    """Refused over gRPC with ``code`` and over REST with ``status``, both with ``reason``."""
    assert await grpc_refusal(service, token) == (code, reason)
    response = await rest_get(service, "/status/systems", token)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"]["reason"] == reason
    assert body["message"]


@pytest.mark.parametrize(
    ("username", "reason"),
    [(SERVICE_ACCOUNT, "TOKEN_SERVICE_ACCOUNT"), ("root", "TOKEN_USER_DENIED")],
)
async def test_denied_accounts(guarded: Service, username: str, reason: str) -> None:
    token = ISSUER.token(username)
    await assert_refused(guarded, token, grpc.StatusCode.PERMISSION_DENIED, 403, reason)


async def test_day_long_tokens_work_and_longer_ones_do_not(guarded: Service) -> None:
    # make run's tokens live 24 h: exactly the default maximum.
    reply = await list_systems(guarded, ISSUER.token("alice", lifetime=24 * 3600))
    assert [system.name for system in reply.systems] == ["daint", "eiger"]
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    for claims in (claims_for(ISSUER, exp=10**20), claims_for(ISSUER, exp=10**20, iat=None)):
        token = signed(ISSUER, claims)
        await assert_refused(guarded, token, unauthenticated, 401, "TOKEN_LIFETIME_TOO_LONG")


async def test_oversized_tokens_are_refused_by_the_server(guarded: Service) -> None:
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    # Just over the limit: refused over both protocols with the server's reason.
    token = ISSUER.token("alice", padding="x" * MAX_TOKEN_BYTES)
    await assert_refused(guarded, token, unauthenticated, 401, "TOKEN_TOO_LARGE")
    # 100 KB over gRPC: beyond gRPC's 8 KiB default metadata limit, yet the
    # server's own refusal, not transport text.
    huge = ISSUER.token("alice", padding="x" * 100_000)
    assert await grpc_refusal(guarded, huge) == (unauthenticated, "TOKEN_TOO_LARGE")
    # The connection stays usable.
    reply = await list_systems(guarded, ISSUER.token("alice"))
    assert len(reply.systems) == 2
