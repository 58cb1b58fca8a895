"""Replies shared between callers for a moment: RPCs whose contract says so.

An RPC whose ``(hpcgate.v1.rest).shared_reply_max_age_ms`` is set answers
every caller the same, and its answer changes slowly: ``ListSystems`` is the
health checker's snapshot, renewed once per interval. Each such call still
costs the edge and the server a whole gRPC round (about 0.5 ms of CPU
together, the grpc.aio floor, against the 0.06 ms of uvicorn's own HTTP
handling), so the edge keeps the reply's bytes for that many milliseconds
and answers an equal request with them.

Only a caller whose token the server accepted lately (the edge's
:class:`~hpcgate.edge.guard.TokenVerifier`, the same verdicts that admit a
request body) gets a kept reply; any other request is a call, which judges
its token, and whose reply is kept in turn. A refusal or an error is never
kept. When a reply has aged out, one accepted caller's call renews it and
the accepted callers that come meanwhile wait for that call
(:meth:`SharedReplies.flight`) instead of each making their own: under 500
connections, a few hundred calls at once every second were the edge's
whole latency tail. The store is bounded: a few RPCs, keyed by the request's bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from google.protobuf import message

ENTRIES = 64
Key = tuple[str, bytes]


class Flight:
    """One call renewing a shared reply; :meth:`SharedReplies.land` ends it."""

    def __init__(self, key: Key) -> None:
        self.key = key
        # The reply's bytes, or None when the call failed (its waiters then call themselves).
        self.reply: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()


class SharedReplies:
    """Reply bytes by RPC path and request bytes, each until its own deadline."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self._entries = entries
        self._replies: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()
        self._flights: dict[Key, Flight] = {}

    @staticmethod
    def key(path: str, request: message.Message) -> Key:
        """The store's key of ``request`` at ``path``.

        Deterministic bytes: equal requests give equal keys, whatever the field order.
        """
        return path, request.SerializeToString(deterministic=True)

    def get(self, key: Key) -> bytes | None:
        """The kept reply of ``key`` if it is still young enough, else None."""
        kept = self._replies.get(key)
        if kept is None:
            return None
        deadline, reply = kept
        if deadline <= time.monotonic():
            del self._replies[key]
            return None
        return reply

    async def wait(self, key: Key) -> bytes | None:
        """The kept reply of ``key``, or that of the call renewing it; None if there is neither."""
        kept = self.get(key)
        if kept is not None:
            return kept
        flight = self._flights.get(key)
        if flight is None:
            return None
        # Shielded: a waiter that goes away does not cancel the caller's future.
        return await asyncio.shield(flight.reply)

    def flight(self, key: Key) -> Flight | None:
        """Begin renewing ``key``: a Flight to :meth:`land`, or None if one is under way."""
        if key in self._flights:
            return None
        flight = self._flights[key] = Flight(key)
        return flight

    def land(self, flight: Flight, reply: bytes | None, max_age_ms: int = 0) -> None:
        """End ``flight`` with its call's ``reply`` (kept ``max_age_ms``), or None if it failed."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if reply is not None:
            self.put(flight.key, reply, max_age_ms)
        if not flight.reply.done():
            flight.reply.set_result(reply)

    def put(self, key: Key, reply: bytes, max_age_ms: int) -> None:
        """Keep ``reply`` of ``key`` for ``max_age_ms`` milliseconds."""
        self._replies[key] = (time.monotonic() + max_age_ms / 1000, reply)
        self._replies.move_to_end(key)
        while len(self._replies) > self._entries:
            self._replies.popitem(last=False)

    def __len__(self) -> int:
        return len(self._replies)
