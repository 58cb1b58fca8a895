"""Server-streaming replies on HTTP: SSE or NDJSON framing, heartbeats, resumable ids.

A watch can stay quiet for hours, and a proxy (nginx's ``proxy_read_timeout``,
a cloud load balancer's idle timeout) closes a connection that carries
nothing for a while. So an SSE stream sends a comment line,
``: keepalive``, after every ``heartbeat`` seconds without an event
(EventSource clients ignore comments). NDJSON has no comments: an NDJSON
stream gets no heartbeats, and a client behind a proxy should use SSE or
a bound in the request (``maxDuration``).

Resuming, without knowing any endpoint by name: a stream message with an
``event_id`` field names each event, which becomes the SSE ``id:`` line;
a request message with a ``last_event_id`` field takes the SSE
``Last-Event-ID`` header (what an EventSource sends when it reconnects),
unless the query already set it (``?lastEventId=``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf import message

# What read() answers at a stream's end (grpc's typing stubs lack it).
_EOF = grpc.aio.EOF  # type: ignore[attr-defined]
# Comment line of an idle SSE stream.
HEARTBEAT = b": keepalive\n\n"
# The JSON name of a stream message's event id, and the request field it resumes from.
EVENT_ID = "eventId"
LAST_EVENT_ID = "last_event_id"


def resume_from_header(request: message.Message, headers: Mapping[str, str]) -> None:
    """The ``Last-Event-ID`` header into ``request``'s ``last_event_id``, if it has one unset."""
    last = headers.get("last-event-id")
    if not last or LAST_EVENT_ID not in request.DESCRIPTOR.fields_by_name:
        return
    if not getattr(request, LAST_EVENT_ID):
        setattr(request, LAST_EVENT_ID, last)


def frame(ndjson: bool, kind: str, data: Mapping[str, Any]) -> bytes:
    """One event: an NDJSON line, or an SSE event (``id:`` from its ``eventId``, if any)."""
    text = json.dumps(data, separators=(",", ":"))
    if ndjson:
        return (text + "\n").encode()
    head = ""
    event_id = data.get(EVENT_ID)
    if isinstance(event_id, str) and event_id and "\n" not in event_id:
        head = f"id: {event_id}\n"
    if kind:
        head += f"event: {kind}\n"
    return f"{head}data: {text}\n\n".encode()


async def replies(
    call: grpc.aio.UnaryStreamCall[Any, Any], heartbeat: float
) -> AsyncIterator[Any | None]:
    """The replies of ``call``, and None after every ``heartbeat`` seconds without one.

    ``heartbeat`` 0 (or less): replies only. Errors of the call are raised.
    """
    if heartbeat <= 0:
        async for reply in call:
            yield reply
        return
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait((pending,), timeout=heartbeat)
            if not done:
                yield None
                continue
            reply, pending = pending.result(), None
            if reply is _EOF:
                return
            yield reply
    finally:
        if pending is not None:
            pending.cancel()
