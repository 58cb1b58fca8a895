"""The server finding the local OIDC provider's keys as in production.

The server of ``oidc_live`` is configured with the provider's issuer only: it
reads the discovery document, then the JWKS it names. Tokens come from the
provider's token endpoint over HTTP, as a site's users get them.
"""

from __future__ import annotations

import asyncio

import grpc
import jwt
from unit.test_auth import grpc_refusal, list_systems, rest_get
from unit.test_oidc_provider import fetch_token

from conftest import OIDC_REFRESH_INTERVAL, Service
from devkeys import DevIssuer
from localsite import SYSTEM
from oidc import Provider


async def test_server_trusts_the_providers_tokens_through_discovery(
    oidc: Provider, oidc_live: Service
) -> None:
    token = await fetch_token(oidc, "alice", "client_secret_basic")
    reply = await list_systems(oidc_live, token)
    assert [system.name for system in reply.systems] == [SYSTEM]
    response = await rest_get(oidc_live, f"/filesystem/{SYSTEM}/ops/ls?path=/home/alice", token)
    assert response.status_code == 200, response.text
    # A token of another issuer (the tests' development key) is not trusted.
    code, _ = await grpc_refusal(oidc_live, DevIssuer.generate().token("alice"))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_rotated_key_is_picked_up_without_a_restart(
    oidc: Provider, oidc_live: Service
) -> None:
    before = await fetch_token(oidc, "alice")
    await list_systems(oidc_live, before)  # the server has loaded the current key set
    first_kid = jwt.get_unverified_header(before)["kid"]

    new_kid = oidc.rotate()
    assert new_kid != first_kid
    after = await fetch_token(oidc, "alice")
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    # An unknown kid refetches the keys at most once per refresh interval;
    # past it, the running server knows the new key.
    await asyncio.sleep(OIDC_REFRESH_INTERVAL * 1.2)
    reply = await list_systems(oidc_live, after)
    assert [system.name for system in reply.systems] == [SYSTEM]
    response = await rest_get(oidc_live, "/status/systems", after)
    assert response.status_code == 200, response.text
    # The replaced key is still published: tokens signed before the rotation stay good.
    await list_systems(oidc_live, before)

    # A second rotation retires the first key: its tokens are then refused.
    oidc.rotate()
    await asyncio.sleep(OIDC_REFRESH_INTERVAL * 1.2)
    await list_systems(oidc_live, await fetch_token(oidc, "alice"))
    assert await grpc_refusal(oidc_live, before) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_UNKNOWN_KEY",
    )
