"""Per-user Slurm JWTs: signed with the site's HS256 key, or got from a command.

slurmctld (``AuthAltTypes=auth/jwt``) accepts a token whose ``sun`` claim
names the user and whose signature is the cluster's ``jwt_hs256.key``. The
server mints one per user (:class:`TokenMinter`), or runs the site's command
for it (:class:`CommandTokens`, e.g. ``scontrol token username={user}``),
and keeps it until little of its life is left, so that a poll loop does not
get a token per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import jwt

from hpcgate.server.errors import ErrorKind, ServiceError

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


class CommandTokens:
    """Tokens from a command run on the server host; cached per user until near expiry.

    ``{user}`` in the argv stands for the user name (the argv is never given
    to a shell). The command prints the token, bare or as ``scontrol token``
    does (``SLURM_JWT=...``); its lifetime is taken to be ``lifetime``.
    """

    def __init__(
        self, argv: Sequence[str], lifetime: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._argv = list(argv)
        self._lifetime = lifetime
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    async def token(self, user: str) -> str:
        """A valid token for ``user``, from the cache or from the command."""
        now = self._clock()
        cached = self._cache.get(user)
        if cached is not None and cached[1] - now > self._lifetime * _RENEW_AT:
            return cached[0]
        argv = [word.replace("{user}", user) for word in self._argv]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await process.communicate()
        text = stdout.decode(errors="replace").strip().removeprefix("SLURM_JWT=")
        if process.returncode != 0 or not text:
            said = stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
            raise ServiceError(
                ErrorKind.UNAVAILABLE, f"token_command failed: {said}", "SLURM_TOKEN"
            )
        self._cache[user] = (text, now + self._lifetime)
        return text
