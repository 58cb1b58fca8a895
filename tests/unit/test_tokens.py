"""Token validation, the JWKS cache, and per-system authorization, without a server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from devkeys import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from forged_tokens import MIN_REMAINING_LIFETIME, BadToken, bad_tokens, claims_for, signed
from hpcgate.server.auth.authz import authorize
from hpcgate.server.auth.jwks import (
    RETRY_EMPTY_AFTER,
    JwksError,
    JwksSource,
    KeySet,
    file_fetcher,
)
from hpcgate.server.auth.tokens import Identity, TokenValidator
from hpcgate.server.config import AuthConfig, SystemConfig, parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.rpc.authentication import bearer_token, current_identity, is_public
from hpcgate.server.systems import resolve_system

ISSUER = DevIssuer.generate("key-a")
ROTATED = DevIssuer.generate("key-b")
CASES = bad_tokens(ISSUER)
INTERVAL = 300.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Serves a JWKS from memory, counts fetches, and can fail or hold them."""

    def __init__(self, *issuers: DevIssuer) -> None:
        self.jwks: dict[str, Any] = jwks_of(*issuers)
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def __call__(self) -> bytes:
        self.calls += 1
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise JwksError("issuer is down")
        return json.dumps(self.jwks).encode()


def jwks_of(*issuers: DevIssuer) -> dict[str, Any]:
    return {"keys": [key for issuer in issuers for key in issuer.jwks()["keys"]]}


def auth_config(**overrides: Any) -> AuthConfig:
    settings: dict[str, Any] = {
        "jwks_file": "/unused",
        "issuer": DEV_ISSUER,
        "audience": DEV_AUDIENCE,
        "min_remaining_lifetime": MIN_REMAINING_LIFETIME,
        "jwks_refresh_interval": INTERVAL,
    }
    settings.update(overrides)
    return AuthConfig.model_validate(settings)


def make_validator(
    fetch: FakeFetch, clock: Clock | None = None, max_age: float = 3600.0, **overrides: Any
) -> TokenValidator:
    auth = auth_config(**overrides)
    source = JwksSource(
        fetch,
        refresh_interval=auth.jwks_refresh_interval,
        max_age=max_age,
        clock=clock or Clock(),
    )
    return TokenValidator(auth, source)


async def refused(validator: TokenValidator, token: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await validator.validate(token)
    return caught.value


async def reason(validator: TokenValidator, token: str) -> str:
    error = await refused(validator, token)
    assert error.code == ErrorKind.UNAUTHENTICATED, error.message
    return error.reason


# --- validation -----------------------------------------------------------------


async def test_valid_token_gives_identity() -> None:
    validator = make_validator(FakeFetch(ISSUER))
    identity = await validator.validate(ISSUER.token("alice", groups=["hpc"]))
    assert identity.username == "alice"
    assert identity.claims["groups"] == ["hpc"]
    with pytest.raises(TypeError):
        identity.claims["groups"] = []  # type: ignore[index]


async def test_cached_knows_only_tokens_already_verified() -> None:
    validator = make_validator(FakeFetch(ISSUER))
    token = ISSUER.token("alice")
    assert validator.cached(token) is None  # never seen: the caller must await validate()
    await validator.validate(token)
    identity = validator.cached(token)
    assert identity is not None and identity.username == "alice"
    assert validator.cached(ISSUER.token("bob")) is None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_each_bad_token_has_its_reason(case: BadToken) -> None:
    validator = make_validator(FakeFetch(ISSUER))
    error = await refused(validator, case.token)
    assert (error.code, error.reason) == (ErrorKind.UNAUTHENTICATED, case.reason)
    assert error.message


async def test_empty_token_is_missing() -> None:
    assert await reason(make_validator(FakeFetch(ISSUER)), "") == "TOKEN_MISSING"


async def test_refused_tokens_cause_no_key_fetch_beyond_the_first() -> None:
    fetch = FakeFetch(ISSUER)
    validator = make_validator(fetch)
    for case in CASES:
        await refused(validator, case.token)
    assert fetch.calls == 1


async def test_algorithm_must_fit_the_key() -> None:
    # An ES256 token naming the RSA key: the key is not for that algorithm.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims_for(ISSUER), ec_key, algorithm="ES256", headers={"kid": "key-a"})
    assert await reason(make_validator(FakeFetch(ISSUER)), token) == "TOKEN_ALGORITHM_NOT_ALLOWED"
    # The JWK pins RS256; RS384 is allowed in general but not with this key.
    rs384 = jwt.encode(claims_for(ISSUER), ISSUER.key, algorithm="RS384", headers={"kid": "key-a"})
    validator = make_validator(FakeFetch(ISSUER), algorithms=["RS256", "RS384"])
    assert await reason(validator, rs384) == "TOKEN_ALGORITHM_NOT_ALLOWED"


async def test_es256_key_without_alg_or_kid() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    fetch = FakeFetch()
    fetch.jwks = {"keys": [jwk]}
    token = jwt.encode(claims_for(ISSUER, "bob"), ec_key, algorithm="ES256")
    identity = await make_validator(fetch).validate(token)
    assert identity.username == "bob"


async def test_configured_username_claim() -> None:
    validator = make_validator(FakeFetch(ISSUER), username_claim="sub")
    token = ISSUER.token("alice", sub="svc_bot")
    assert (await validator.validate(token)).username == "svc_bot"


async def test_issuer_and_audience_are_optional() -> None:
    validator = make_validator(FakeFetch(ISSUER), issuer=None, audience=None)
    token = signed(ISSUER, claims_for(ISSUER, iss="https://other", aud="anything"))
    assert (await validator.validate(token)).username == "alice"


async def test_leeway_tolerates_clock_skew() -> None:
    now = int(time.time())
    token = signed(ISSUER, claims_for(ISSUER, nbf=now + 20, iat=now + 20))
    assert await reason(make_validator(FakeFetch(ISSUER)), token) == "TOKEN_NOT_YET_VALID"
    assert await make_validator(FakeFetch(ISSUER), leeway=60).validate(token)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": "99999999999"}, "TOKEN_MALFORMED"),  # a string pyjwt would take
        ({"preferred_username": "alice\n"}, "TOKEN_BAD_USERNAME"),
        ({"preferred_username": "Alice"}, "TOKEN_BAD_USERNAME"),
        ({"preferred_username": "a" * 33}, "TOKEN_BAD_USERNAME"),
        ({"preferred_username": ""}, "TOKEN_NO_USERNAME"),
        ({"preferred_username": ["alice"]}, "TOKEN_NO_USERNAME"),
    ],
)
async def test_odd_claims(claims: dict[str, Any], expected: str) -> None:
    token = signed(ISSUER, claims_for(ISSUER, **claims))
    assert await reason(make_validator(FakeFetch(ISSUER)), token) == expected


def test_config_refuses_symmetric_and_none() -> None:
    for alg in ("HS256", "none"):
        with pytest.raises(ValueError, match=alg):
            auth_config(algorithms=["RS256", alg])


# --- the JWKS cache -------------------------------------------------------------


async def test_rotated_key_is_fetched_at_most_once_per_interval() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    validator = make_validator(fetch, clock)
    rotated = ROTATED.token("alice")
    assert await reason(validator, rotated) == "TOKEN_UNKNOWN_KEY"
    assert fetch.calls == 1
    fetch.jwks = jwks_of(ROTATED)  # the issuer rotates
    clock.now += INTERVAL / 2
    assert await reason(validator, rotated) == "TOKEN_UNKNOWN_KEY"  # within the window
    assert fetch.calls == 1
    clock.now += INTERVAL / 2
    assert (await validator.validate(rotated)).username == "alice"
    assert fetch.calls == 2
    # The old key is gone from the new set: its tokens are refused, without a fetch.
    assert await reason(validator, ISSUER.token("alice")) == "TOKEN_UNKNOWN_KEY"
    assert fetch.calls == 2


async def test_made_up_kids_do_not_hammer_the_issuer() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    validator = make_validator(fetch, clock)
    await validator.validate(ISSUER.token("alice"))
    clock.now += INTERVAL
    for n in range(20):
        stranger = DevIssuer(ISSUER.key, kid=f"made-up-{n}")
        assert await reason(validator, stranger.token("alice")) == "TOKEN_UNKNOWN_KEY"
    assert fetch.calls == 2


async def test_concurrent_misses_share_one_fetch() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    validator = make_validator(fetch, clock)
    await validator.validate(ISSUER.token("alice"))
    fetch.jwks = jwks_of(ISSUER, ROTATED)
    fetch.gate = asyncio.Event()
    fetch.called.clear()
    clock.now += INTERVAL
    tasks = [asyncio.create_task(validator.validate(ROTATED.token(f"u{n}"))) for n in range(10)]
    await fetch.called.wait()
    for _ in range(10):
        await asyncio.sleep(0)  # let every task reach the shared fetch
    fetch.gate.set()
    identities = await asyncio.gather(*tasks)
    assert [i.username for i in identities] == [f"u{n}" for n in range(10)]
    assert fetch.calls == 2


async def test_issuer_down_at_start_is_unavailable_then_retried() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    fetch.fail = True
    validator = make_validator(fetch, clock)
    token = ISSUER.token("alice")
    error = await refused(validator, token)
    assert (error.code, error.reason) == (ErrorKind.UNAVAILABLE, "JWKS_UNAVAILABLE")
    assert "signing keys are unavailable" in error.message
    await refused(validator, token)
    assert fetch.calls == 1  # no retry at once ...
    clock.now += RETRY_EMPTY_AFTER  # ... but soon, not after the whole refresh interval
    fetch.fail = False
    assert await validator.validate(token)
    assert fetch.calls == 2


async def test_failed_refresh_keeps_the_cached_keys() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    validator = make_validator(fetch, clock)
    await validator.validate(ISSUER.token("alice"))
    fetch.fail = True
    clock.now += INTERVAL
    assert await reason(validator, ROTATED.token("alice")) == "TOKEN_UNKNOWN_KEY"
    assert fetch.calls == 2
    assert await validator.validate(ISSUER.token("alice"))


async def test_old_key_set_is_refreshed_in_the_background() -> None:
    clock, fetch = Clock(), FakeFetch(ISSUER)
    validator = make_validator(fetch, clock, max_age=INTERVAL * 2)
    token = ISSUER.token("alice")
    await validator.validate(token)
    fetch.jwks = jwks_of(ROTATED)  # the issuer withdrew key-a
    clock.now += INTERVAL * 2
    fetch.called.clear()
    assert await validator.validate(token)  # served from the cache, refresh started
    await fetch.called.wait()
    await asyncio.sleep(0)  # the refresh stores the new set
    assert await reason(validator, token) == "TOKEN_UNKNOWN_KEY"
    assert await validator.validate(ROTATED.token("alice"))
    assert fetch.calls == 2


def test_key_set_parsing() -> None:
    with pytest.raises(JwksError, match="not JSON"):
        KeySet.parse(b"{")
    with pytest.raises(JwksError, match="'keys'"):
        KeySet.parse(b'{"nokeys": []}')
    rsa = ISSUER.jwks()["keys"][0]
    junk = [{"kty": "XYZ", "kid": "junk"}, {**rsa, "kid": "enc", "use": "enc"}, "not a key"]
    with pytest.raises(JwksError, match="no usable"):
        KeySet({"keys": junk})
    keys = KeySet({"keys": [*junk, rsa]})
    assert keys.kids == {"key-a"}
    assert keys.get("key-a", "RS256") is keys.get("key-a", "RS256")  # parsed once
    assert keys.get("other", "RS256") is None
    assert keys.get(None, "RS256") is not None  # the only key


async def test_file_fetcher(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    ISSUER.write_jwks(path)
    assert KeySet.parse(await file_fetcher(path)()).kids == {"key-a"}
    with pytest.raises(JwksError, match="cannot read"):
        await file_fetcher(tmp_path / "missing.json")()


# --- metadata and identity ------------------------------------------------------


def test_bearer_token_from_metadata() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token((("x-request-id", "1"), ("authorization", "bearer  abc "))) == "abc"
    cases = {
        "TOKEN_MISSING": [[], [("x-request-id", "1")], [("authorization", "Bearer ")]],
        "TOKEN_MALFORMED": [
            [("authorization", "Basic YWxpY2U6cHc=")],
            [("authorization", "abc")],
            [("authorization", "Bearer a"), ("authorization", "Bearer b")],
        ],
    }
    for expected, metadatas in cases.items():
        for metadata in metadatas:
            with pytest.raises(ServiceError) as caught:
                bearer_token(metadata)
            assert caught.value.reason == expected, metadata


def test_public_methods() -> None:
    assert is_public("/hpcgate.v1.Status/GetLiveness")
    assert is_public("/grpc.health.v1.Health/Check")
    assert is_public("/grpc.health.v1.Health/Watch")
    assert is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert is_public("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not is_public("/hpcgate.v1.Status/ListSystems")
    assert not is_public("/hpcgate.v1.Status/GetLivenessX")


def test_current_identity_outside_an_authenticated_call() -> None:
    with pytest.raises(ServiceError) as caught:
        current_identity()
    assert caught.value.code == ErrorKind.UNAUTHENTICATED


# --- authorization --------------------------------------------------------------


def system(required: dict[str, list[str]]) -> SystemConfig:
    return SystemConfig.model_validate(
        {
            "name": "daint",
            "ssh": {"host": "h", "known_hosts_entry": "x"},
            "required_claims": required,
        }
    )


def identity(**claims: Any) -> Identity:
    return Identity("alice", {"preferred_username": "alice", **claims})


def test_authorize_allows() -> None:
    authorize(identity(), system({}))
    authorize(identity(groups=["users", "hpc"]), system({"groups": ["hpc", "admins"]}))
    authorize(identity(role="hpc"), system({"role": ["hpc"]}))
    authorize(
        identity(realm_access={"roles": ["hpc"]}, groups=["g"]),
        system({"realm_access.roles": ["hpc"], "groups": ["g"]}),
    )


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({}, "no 'groups' claim"),
        ({"groups": ["users"]}, "none of 'hpc'"),
        ({"groups": "users"}, "none of 'hpc'"),
        ({"groups": []}, "none of 'hpc'"),
        ({"groups": [["hpc"]]}, "none of 'hpc'"),  # only strings count
        ({"groups": ["hpc"], "realm_access": {"roles": []}}, "'realm_access.roles'"),
        ({"groups": ["hpc"], "realm_access": ["x"]}, "no 'realm_access.roles' claim"),
    ],
)
def test_authorize_denies(claims: dict[str, Any], problem: str) -> None:
    required = {"groups": ["hpc"], "realm_access.roles": ["hpc-admin"]}
    with pytest.raises(ServiceError) as caught:
        authorize(identity(**claims), system(required))
    error = caught.value
    assert (error.code, error.reason) == (ErrorKind.PERMISSION_DENIED, "SYSTEM_ACCESS_DENIED")
    assert "'daint'" in error.message and problem in error.message
    assert error.metadata["system"] == "daint"


def test_resolve_system() -> None:
    settings = parse_config(
        {"systems": [{"name": "Daint", "ssh": {"host": "h", "known_hosts_entry": "x"}}]}
    )
    assert resolve_system(settings, "daint").name == "Daint"
    with pytest.raises(ServiceError) as caught:
        resolve_system(settings, "eiger")
    error = caught.value
    assert (error.code, error.reason) == (ErrorKind.NOT_FOUND, "SYSTEM_NOT_FOUND")
    assert error.message == "System not found"  # FirecREST's words; the name in the details
    assert error.metadata == {"system": "eiger", "systems": "Daint"}


async def test_verified_tokens_are_cached_but_their_lifetime_is_rechecked() -> None:
    fetch = FakeFetch(ISSUER)
    offset = [0.0]
    keys = JwksSource(fetch, refresh_interval=INTERVAL, max_age=3600.0, clock=Clock())
    validator = TokenValidator(auth_config(), keys, clock=lambda: time.time() + offset[0])
    # A full verification looks the token's key up; one served from the cache does not.
    looked_up: list[str | None] = []
    find = keys.find

    async def counting(kid: str | None, alg: str) -> jwt.PyJWK | None:
        looked_up.append(kid)
        return await find(kid, alg)

    keys.find = counting  # type: ignore[method-assign]
    token = signed(ISSUER, claims_for(ISSUER, exp=int(time.time()) + MIN_REMAINING_LIFETIME + 30))
    assert (await validator.validate(token)).username == "alice"
    assert (await validator.validate(token)).username == "alice"
    assert looked_up == [ISSUER.kid]  # the second call was served from the cache
    offset[0] = 40.0  # now less than the minimum lifetime is left
    assert await reason(validator, token) == "TOKEN_LIFETIME_TOO_SHORT"
