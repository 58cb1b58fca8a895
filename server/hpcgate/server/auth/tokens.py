"""Offline validation of OIDC bearer tokens (JWTs) against the issuer's JWKS.

A token is accepted only if its algorithm is on the configured allow-list
(asymmetric only: never ``none``, never HMAC, which would let anyone holding
the public key forge tokens), its signature verifies with the issuer's key
for its ``kid``, it has an ``exp`` that leaves at least the minimum remaining
lifetime, ``nbf``/``iat`` are not in the future, ``iss`` and ``aud`` match
when configured, and the username claim is a safe POSIX user name (it becomes
an SSH principal). Each refusal has its own ``ErrorInfo`` reason:

=============================  ==============================================
reason                         the token ...
=============================  ==============================================
TOKEN_MISSING                  is not there (no ``authorization`` metadata)
TOKEN_TOO_LARGE                is longer than ``max_token_bytes``
TOKEN_MALFORMED                is not a JWT, not ``Bearer``, or has no ``exp``
TOKEN_ALGORITHM_NOT_ALLOWED    uses an algorithm off the allow-list, or one
                               its key is not for
TOKEN_UNKNOWN_KEY              names a key the issuer does not publish
TOKEN_BAD_SIGNATURE            has a signature that does not verify
TOKEN_EXPIRED                  is past ``exp``
TOKEN_NOT_YET_VALID            is before ``nbf`` (or ``iat``)
TOKEN_WRONG_ISSUER             has another or no ``iss``
TOKEN_WRONG_AUDIENCE           has another or no ``aud``
TOKEN_LIFETIME_TOO_SHORT       expires sooner than ``min_remaining_lifetime``
TOKEN_LIFETIME_TOO_LONG        is valid for longer than ``max_token_lifetime``
TOKEN_NO_USERNAME              lacks the username claim (or it is empty)
TOKEN_BAD_USERNAME             has a username that is not a safe user name
JWKS_UNAVAILABLE (UNAVAILABLE) cannot be checked: no signing keys loaded
=============================  ==============================================

A valid token may still name an account that no caller may act as; those are
refused with PERMISSION_DENIED: ``TOKEN_SERVICE_ACCOUNT`` for the health
checker's ``service_account`` (whose SSH identity the server holds) and
``TOKEN_USER_DENIED`` for the accounts in ``denied_users`` (``root``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt

from hpcgate.server.auth.jwks import JwksError, JwksSource, KeySet
from hpcgate.server.config import AuthConfig
from hpcgate.server.errors import ErrorKind, ServiceError

if TYPE_CHECKING:
    from jwt.types import Options

# A conservative POSIX user name: it is used as an SSH certificate principal
# and appears in paths and command lines.
USERNAME_PATTERN = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")  # used with fullmatch


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the user name and the token's verified claims."""

    username: str
    claims: Mapping[str, Any]


def _seconds(value: float) -> float:
    """A JSON number as a float; ints beyond a float's range (10**400) become infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def refusal(reason: str, message: str) -> ServiceError:
    """An UNAUTHENTICATED error with ``reason``."""
    return ServiceError(ErrorKind.UNAUTHENTICATED, message, reason)


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload, for error messages only (its signature was already verified)."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


# A client sends the same token with every call, and checking its signature
# costs more than the rest of a small RPC. Verified tokens are remembered,
# keyed by the whole token (signature included), for a short while and only
# while the key set they were verified with is current; their lifetime is
# re-checked on every use.
VERIFIED_CACHE_TTL = 60.0
VERIFIED_CACHE_SIZE = 10_000


class TokenValidator:
    """Validates bearer tokens for one issuer, as configured in ``auth``."""

    def __init__(
        self,
        auth: AuthConfig,
        keys: JwksSource | None = None,
        *,
        service_account: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = auth
        self._service_account = service_account
        self._denied = frozenset(auth.denied_users)
        self._keys = keys if keys is not None else JwksSource.from_config(auth)
        self._algorithms = frozenset(auth.algorithms)
        self._clock = clock
        # token -> (valid until, key set it was verified with, identity)
        self._verified: dict[str, tuple[float, KeySet | None, Identity]] = {}
        self._options: Options = {
            "require": ["exp"],
            "verify_aud": auth.audience is not None,
            "verify_iss": auth.issuer is not None,
        }

    async def validate(self, token: str) -> Identity:
        """The caller ``token`` proves; raises ServiceError saying why not.

        Awaits I/O only when the token names a key not in the cache (see
        :class:`JwksSource`); otherwise it is a signature check in memory.
        """
        if not token:
            raise refusal("TOKEN_MISSING", "a bearer token is required")
        if len(token) > self._auth.max_token_bytes:
            raise refusal(
                "TOKEN_TOO_LARGE",
                f"the bearer token has {len(token)} bytes; at most "
                f"{self._auth.max_token_bytes} are accepted",
            )
        identity = self.cached(token)
        if identity is not None:
            return identity
        identity = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        # Good without another look until the cache entry ages out or the
        # token comes within min_remaining_lifetime of its expiry, whichever
        # is first; past that the full check decides (and says why).
        exp = identity.claims["exp"]  # a number: _verify checked it
        lifetime = exp + self._auth.leeway - self._auth.min_remaining_lifetime
        fresh_until = min(self._clock() + VERIFIED_CACHE_TTL, lifetime)
        self._verified[token] = (fresh_until, self._keys.current, identity)
        return identity

    def cached(self, token: str) -> Identity | None:
        """The caller of a token verified recently (no I/O, no await); None when not cached.

        None too once the entry is stale: older than the cache's TTL, verified
        with a key set since replaced, or the token now too close to expiry
        (:meth:`validate` then refuses it with the reason). The server's
        authentication hook (:mod:`hpcgate.server.rpc.authentication`) tries
        this first: almost every call carries a token seen before, and this
        costs a dictionary lookup and a clock read.
        """
        cached = self._verified.get(token)
        if cached is None:
            return None
        fresh_until, keys, identity = cached
        if self._clock() < fresh_until and keys is self._keys.current:
            self._keys.refresh_if_stale()  # an old key set is still refetched
            return identity
        del self._verified[token]
        return None

    async def _verify(self, token: str) -> Identity:
        """Full validation: header, key, signature and claims."""
        alg, kid = self._header(token)
        try:
            key = await self._keys.find(kid, alg)
        except JwksError:
            # The cause (a path or URL, an HTTP error) is in the server's log only.
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                "tokens cannot be checked now: the issuer's signing keys are unavailable",
                "JWKS_UNAVAILABLE",
            ) from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as error:
            raise refusal(
                "TOKEN_ALGORITHM_NOT_ALLOWED",
                f"the token's algorithm does not fit its key: {error}",
            ) from None
        if key is None:
            raise refusal(
                "TOKEN_UNKNOWN_KEY",
                f"the token is signed with key {kid!r}, which the issuer does not publish",
            )
        claims = self._decode(token, key, alg)
        self._check_lifetime(claims)
        username = self._username(claims)
        self._check_account(username)
        return Identity(username, MappingProxyType(claims))

    def _header(self, token: str) -> tuple[str, str | None]:
        """The token's ``alg`` (checked against the allow-list) and ``kid``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise refusal(
                "TOKEN_MALFORMED", f"the bearer token is not a valid JWT: {error}"
            ) from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
            raise refusal("TOKEN_MALFORMED", "the token header has no valid 'alg' or 'kid'")
        if alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise refusal(
                "TOKEN_ALGORITHM_NOT_ALLOWED",
                f"token algorithm {alg!r} is not allowed (allowed: {allowed})",
            )
        return alg, kid

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        """The verified claims; pyjwt's refusals mapped to reasons."""
        auth = self._auth
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=auth.issuer,
                audience=auth.audience,
                leeway=auth.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise refusal("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise refusal(
                "TOKEN_NOT_YET_VALID", "the token is not valid yet (nbf or iat)"
            ) from None
        except jwt.InvalidIssuerError:
            got = _unverified_claims(token).get("iss")
            raise refusal(
                "TOKEN_WRONG_ISSUER", f"token issuer {got!r} is not {auth.issuer!r}"
            ) from None
        except jwt.InvalidAudienceError:
            got = _unverified_claims(token).get("aud")
            raise refusal(
                "TOKEN_WRONG_AUDIENCE", f"token audience {got!r} does not include {auth.audience!r}"
            ) from None
        except jwt.MissingRequiredClaimError as error:
            reason = {"iss": "TOKEN_WRONG_ISSUER", "aud": "TOKEN_WRONG_AUDIENCE"}.get(
                error.claim, "TOKEN_MALFORMED"
            )
            raise refusal(reason, f"the token has no {error.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise refusal("TOKEN_BAD_SIGNATURE", "the token's signature does not verify") from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as error:
            raise refusal("TOKEN_ALGORITHM_NOT_ALLOWED", str(error)) from None
        except jwt.PyJWTError as error:
            raise refusal("TOKEN_MALFORMED", f"the token is not valid: {error}") from None
        return claims

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        exp = claims["exp"]
        # pyjwt accepts anything int() takes, such as "1700000000"; RFC 7519 says a number.
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise refusal("TOKEN_MALFORMED", "the token's 'exp' claim is not a number")
        now = self._clock()
        # The lifetime the issuer granted (exp - iat); without iat, what is
        # left of it. Checked first, so that nothing later meets an absurd exp.
        iat = claims.get("iat", now)
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise refusal("TOKEN_MALFORMED", "the token's 'iat' claim is not a number")
        maximum = self._auth.max_token_lifetime
        if _seconds(exp) - _seconds(iat) > maximum + self._auth.leeway:
            raise refusal(
                "TOKEN_LIFETIME_TOO_LONG",
                f"the token is valid for more than {maximum:.0f} s, the longest accepted",
            )
        minimum = self._auth.min_remaining_lifetime
        remaining = exp - now
        if remaining + self._auth.leeway < minimum:
            raise refusal(
                "TOKEN_LIFETIME_TOO_SHORT",
                f"the token expires in {max(remaining, 0):.0f} s; at least {minimum:.0f} s "
                "are required: get a fresh token",
            )

    def _check_account(self, username: str) -> None:
        """PERMISSION_DENIED for the service account and the denied accounts."""
        if username == self._service_account:
            raise ServiceError(
                ErrorKind.PERMISSION_DENIED,
                f"user {username!r} is the service's own account; no token may act as it",
                "TOKEN_SERVICE_ACCOUNT",
            )
        if username in self._denied:
            raise ServiceError(
                ErrorKind.PERMISSION_DENIED,
                f"user {username!r} may not use this service",
                "TOKEN_USER_DENIED",
            )

    def _username(self, claims: Mapping[str, Any]) -> str:
        name = self._auth.username_claim
        username = claims.get(name)
        if not isinstance(username, str) or not username:
            raise refusal("TOKEN_NO_USERNAME", f"the token has no {name!r} claim with a user name")
        if not USERNAME_PATTERN.fullmatch(username):
            raise refusal(
                "TOKEN_BAD_USERNAME",
                f"the token's {name!r} claim {username!r} is not a valid user name",
            )
        return username
