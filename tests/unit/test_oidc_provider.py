"""The local OIDC provider (dev/oidc.py) on its own, and a server whose issuer cannot be found.

Tokens come from the provider's token endpoint over HTTP, as a site's users
get them (:func:`fetch_token`, also used by the tests of a server trusting
the provider on the loopback cluster, tests/integration/test_oidc.py).
"""

from __future__ import annotations

import base64

import grpc
import httpx
import jwt
import pytest
from unit.test_auth import grpc_refusal, rest_get

from conftest import OIDC_TEST_LIFETIME, SKELETON_CONFIG, free_port, start_service
from devkeys import DEV_AUDIENCE
from hpcgate.server.config import parse_config
from oidc import Provider


async def fetch_token(provider: Provider, user: str, method: str = "client_secret_post") -> str:
    """A token from the provider's token endpoint, authenticating the client by ``method``."""
    client = provider.client_of(user)
    data = {"grant_type": "client_credentials"}
    headers = {}
    if method == "client_secret_basic":
        pair = f"{client.client_id}:{client.client_secret}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        data.update(client_id=client.client_id, client_secret=client.client_secret)
    async with httpx.AsyncClient() as http:
        response = await http.post(provider.token_url, data=data, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] == OIDC_TEST_LIFETIME
    token: str = body["access_token"]
    return token


async def test_discovery_document_and_jwks(oidc: Provider) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{oidc.issuer}/.well-known/openid-configuration")
        assert response.status_code == 200
        document = response.json()
        assert document["issuer"] == oidc.issuer
        assert document["token_endpoint"] == oidc.token_url
        assert "client_credentials" in document["grant_types_supported"]
        methods = set(document["token_endpoint_auth_methods_supported"])
        assert methods == {"client_secret_basic", "client_secret_post"}
        jwks = (await http.get(document["jwks_uri"])).json()
    assert {key["kid"] for key in jwks["keys"]} >= {oidc.ring.signing.kid}
    assert all("d" not in key for key in jwks["keys"])  # public halves only


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_token_endpoint_issues_short_lived_tokens_for_the_clients_user(
    oidc: Provider, method: str
) -> None:
    token = await fetch_token(oidc, "bob", method)
    jwks = jwt.PyJWKSet.from_dict(oidc.ring.public_jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(key for key in jwks.keys if key.key_id == kid)
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=DEV_AUDIENCE, issuer=oidc.issuer)
    assert claims["preferred_username"] == "bob"
    assert claims["exp"] - claims["iat"] == OIDC_TEST_LIFETIME


async def test_token_endpoint_refuses_bad_clients(oidc: Provider) -> None:
    client = oidc.client_of("alice")
    async with httpx.AsyncClient() as http:
        wrong = {"grant_type": "client_credentials", "client_id": client.client_id}
        response = await http.post(oidc.token_url, data={**wrong, "client_secret": "nope"})
        assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"
        basic = "Basic " + base64.b64encode(f"{client.client_id}:nope".encode()).decode()
        response = await http.post(
            oidc.token_url,
            data={"grant_type": "client_credentials"},
            headers={"authorization": basic},
        )
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        response = await http.post(
            oidc.token_url,
            data={"grant_type": "password", "username": "alice", "password": "x"},
            auth=(client.client_id, client.client_secret),
        )
        assert response.json()["error"] == "unsupported_grant_type"


async def test_issuer_whose_discovery_fails_is_unavailable(oidc: Provider) -> None:
    # A provider that is down, and an issuer URL where no discovery document is.
    for issuer in (f"http://127.0.0.1:{free_port()}", oidc.issuer + "/other"):
        auth = {"issuer": issuer, "audience": DEV_AUDIENCE}
        async for service in start_service(parse_config({**SKELETON_CONFIG, "auth": auth})):
            token = await fetch_token(oidc, "alice")
            code, reason = await grpc_refusal(service, token)
            assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "JWKS_UNAVAILABLE")
            response = await rest_get(service, "/status/systems", token)
            assert response.status_code == 503
            assert issuer not in response.text  # the cause is in the server's log only
