"""Who may make the edge read a body: a bearer token of the right shape, then the server's word.

The server is the one judge of tokens. The edge only refuses, before it
reads a byte of the body, what cannot be a token (no header, not ``Bearer``,
not three base64url segments, larger than gRPC metadata carries), and, for
a request with a body, asks the server about the token first
(:class:`TokenVerifier`), so that an anonymous sender cannot make the edge
read and parse megabytes. The refusal reasons are the server's
(``TOKEN_MISSING``, ``TOKEN_MALFORMED``), plus ``TOKEN_TOO_LARGE``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import Headers

# gRPC's default metadata limit is 8 KiB for all entries of a call; a longer
# token would fail there with gRPC's own text, so it is refused here first
# (431, as RFC 6585 says for one oversized header field).
MAX_AUTHORIZATION = 7 * 1024
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class TokenRefusedError(Exception):
    """The request carries no usable bearer token: HTTP status, reason, message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def bearer_token(headers: Headers) -> str:
    """The bearer token of ``headers``; TokenRefusedError when there is none of a JWT's shape."""
    values = headers.getlist("authorization")
    if not values:
        # FirecREST's words (FastAPI's OAuth2 scheme), which clients match on.
        raise TokenRefusedError(401, "TOKEN_MISSING", "Not authenticated")
    if len(values) > 1:
        raise TokenRefusedError(401, "TOKEN_MALFORMED", "more than one Authorization header")
    value = values[0]
    if len(value) > MAX_AUTHORIZATION:
        raise TokenRefusedError(
            431, "TOKEN_TOO_LARGE", f"the Authorization header is over {MAX_AUTHORIZATION} bytes"
        )
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenRefusedError(
            401, "TOKEN_MALFORMED", "the Authorization header is not 'Bearer <token>'"
        )
    token = token.strip()
    if not token:
        raise TokenRefusedError(401, "TOKEN_MISSING", "the Authorization header has an empty token")
    if not _JWT.fullmatch(token):
        raise TokenRefusedError(401, "TOKEN_MALFORMED", "the bearer token is not a JWT")
    return token


def _unverified_expiry(token: str) -> float | None:
    """The ``exp`` claim of ``token`` read without checking it (None if unreadable).

    Only ever used to end a cache entry sooner: the server has verified the
    token before it is cached, and an entry never outlives the token.
    """
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


@dataclass(frozen=True)
class _Entry:
    username: str
    expires: float  # time.time()


class TokenVerifier:
    """The server's verdict on tokens, cached briefly by the token's SHA-256.

    ``verify(token)`` asks the server (an authenticated call that is cheap
    for it) and returns the username it reports; it raises the call's error
    when the token is refused. A verdict is kept for ``ttl`` seconds at most
    and never past the token's own ``exp``, for at most ``size`` tokens
    (least recently used go first): so a revoked key or a changed policy
    takes effect within ``ttl``, and memory stays bounded whatever tokens
    come. Only the hash is kept, never the token. Refusals are not cached:
    the server's reason is answered each time. Concurrent requests with the
    same new token share one verification.
    """

    def __init__(
        self, verify: Callable[[str], Awaitable[str]], ttl: float = 30.0, size: int = 4096
    ) -> None:
        self._verify = verify
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[str]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def known(self, token: str) -> str | None:
        """The username of ``token`` if the server accepted it recently, else None."""
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.username

    def remember(self, token: str, username: str) -> None:
        """Record that the server accepted ``token`` as ``username`` (a call succeeded).

        Every successful call reports this; an entry still good for more than
        half its ``ttl`` is left as it is, which spares the per-request
        decoding of the token's ``exp`` (it showed in the edge's profile).
        """
        now = time.time()
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is not None and entry.username == username and entry.expires - now > self._ttl / 2:
            self._entries.move_to_end(key)
            return
        expires = now + self._ttl
        exp = _unverified_expiry(token)
        if exp is not None:
            expires = min(expires, exp)
        if expires <= now:
            return
        self._entries[key] = _Entry(username, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    async def username(self, token: str) -> str:
        """The username the server accepts ``token`` for; raises the server's refusal."""
        known = self.known(token)
        if known is not None:
            return known
        key = self._key(token)
        pending = self._pending.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this request itself was cancelled
                return await self.username(token)  # the first asker went away: ask anew
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            username = await self._verify(token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._pending[key]
        future.set_result(username)
        self.remember(token, username)
        return username
