"""Per-user Slurm JWTs, signed with the site's HS256 key as ``scontrol token`` would mint them.

slurmctld (``AuthAltTypes=auth/jwt``) accepts a token whose ``sun`` claim
names the user and whose signature is the cluster's ``jwt_hs256.key``. The
server mints one per user and keeps it until little of its life is left,
so that a poll loop does not sign a token per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

# A token is renewed once less than this share of its lifetime is left.
_RENEW_AT = 0.25


class TokenMinter:
    """Tokens for any user from one key; cached per user until near expiry."""

    def __init__(self, key: bytes, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._lifetime = int(lifetime)
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def token(self, user: str) -> str:
        """A valid token for ``user`` (claims ``sun``, ``iat``, ``exp``)."""
        now = self._clock()
        cached = self._cache.get(user)
        if cached is not None and cached[1] - now > self._lifetime * _RENEW_AT:
            return cached[0]
        iat = int(now)
        exp = iat + self._lifetime
        token = jwt.encode({"sun": user, "iat": iat, "exp": exp}, self._key, algorithm="HS256")
        self._cache[user] = (token, exp)
        return token
