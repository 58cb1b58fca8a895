"""Reading the JWKS location from an issuer's OpenID Connect discovery document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hpcgate.server.auth.jwks import JwksError, discovery_url, jwks_uri_of

ISSUER = "https://idp.example.org/realms/hpc"


def document(**fields: Any) -> bytes:
    return json.dumps({"issuer": ISSUER, "jwks_uri": f"{ISSUER}/certs", **fields}).encode()


def test_discovery_url_follows_the_spec() -> None:
    expected = f"{ISSUER}/.well-known/openid-configuration"
    assert discovery_url(ISSUER) == expected
    assert discovery_url(ISSUER + "/") == expected


def test_jwks_uri_of_a_good_document() -> None:
    assert jwks_uri_of(document(), ISSUER) == f"{ISSUER}/certs"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (document(issuer="https://evil.example.org"), "names issuer"),
        (document(issuer=None), "names issuer"),
        (document(jwks_uri=None), "no http"),
        (document(jwks_uri="file:///etc/passwd"), "no http"),
    ],
)
def test_bad_documents_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(JwksError, match=problem):
        jwks_uri_of(data, ISSUER)
