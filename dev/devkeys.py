"""A development token issuer: an RSA key, its JWKS, and signed tokens.

Used by ``make run`` (dev/run.py), the tests and the benchmarks, so that the
server validates real tokens signed with a real key, exactly as it does a
site's OIDC tokens. It lives in dev/, imported as ``devkeys`` (on the path of
pytest, mypy, dev/run.py and bench), and not in the server's package: a
deployment has no use for a key issuer, and its wheel carries none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEV_ISSUER = "https://hpcgate.dev/issuer"
DEV_AUDIENCE = "hpcgate"


@dataclass(frozen=True)
class DevIssuer:
    """Signs tokens with one RSA key; publishes the key as a JWKS."""

    key: rsa.RSAPrivateKey
    kid: str
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE

    @classmethod
    def generate(cls, kid: str = "dev-1") -> DevIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)

    @classmethod
    def load_or_create(cls, path: Path, kid: str = "dev-1") -> DevIssuer:
        """The key in ``path`` (PEM), created there (mode 0600) if missing."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey), f"{path} is not an RSA key"
            return cls(key, kid)
        issuer = cls.generate(kid)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = issuer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
        return issuer

    def jwks(self) -> dict[str, Any]:
        """The public key set that a server trusts for these tokens."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def write_jwks(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.jwks(), indent=2))

    def token(self, username: str, lifetime: float = 12 * 3600, **claims: Any) -> str:
        """A signed RS256 token for ``username``; ``claims`` override the defaults."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": username,
            "preferred_username": username,
            "iat": now,
            "nbf": now - 5,
            "exp": now + int(lifetime),
        }
        payload.update(claims)
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})
