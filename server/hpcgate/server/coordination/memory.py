"""Coordination within one process: the default, and what nothing else needs.

Every lease is this process's (:data:`~.base.LOCAL`), every slot is granted
(the SSH pool's own per-user limit is the whole limit), messages reach the
handlers of this process, values and counters live in dictionaries.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Sequence

from hpcgate.server.coordination.base import LOCAL, CoordinationHealth, Handler

DEFAULT_LEASE_TTL = 10.0


class _Listening:
    def __init__(self, handlers: list[Handler], handler: Handler) -> None:
        self._handlers = handlers
        self._handler = handler

    def close(self) -> None:
        if self._handler in self._handlers:
            self._handlers.remove(self._handler)


class MemoryCoordinator:
    """One process is the whole fleet (see the module doc)."""

    shared = False

    def __init__(self, lease_ttl: float = DEFAULT_LEASE_TTL) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self.lease_ttl = lease_ttl
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._values: dict[str, tuple[bytes, float]] = {}
        self._counters: defaultdict[str, int] = defaultdict(int)

    async def claim(self, name: str, ttl: float | None = None) -> int | None:
        return LOCAL

    async def release(self, name: str, token: int) -> None:
        return None

    async def publish(self, channel: str, message: bytes, fence: tuple[str, int] | None) -> bool:
        for handler in list(self._handlers.get(channel, ())):
            handler(message)
        return True

    def listen(self, channel: str, handler: Handler) -> _Listening:
        handlers = self._handlers[channel]
        handlers.append(handler)
        return _Listening(handlers, handler)

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        self._values[key] = (value, time.monotonic() + ttl)

    async def load(self, key: str) -> bytes | None:
        found = self._values.get(key)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def bump(self, key: str) -> int:
        self._counters[key] += 1
        return self._counters[key]

    async def count(self, key: str) -> int:
        return self._counters.get(key, 0)

    async def take_slot(self, name: str, holder: str, limit: int) -> bool:
        return True

    async def renew_slots(self, name: str, holders: Sequence[str]) -> None:
        return None

    async def give_slot(self, name: str, holder: str) -> None:
        return None

    def health(self) -> CoordinationHealth:
        return CoordinationHealth(shared=False, healthy=True)

    async def close(self) -> None:
        return None
