"""Coordination of a fleet through a Redis server (``redis.asyncio``).

Keys live under ``coordination.prefix``. A lease is a string key set with
``NX PX`` holding ``<replica>|<token>``, the token drawn from a counter per
lease, so each grant is numbered; renewing and releasing compare the holder
first, and a fenced publish happens in the same script as the check that
the publisher still holds the lease under its token (a holder that stalled
past its lease cannot publish). A counting semaphore is a sorted set of
holders scored by when they expire, on Redis's own clock, trimmed before
each grant: a replica that dies stops renewing and its slots lapse.
Messages go over pub/sub, one connection for all of a replica's channels.

Every call is bounded by short socket timeouts. When one fails, the backend
answers as a lone process would for a while (:data:`~.base.LOCAL` leases,
granted slots, nothing published) instead of raising, says so in
:meth:`RedisCoordinator.health`, and tries Redis again after
:data:`RETRY_AFTER`; the pub/sub reader reconnects and resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hpcgate.server.coordination.base import LOCAL, CoordinationHealth, Handler

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds a failed Redis is left alone before the next call tries it again.
RETRY_AFTER = 1.0
# Seconds one Redis call may take (connect included) before it counts as failed.
CALL_TIMEOUT = 1.0
# Seconds the pub/sub reader waits for a message before it looks for new channels.
READ_TICK = 0.05
# Seconds a closing subscription or client gets before it is left behind.
CLOSE_TIMEOUT = 2.0

_CLAIM = """
local held = redis.call('GET', KEYS[1])
if not held then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return token
end
local sep = string.find(held, '|', 1, true)
if string.sub(held, 1, sep - 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(held, sep + 1))
end
return -1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FENCED_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"""
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
"""
_RENEW_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""


class _Listening:
    def __init__(self, owner: RedisCoordinator, channel: str, handler: Handler) -> None:
        self._owner = owner
        self._channel = channel
        self._handler = handler

    def close(self) -> None:
        self._owner._unlisten(self._channel, self._handler)


async def _closed(pubsub: Any) -> None:
    """Close ``pubsub`` (if any), giving up after CLOSE_TIMEOUT.

    A subscription cancelled in the middle of a read could leave redis-py's
    close waiting for good (a teardown once hung on it in CI): a replica's
    shutdown must not.
    """
    if pubsub is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), CLOSE_TIMEOUT)


class RedisCoordinator:
    """A fleet's shared state in Redis (see the module doc)."""

    shared = True

    def __init__(self, url: str, prefix: str, lease_ttl: float) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self.lease_ttl = lease_ttl
        self._prefix = prefix
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=CALL_TIMEOUT, socket_connect_timeout=CALL_TIMEOUT
        )
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("claim", _CLAIM),
                ("release", _RELEASE),
                ("publish", _FENCED_PUBLISH),
                ("take", _TAKE_SLOT),
                ("renew", _RENEW_SLOTS),
            )
        }
        self._error: str | None = None
        self._down_until = 0.0
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._reader: asyncio.Task[None] | None = None

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _guard(self, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``call()``, or ``fallback`` when Redis fails (or failed just now)."""
        if time.monotonic() < self._down_until:
            return fallback
        try:
            async with asyncio.timeout(CALL_TIMEOUT * 2):
                result = await call()
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(error)
            return fallback
        if self._error is not None:
            log.warning("coordination: Redis answers again")
            self._error = None
        return result

    def _failed(self, error: BaseException) -> None:
        if self._error is None:
            log.warning("coordination: Redis unreachable, acting alone meanwhile: %s", error)
        self._error = f"Redis unreachable: {error or type(error).__name__}"
        self._down_until = time.monotonic() + RETRY_AFTER

    # -- leases ------------------------------------------------------------------------

    async def claim(self, name: str, ttl: float | None = None) -> int | None:
        key = self._key("lease", name)
        millis = int((self.lease_ttl if ttl is None else ttl) * 1000)

        async def call() -> int | None:
            token = int(
                await self._scripts["claim"](
                    keys=[key, self._key("fence", name)], args=[self.replica, millis]
                )
            )
            return None if token < 0 else token

        return await self._guard(call, LOCAL)

    async def release(self, name: str, token: int) -> None:
        key = self._key("lease", name)
        if token == LOCAL:
            return

        async def call() -> None:
            await self._scripts["release"](keys=[key], args=[f"{self.replica}|{token}"])

        await self._guard(call, None)

    # -- messages ----------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes, fence: tuple[str, int] | None) -> bool:
        wire = self._key("ch", channel)

        async def call() -> bool:
            if fence is None:
                await self._client.publish(wire, message)
                return True
            name, token = fence
            held = f"{self.replica}|{token}"
            sent = await self._scripts["publish"](
                keys=[self._key("lease", name)], args=[held, wire, message]
            )
            return int(sent) >= 0

        if fence is not None and fence[1] == LOCAL:
            return False  # acting alone: nobody to tell
        return await self._guard(call, False)

    def listen(self, channel: str, handler: Handler) -> _Listening:
        self._handlers[self._key("ch", channel)].append(handler)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="coordination-pubsub")
        return _Listening(self, self._key("ch", channel), handler)

    def _unlisten(self, wire: str, handler: Handler) -> None:
        handlers = self._handlers.get(wire)
        if handlers and handler in handlers:
            handlers.remove(handler)
            if not handlers:
                del self._handlers[wire]

    async def _read(self) -> None:
        """Deliver messages to the handlers; follow the set of channels; reconnect."""
        pubsub: Any = None
        subscribed: set[str] = set()
        while True:
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    subscribed = set()
                wanted = set(self._handlers)
                if wanted - subscribed:
                    await pubsub.subscribe(*(wanted - subscribed))
                if subscribed - wanted:
                    await pubsub.unsubscribe(*(subscribed - wanted))
                subscribed = wanted
                if not subscribed:
                    await asyncio.sleep(READ_TICK)
                    continue
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=READ_TICK
                )
            except (RedisError, OSError, TimeoutError) as error:
                self._failed(error)
                await _closed(pubsub)
                pubsub = None
                await asyncio.sleep(RETRY_AFTER)
                continue
            except asyncio.CancelledError:
                await _closed(pubsub)
                raise
            if message is None or message.get("type") != "message":
                continue
            wire = message["channel"].decode()
            for handler in list(self._handlers.get(wire, ())):
                try:
                    handler(message["data"])
                except Exception:
                    log.exception("coordination: a handler of %s failed", wire)

    # -- values and counters -----------------------------------------------------------

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        async def call() -> None:
            await self._client.set(self._key("kv", key), value, px=int(ttl * 1000))

        await self._guard(call, None)

    async def load(self, key: str) -> bytes | None:
        async def call() -> bytes | None:
            value = await self._client.get(self._key("kv", key))
            return (
                None
                if value is None
                else bytes(value, "utf-8")
                if isinstance(value, str)
                else value
            )

        return await self._guard(call, None)

    async def bump(self, key: str) -> int:
        async def call() -> int:
            return int(await self._client.incr(self._key("n", key)))

        return await self._guard(call, 0)

    async def count(self, key: str) -> int:
        async def call() -> int:
            return int(await self._client.get(self._key("n", key)) or 0)

        return await self._guard(call, 0)

    # -- counting semaphores -----------------------------------------------------------

    async def take_slot(self, name: str, holder: str, limit: int) -> bool:
        millis = int(self.lease_ttl * 1000)

        async def call() -> bool:
            taken = await self._scripts["take"](
                keys=[self._key("slots", name)], args=[holder, limit, millis]
            )
            return bool(int(taken))

        return await self._guard(call, True)

    async def renew_slots(self, name: str, holders: Sequence[str]) -> None:
        if not holders:
            return
        millis = int(self.lease_ttl * 1000)

        async def call() -> None:
            await self._scripts["renew"](keys=[self._key("slots", name)], args=[millis, *holders])

        await self._guard(call, None)

    async def give_slot(self, name: str, holder: str) -> None:
        async def call() -> None:
            await self._client.zrem(self._key("slots", name), holder)

        await self._guard(call, None)

    # -- the rest ----------------------------------------------------------------------

    def health(self) -> CoordinationHealth:
        return CoordinationHealth(shared=True, healthy=self._error is None, message=self._error)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, CLOSE_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), CLOSE_TIMEOUT)
