"""What a replica may share with the others: the :class:`Coordinator` protocol.

Domain code (the watch pollers, the health checker, the SSH pools, the S3
sweep) sees only this protocol; which backend serves it is configuration
(``coordination.backend``): :mod:`.memory` for one process, :mod:`.redis`
for a fleet. Four primitives cover what the replicas share:

* **Leases** (:meth:`Coordinator.claim`): one holder fleet-wide of a named
  duty (polling a user's jobs, probing a system), expiring unless renewed,
  each grant numbered by a fencing token so a holder that lost its lease
  cannot publish as if it still held it (:meth:`Coordinator.publish`).
* **Messages**: a channel every subscribed replica hears (:meth:`Coordinator.listen`).
* **Values** with a lifetime (:meth:`Coordinator.store`, :meth:`Coordinator.load`)
  and **counters** (:meth:`Coordinator.bump`, :meth:`Coordinator.count`).
* **Counting semaphores** whose holders expire (:meth:`Coordinator.take_slot`):
  a replica that dies does not keep its slots past their lifetime.

When the shared store cannot be reached, a backend does not raise and does
not hang: it answers as a single process would (a lease is held locally,
:data:`LOCAL`; a slot is granted; nothing is published), reports the
failure in :meth:`Coordinator.health`, and recovers by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# The token of a lease held without the shared store (it is down, or there is
# none): this replica acts alone, and publishes nothing.
LOCAL = 0

Handler = Callable[[bytes], None]


@dataclass(frozen=True)
class CoordinationHealth:
    """Whether the shared store answers, and what went wrong last if not."""

    shared: bool  # a fleet backend (False: one process, nothing to reach)
    healthy: bool
    message: str | None = None


class Listening(Protocol):
    """A subscription to a channel; :meth:`close` ends it."""

    def close(self) -> None:
        """Stop delivering the channel's messages (idempotent)."""
        ...


class Coordinator(Protocol):
    """The state the replicas of a fleet share (see the module doc)."""

    # Names this process among the replicas (unique per start).
    replica: str
    # Whether other replicas can exist (False: the in-memory backend).
    shared: bool
    # Seconds a lease or slot outlives its last renewal.
    lease_ttl: float

    async def claim(self, name: str, ttl: float | None = None) -> int | None:
        """Take or renew the lease ``name`` for ``ttl`` seconds (default ``lease_ttl``).

        Returns its fencing token while this replica holds it (:data:`LOCAL`
        when acting alone), None while another replica does.
        """
        ...

    async def release(self, name: str, token: int) -> None:
        """Give the lease up if this replica still holds it under ``token``."""
        ...

    async def publish(self, channel: str, message: bytes, fence: tuple[str, int] | None) -> bool:
        """Send ``message`` to the replicas listening on ``channel``.

        With ``fence`` (lease name, token) the message goes out only while
        that lease is still held under that token. False: not sent.
        """
        ...

    def listen(self, channel: str, handler: Handler) -> Listening:
        """Call ``handler`` with each message published on ``channel`` from now on."""
        ...

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        ...

    async def load(self, key: str) -> bytes | None:
        """The value under ``key``, or None (absent, expired, store down)."""
        ...

    async def bump(self, key: str) -> int:
        """Add one to the counter ``key``; its new value (0 when the store is down)."""
        ...

    async def count(self, key: str) -> int:
        """The counter ``key`` (0 if absent or the store is down)."""
        ...

    async def take_slot(self, name: str, holder: str, limit: int) -> bool:
        """Take one of the ``limit`` slots of ``name`` for ``holder``, for ``lease_ttl``."""
        ...

    async def renew_slots(self, name: str, holders: Sequence[str]) -> None:
        """Extend the lifetime of ``holders``' slots of ``name``."""
        ...

    async def give_slot(self, name: str, holder: str) -> None:
        """Free ``holder``'s slot of ``name``."""
        ...

    def health(self) -> CoordinationHealth:
        """Whether the shared store answered the last call."""
        ...

    async def close(self) -> None:
        """Drop the connections to the shared store."""
        ...
