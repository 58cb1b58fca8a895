"""A user's connections to a system counted fleet-wide: slots in the shared store.

Each replica keeps its own per-user pool (:mod:`.userpool`) under
``max_connections``; in a fleet that bound holds for all replicas together.
Before a replica opens a connection it takes a slot of the (system, user)
semaphore in the shared store (:meth:`.Coordinator.take_slot`), renews the
slots of its live connections every ``lease_ttl / 3`` seconds, and frees a
slot when its connection closes. A replica that dies stops renewing, and
its slots lapse after ``lease_ttl``. With one process (or the store down)
every slot is granted and the pool's own bound is the whole limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict

from hpcgate.server.coordination import Coordinator

log = logging.getLogger(__name__)


class FleetSlots:
    """The fleet-wide connection slots of one system's users (see the module doc)."""

    def __init__(self, system: str, coordinator: Coordinator, limit: int) -> None:
        self.system = system.lower()
        self.coordinator = coordinator
        self.limit = limit
        # The slots this replica holds, by user.
        self._held: defaultdict[str, set[str]] = defaultdict(set)
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def _name(self, user: str) -> str:
        return f"ssh:{self.system}:{user}"

    async def take(self, user: str) -> str | None:
        """A slot for one more connection of ``user`` (its holder name), or None: all taken."""
        if not self.coordinator.shared:
            return ""
        holder = f"{self.coordinator.replica}:{uuid.uuid4().hex[:8]}"
        if not await self.coordinator.take_slot(self._name(user), holder, self.limit):
            return None
        self._held[user].add(holder)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name=f"ssh-slots-{self.system}")
        return holder

    def give(self, user: str, holder: str) -> None:
        """Free ``holder``'s slot (in the background: called from asyncssh's callbacks)."""
        if not holder:
            return
        held = self._held.get(user)
        if held is None or holder not in held:
            return
        held.discard(holder)
        if not held:
            del self._held[user]
        task = asyncio.create_task(self.coordinator.give_slot(self._name(user), holder))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.coordinator.lease_ttl / 3)
            for user, holders in list(self._held.items()):
                await self.coordinator.renew_slots(self._name(user), sorted(holders))

    async def close(self) -> None:
        """Stop renewing and free every slot still held."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for user, holders in list(self._held.items()):
            for holder in list(holders):
                self.give(user, holder)
        await asyncio.gather(*self._tasks, return_exceptions=True)
