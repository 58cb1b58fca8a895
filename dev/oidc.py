"""A local OpenID Connect provider: client-credentials tokens for alice and bob.

``make run`` starts it on loopback beside the server and the edge, and the
tests start it too, so that programs built on pyfirecrest's
``ClientCredentialsAuth`` get short-lived tokens from a token endpoint as they
do from a site's Keycloak, and the server finds the signing keys as in
production: from the discovery document (``/.well-known/openid-configuration``)
and its ``jwks_uri``.

The OAuth 2.0 side (client authentication by ``client_secret_basic`` or
``client_secret_post``, the client-credentials grant, RFC 9068 JWT access
tokens) is Authlib's; this module only binds it to Starlette, which Authlib
has no server integration for, and keeps the clients and keys.

Run as a process: ``python dev/oidc.py --state DIR --port PORT``. Its clients
and keys live in ``DIR/oidc.json`` (mode 0600), so a restart keeps the
secrets and key ids; SIGHUP rotates the signing key.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from authlib.common.security import generate_token
from authlib.oauth2 import rfc6749
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devkeys import DEV_AUDIENCE as AUDIENCE  # the server's auth.audience

log = logging.getLogger("hpcgate.dev.oidc")

USERNAME_CLAIM = "preferred_username"  # the server's auth.username_claim
TOKEN_LIFETIME = 300
USERS = ("alice", "bob")
# Keys the JWKS keeps publishing: the signing key and the one it replaced,
# so tokens signed just before a rotation stay valid until they expire.
PUBLISHED_KEYS = 2
GRANT_TYPE = "client_credentials"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class Client(rfc6749.ClientMixin):  # type: ignore[misc]
    """A confidential client that acts as one user (the machine account of that user)."""

    client_id: str
    client_secret: str
    username: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE


class TokenGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """The client-credentials grant, with both ways of sending the client's secret."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


@dataclass
class KeyRing:
    """RSA signing keys, newest last; the newest signs, the last PUBLISHED_KEYS are published."""

    keys: list[RSAKey] = field(default_factory=list)

    @classmethod
    def generate(cls) -> KeyRing:
        ring = cls()
        ring.rotate()
        return ring

    def rotate(self) -> RSAKey:
        """A new signing key; the oldest beyond PUBLISHED_KEYS is dropped."""
        key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, private=True)
        key.ensure_kid()
        self.keys = [*self.keys, key][-PUBLISHED_KEYS:]
        return key

    @property
    def signing(self) -> RSAKey:
        return self.keys[-1]

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}


class TokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens with the claims hpcgate's server checks."""

    def __init__(self, issuer: str, ring: KeyRing, lifetime: int) -> None:
        super().__init__(issuer, alg="RS256", expires_generator=lifetime)
        self._ring = ring

    def get_jwks(self) -> KeySet:
        # Only the signing key: joserfc signs with the set's one key and names its kid.
        return KeySet([self._ring.signing])

    def get_audiences(self, client: Client, user: Any, scope: str) -> str:
        return AUDIENCE

    def get_extra_claims(
        self, client: Client, grant_type: str, user: Any, scope: str
    ) -> dict[str, Any]:
        # The client acts as its user: the token names that user, as a
        # Keycloak service account with a username mapper does.
        return {USERNAME_CLAIM: client.username, "sub": client.username, "nbf": int(time.time())}


class StarletteRequest(rfc6749.OAuth2Request):  # type: ignore[misc]
    """A Starlette request, its form already read (Authlib's request API is synchronous)."""

    def __init__(self, request: Request, form: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._form = form
        self.payload = rfc6749.requests.BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class AuthorizationServer(rfc6749.AuthorizationServer):  # type: ignore[misc]
    """Authlib's authorization server, answering with Starlette responses."""

    def __init__(self, clients: dict[str, Client], generator: TokenGenerator) -> None:
        super().__init__()
        self._clients = clients
        self.register_token_generator("default", generator)
        self.register_grant(TokenGrant)

    def query_client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: rfc6749.OAuth2Request) -> None:
        """Nothing to keep: the tokens are self-contained JWTs."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal system here."""

    def create_oauth2_request(self, request: StarletteRequest) -> StarletteRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        return JSONResponse(body, status_code=status, headers=dict(headers))


class Provider:
    """The provider's state (issuer, clients, keys) and its ASGI application."""

    def __init__(
        self,
        issuer: str,
        clients: dict[str, Client],
        ring: KeyRing,
        lifetime: int = TOKEN_LIFETIME,
        state: Path | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.clients = clients
        self.ring = ring
        self.lifetime = lifetime
        self._state = state
        generator = TokenGenerator(self.issuer, ring, lifetime)
        self._server = AuthorizationServer(clients, generator)
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    @classmethod
    def create(cls, issuer: str, lifetime: int = TOKEN_LIFETIME) -> Provider:
        """A provider with fresh secrets and a fresh key, kept in memory only."""
        return cls(issuer, _new_clients(), KeyRing.generate(), lifetime)

    @classmethod
    def load_or_create(cls, issuer: str, state: Path, lifetime: int = TOKEN_LIFETIME) -> Provider:
        """The provider whose clients and keys are in ``state``, created there if missing."""
        if state.exists():
            saved = json.loads(state.read_text())
            clients = {c["client_id"]: Client(**c) for c in saved["clients"]}
            ring = KeyRing([RSAKey.import_key(key) for key in saved["keys"]])
            provider = cls(issuer, clients, ring, lifetime, state)
        else:
            provider = cls(issuer, _new_clients(), KeyRing.generate(), lifetime, state)
            provider.save()
        return provider

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    def client_of(self, username: str) -> Client:
        return next(client for client in self.clients.values() if client.username == username)

    def facts(self) -> dict[str, Any]:
        """What dev.json says of the provider."""
        clients = {
            c.username: {"client_id": c.client_id, "client_secret": c.client_secret}
            for c in self.clients.values()
        }
        return {"issuer": self.issuer, "token_url": self.token_url, "clients": clients}

    def token(self, username: str, lifetime: int | None = None) -> str:
        """A token for ``username``'s client, as the token endpoint issues (for ``make run``)."""
        generator = TokenGenerator(self.issuer, self.ring, lifetime or self.lifetime)
        token: str = generator.access_token_generator(
            self.client_of(username), GRANT_TYPE, None, ""
        )
        return token

    def rotate(self) -> str:
        """Sign with a new key from now on; returns its kid."""
        kid = self.ring.rotate().kid
        assert kid is not None  # KeyRing.rotate gives every key one
        self.save()
        log.info("rotated the signing key to %s", kid)
        return kid

    def save(self) -> None:
        if self._state is None:
            return
        saved = {
            "clients": [vars(client) for client in self.clients.values()],
            "keys": [key.as_dict(private=True) for key in self.ring.keys],
        }
        self._state.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._state.with_suffix(".tmp")
        temporary.touch(mode=0o600)
        temporary.write_text(json.dumps(saved))
        temporary.replace(self._state)

    def discovery(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 metadata: what this provider actually offers."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": f"{self.issuer}/jwks",
            "grant_types_supported": [GRANT_TYPE],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", USERNAME_CLAIM],
        }

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(self.discovery())

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.ring.public_jwks())

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        response: Response = self._server.create_token_response(StarletteRequest(request, fields))
        return response


def _new_clients() -> dict[str, Client]:
    clients = (Client(f"hpcgate-{user}", generate_token(32), user) for user in USERS)
    return {client.client_id: client for client in clients}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True, help="directory of oidc.json")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=int, default=TOKEN_LIFETIME, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Authlib refuses plain http except to loopback: this provider is only ever there.
    issuer = f"http://127.0.0.1:{args.port}"
    provider = Provider.load_or_create(issuer, args.state / "oidc.json", args.lifetime)
    signal.signal(signal.SIGHUP, lambda *_: provider.rotate())
    log.info("OIDC provider %s (pid %d)", issuer, os.getpid())
    uvicorn.run(provider.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
