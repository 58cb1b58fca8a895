"""JSON bodies of unary replies, rendered once per distinct reply.

FirecREST's JSON of a reply is a pure function of the reply's bytes
(:func:`hpcgate.edge.jsonwriters.to_json` walks the message, nothing else), and
many replies repeat byte for byte: ``/status/systems`` between two health
probes, the ``ls`` of a directory that did not change, a user's own info.
Parsing the reply, ``MessageToDict``, FirecREST's fix-ups and the JSON
encoding were together about a quarter of the edge's CPU per
``GET /status/systems`` (py-spy under wrk). So the edge asks gRPC for the
reply's bytes and keeps the rendered body of small replies, keyed by those
bytes, in a bounded LRU: at most :data:`ENTRIES` bodies of replies of at
most :data:`MAX_REPLY_BYTES` each, a few MiB at worst. A larger reply is
rendered every time and never kept. Nothing goes stale: equal bytes give an
equal body, whoever asks and whenever.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from google.protobuf import message

from hpcgate.edge.jsonwriters import to_json

ENTRIES = 256
MAX_REPLY_BYTES = 8 * 1024


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (what Starlette's JSONResponse writes, faster)."""
    return orjson.dumps(value)


def render(reply: message.Message, field: str) -> bytes:
    """The JSON body of ``reply``: all of it, or only its member ``field`` when given."""
    value = to_json(reply, chunked=True)
    return dumps(value.get(field) if field else value)


class RenderedReplies:
    """Rendered JSON bodies of small replies, by RPC, selected field and reply bytes."""

    def __init__(self, entries: int = ENTRIES, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self._entries = entries
        self._max_reply_bytes = max_reply_bytes
        self._bodies: OrderedDict[tuple[str, str, bytes], bytes] = OrderedDict()

    def body(self, kind: type[message.Message], path: str, field: str, raw: bytes) -> bytes:
        """The JSON body of ``raw``, a ``kind`` reply of the RPC at ``path`` (:func:`render`)."""
        if len(raw) > self._max_reply_bytes:
            return render(kind.FromString(raw), field)
        key = (path, field, raw)
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            return body
        body = self._bodies[key] = render(kind.FromString(raw), field)
        if len(self._bodies) > self._entries:
            self._bodies.popitem(last=False)
        return body

    def __len__(self) -> int:
        return len(self._bodies)
