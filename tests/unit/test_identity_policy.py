"""The identity policy of token validation: who may not log in, how long a token may live.

Real RS256 tokens, validated by the server's TokenValidator against a key set in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from devkeys import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from forged_tokens import claims_for, signed
from hpcgate.server.auth.jwks import JwksSource
from hpcgate.server.auth.tokens import TokenValidator
from hpcgate.server.config import AuthConfig, ConfigError, parse_config
from hpcgate.server.errors import ErrorKind, ServiceError

ISSUER = DevIssuer.generate("key-a")
DAY = 24 * 3600


def validator(service_account: str | None = "hpcgate-svc", **auth: Any) -> TokenValidator:
    config = AuthConfig.model_validate(
        {"jwks_file": "/unused", "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, **auth}
    )

    async def fetch() -> bytes:
        return json.dumps(ISSUER.jwks()).encode()

    return TokenValidator(
        config, JwksSource(fetch, refresh_interval=300), service_account=service_account
    )


async def refusal(validator: TokenValidator, token: str) -> tuple[ErrorKind, str]:
    with pytest.raises(ServiceError) as caught:
        await validator.validate(token)
    return caught.value.code, caught.value.reason


async def test_service_account_is_refused_with_its_own_reason() -> None:
    check = validator()
    assert await refusal(check, ISSUER.token("hpcgate-svc")) == (
        ErrorKind.PERMISSION_DENIED,
        "TOKEN_SERVICE_ACCOUNT",
    )
    assert (await check.validate(ISSUER.token("alice"))).username == "alice"


async def test_denied_users_default_to_root_and_are_configurable() -> None:
    assert await refusal(validator(), ISSUER.token("root")) == (
        ErrorKind.PERMISSION_DENIED,
        "TOKEN_USER_DENIED",
    )
    check = validator(denied_users=["bob", "admin"])
    assert (await refusal(check, ISSUER.token("admin")))[1] == "TOKEN_USER_DENIED"
    assert (await refusal(check, ISSUER.token("bob")))[1] == "TOKEN_USER_DENIED"
    # The list replaces the default: root is then allowed by this policy.
    assert (await check.validate(ISSUER.token("root"))).username == "root"
    # A refused account is not remembered as verified: it is refused every time.
    assert (await refusal(check, ISSUER.token("bob")))[1] == "TOKEN_USER_DENIED"


async def test_a_day_long_token_is_accepted_a_longer_one_is_not() -> None:
    check = validator()
    assert (await check.validate(ISSUER.token("alice", lifetime=DAY))).username == "alice"
    code, reason = await refusal(check, ISSUER.token("alice", lifetime=DAY + 60))
    assert (code, reason) == (ErrorKind.UNAUTHENTICATED, "TOKEN_LIFETIME_TOO_LONG")


# Claims as functions of the time the test runs: computed at collection, a
# token valid for a minute had expired by the time a long suite reached it.
@pytest.mark.parametrize(
    "overrides",
    [
        lambda now: {"exp": 10**20},  # issued now, valid for 3 trillion years
        lambda now: {"exp": 10**20, "iat": None},
        lambda now: {"exp": 10**400},  # larger than any float
        lambda now: {"exp": 1e300, "iat": None},
        lambda now: {"exp": now + 60, "iat": -(10**400)},
        lambda now: {"exp": now + 2 * DAY, "iat": None},  # judged by exp - now
        lambda now: {"exp": now + 3600, "iat": now - 2 * DAY},
    ],
    ids=[
        "exp-1e20",
        "exp-1e20-no-iat",
        "exp-1e400",
        "exp-float-no-iat",
        "iat-minus-1e400",
        "2d-no-iat",
        "old-iat",
    ],
)
async def test_too_long_lifetimes_are_refused(
    overrides: Callable[[int], dict[str, Any]],
) -> None:
    token = signed(ISSUER, claims_for(ISSUER, **overrides(int(time.time()))))
    assert await refusal(validator(), token) == (
        ErrorKind.UNAUTHENTICATED,
        "TOKEN_LIFETIME_TOO_LONG",
    )


async def test_short_tokens_without_iat_are_accepted_and_iat_must_be_a_number() -> None:
    check = validator()
    token = signed(ISSUER, claims_for(ISSUER, iat=None, exp=int(time.time()) + 600))
    assert (await check.validate(token)).username == "alice"
    # pyjwt takes anything int() takes; a string iat is not a number by RFC 7519.
    token = signed(ISSUER, claims_for(ISSUER, iat=str(int(time.time()))))
    assert (await refusal(check, token))[1] == "TOKEN_MALFORMED"


async def test_configured_maximum_lifetime() -> None:
    check = validator(max_token_lifetime=300)
    assert (await check.validate(ISSUER.token("alice", lifetime=300))).username == "alice"
    assert (await refusal(check, ISSUER.token("alice", lifetime=301)))[1] == (
        "TOKEN_LIFETIME_TOO_LONG"
    )
    # Clock skew tolerance applies to the lifetime too.
    lenient = validator(max_token_lifetime=300, leeway=30)
    assert (await lenient.validate(ISSUER.token("alice", lifetime=320))).username == "alice"


async def test_oversized_token_is_refused_before_parsing() -> None:
    check = validator(max_token_bytes=4096)
    padded = ISSUER.token("alice", padding="x" * 4096)
    assert await refusal(check, padded) == (ErrorKind.UNAUTHENTICATED, "TOKEN_TOO_LARGE")
    # Not even a JWT: the size is checked first, so the reason is the size.
    assert (await refusal(check, "y" * 100_000))[1] == "TOKEN_TOO_LARGE"
    assert (await check.validate(ISSUER.token("alice", padding="x" * 1000))).username == "alice"


def test_config_defaults_and_key_sources() -> None:
    auth = AuthConfig.model_validate({"jwks_file": "/x"})
    assert (auth.denied_users, auth.max_token_lifetime) == (["root"], 86400.0)
    # The issuer alone is enough: its discovery document names the JWKS.
    assert AuthConfig.model_validate({"issuer": "https://idp.example.org/realms/hpc"})
    systems = [{"name": "x", "ssh": {"host": "h", "known_hosts_entry": "x"}}]
    with pytest.raises(ConfigError, match="give jwks_file, jwks_url, or issuer"):
        parse_config({"systems": systems, "auth": {"audience": "hpcgate"}})
    with pytest.raises(ConfigError, match="at most one of jwks_file, jwks_url"):
        parse_config({"systems": systems, "auth": {"jwks_file": "/x", "jwks_url": "http://y"}})
    with pytest.raises(ConfigError, match=r"auth\.max_token_lifetime"):
        parse_config({"systems": systems, "auth": {"jwks_file": "/x", "max_token_lifetime": 0}})
