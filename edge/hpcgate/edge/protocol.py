"""uvicorn's httptools protocol with a deadline and a size bound on request headers.

uvicorn has neither: a connection that opens and sends nothing, or sends its
headers a byte at a time (slowloris), or sends megabytes of headers, holds
a connection (and memory) as long as it likes; ``timeout_keep_alive`` only
starts after a response. llhttp bounds nothing by itself either. So this
subclass arms a timer when a connection opens and when each request begins,
disarms it when the request's headers are complete, and counts the bytes
that came before; either limit broken gets a short answer and the
connection closes. Bodies are bounded by the application (:mod:`.body`),
where the route, and so the limit, is known.

Closing a socket while the client is still sending makes the kernel answer
with a reset, and a client that gets it before it reads loses the answer
(the 413 or 401 with its reason). So a connection closed in the middle of a
request closes "lingering", as Apache and nginx do: the answer is flushed,
the write side shut, and what the client still sends is read and dropped
until it closes too, for ``linger_time`` seconds at most.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _refusal(status: int, text: str, reason: str, message: str) -> bytes:
    body = json.dumps({"errorType": "error", "message": message, "data": {"reason": reason}})
    head = (
        f"HTTP/1.1 {status} {text}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


class _LingeringTransport:
    """The connection's transport, whose ``close`` lingers while a request is half read."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.in_request and self._transport.can_write_eof():
            self._protocol.linger()
        else:
            self._transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request headers must come within a time and a size."""

    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    linger_time: float = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False
        self._in_body = False
        self.lingering = False
        self._raw: asyncio.Transport | None = None

    @property
    def in_request(self) -> bool:
        """Whether a request has begun and its body has not come in full."""
        return self._in_headers or self._in_body

    def linger(self) -> None:
        """Flush, shut the write side, drop what comes, close on EOF or after ``linger_time`` s."""
        raw = self._raw
        if self.lingering or raw is None:
            return
        self.lingering = True
        self._disarm()
        raw.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(self.linger_time, raw.close)

    def _arm(self) -> None:
        self._disarm()
        self._in_headers = True
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()  # lingers: the request is incomplete
        self._disarm()

    def _headers_late(self) -> None:
        self._header_timer = None
        self._refuse(
            _refusal(
                408,
                "Request Timeout",
                "REQUEST_TIMEOUT",
                f"request headers not received within {self.header_timeout:g} s",
            )
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw = transport
        self.transport = cast(asyncio.Transport, _LingeringTransport(transport, self))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self.lingering and self._raw is not None:
            self._raw.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the answer is out; what the client still sends is dropped
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Counted before parsing, judged after: bytes that completed the
        # headers in this piece (the start of a body, say) do not count.
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refuse(
                _refusal(
                    431,
                    "Request Header Fields Too Large",
                    "HEADERS_TOO_LARGE",
                    f"request headers larger than {self.max_header_bytes} bytes",
                )
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # a further request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "ConfiguredGuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes},
    )
