"""Bad tokens for the auth tests, each with the reason it must be refused for.

Some can't be made with pyjwt (it refuses to sign with ``none`` or to use a
PEM public key as an HMAC secret), so they are put together by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from devkeys import DevIssuer

# The auth settings the table below is made for (plus the issuer's key in the JWKS).
MIN_REMAINING_LIFETIME = 60


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims_for(issuer: DevIssuer, username: str = "alice", **overrides: Any) -> dict[str, Any]:
    """The claims DevIssuer puts in a token, with ``overrides`` (None drops a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": username,
        "preferred_username": username,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def signed(issuer: DevIssuer, claims: dict[str, Any], **header: Any) -> str:
    """``claims`` signed RS256 with the issuer's key (header fields may be overridden)."""
    return jwt.encode(claims, issuer.key, algorithm="RS256", headers={"kid": issuer.kid, **header})


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` token: no signature at all."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}."


def hs256_with_public_key(issuer: DevIssuer, claims: dict[str, Any]) -> str:
    """Algorithm confusion: HMAC-signed with the RSA public key (PEM) as the secret."""
    secret = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.kid})}.{_segment(claims)}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tampered(issuer: DevIssuer) -> str:
    """Alice's genuine header and signature around a payload claiming to be root."""
    header, _, signature = signed(issuer, claims_for(issuer, "alice")).split(".")
    return f"{header}.{_segment(claims_for(issuer, 'root'))}.{signature}"


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class BadToken:
    """A refused token, minted when a test asks for it (times are relative to then)."""

    name: str
    make: Callable[[], str]
    reason: str

    @property
    def token(self) -> str:
        return self.make()


def bad_tokens(issuer: DevIssuer) -> list[BadToken]:
    """One token per refusal (the server trusts ``issuer``'s key only)."""
    stranger = DevIssuer.generate(kid="not-published")
    return [
        BadToken("garbage", lambda: "not-a-jwt", "TOKEN_MALFORMED"),
        BadToken("no exp", lambda: signed(issuer, claims_for(issuer, exp=None)), "TOKEN_MALFORMED"),
        BadToken(
            "expired", lambda: signed(issuer, claims_for(issuer, exp=_now() - 60)), "TOKEN_EXPIRED"
        ),
        BadToken(
            "nbf in the future",
            lambda: signed(issuer, claims_for(issuer, nbf=_now() + 600, exp=_now() + 7200)),
            "TOKEN_NOT_YET_VALID",
        ),
        BadToken(
            "wrong issuer",
            lambda: signed(issuer, claims_for(issuer, iss="https://evil.example")),
            "TOKEN_WRONG_ISSUER",
        ),
        BadToken(
            "no issuer", lambda: signed(issuer, claims_for(issuer, iss=None)), "TOKEN_WRONG_ISSUER"
        ),
        BadToken(
            "wrong audience",
            lambda: signed(issuer, claims_for(issuer, aud="someone-else")),
            "TOKEN_WRONG_AUDIENCE",
        ),
        BadToken(
            "alg none",
            lambda: unsigned(claims_for(issuer), issuer.kid),
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken(
            "HS256 with the public key",
            lambda: hs256_with_public_key(issuer, claims_for(issuer)),
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        BadToken("unknown kid", lambda: stranger.token("alice"), "TOKEN_UNKNOWN_KEY"),
        BadToken("tampered payload", lambda: tampered(issuer), "TOKEN_BAD_SIGNATURE"),
        BadToken(
            "lifetime too short",
            lambda: signed(issuer, claims_for(issuer, exp=_now() + MIN_REMAINING_LIFETIME // 2)),
            "TOKEN_LIFETIME_TOO_SHORT",
        ),
        BadToken(
            "no username",
            lambda: signed(issuer, claims_for(issuer, preferred_username=None)),
            "TOKEN_NO_USERNAME",
        ),
        BadToken(
            "unsafe username",
            lambda: signed(issuer, claims_for(issuer, preferred_username="-oProxyCommand=sh")),
            "TOKEN_BAD_USERNAME",
        ),
    ]
