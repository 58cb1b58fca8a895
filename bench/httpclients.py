"""Many concurrent HTTP requests from httpx without httpcore's pool doing the work.

One ``httpx.AsyncClient`` with all requests gathered at once is how the
FirecREST paper drove its small-file benchmark, but on this machine the
client then costs more CPU than the service it measures: for every request
it assigns, httpcore's connection pool scans every connection (a ``poll``
system call each, to see whether an idle one was closed) and every queued
request. Measured against a trivial uvicorn/Starlette server returning 1 KB,
1,000 requests gathered on one client took 1.1 to 1.5 s of client CPU with
10 to 100 connections (6 s with no limit), and 0.41 s from 100 clients of
one connection each fed from one queue: the same 100 requests in flight on
the wire, a third of the cost.

So the httpx figures gather every request at once into a queue, and
:data:`CONNECTIONS` one-connection clients take them off it.

:class:`AiohttpClient` is the client the seeds measured hpcgate and
FirecREST with: one ``aiohttp.ClientSession`` (its connector keeps up to
:data:`CONNECTIONS` connections, like httpx's default), every request
gathered at once. aiohttp's pool hands a free connection out without
scanning them all, so it needs no queue of its own. Its answers are
:class:`Answer` (status and body): building an httpx.Response per request
cost 47 us (``timeit``), a tenth of the SFTP floor's time per file, which
the figure would have counted as the service's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import httpx

# Connections to the edge: httpx's default max_connections.
CONNECTIONS = 100

Query = Mapping[str, str]


class ClientPerConnection:
    """:data:`CONNECTIONS` httpx.AsyncClients of one connection each, sharing one queue."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._clients = [
            httpx.AsyncClient(base_url=base_url, headers=dict(headers), timeout=timeout, limits=one)
            for _ in range(CONNECTIONS)
        ]

    async def get_all(self, url: str, queries: Sequence[Query]) -> list[httpx.Response]:
        """GET ``url`` once per query, all queued at once; responses in the queries' order."""
        pending = deque(enumerate(queries))
        responses: list[httpx.Response | None] = [None] * len(queries)

        async def drain(client: httpx.AsyncClient) -> None:
            while pending:
                index, query = pending.popleft()
                responses[index] = await client.get(url, params=query)

        await asyncio.gather(*(drain(client) for client in self._clients))
        return [response for response in responses if response is not None]

    async def __aenter__(self) -> ClientPerConnection:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
        *_: Any,
    ) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))


@dataclass(frozen=True, slots=True)
class Answer:
    """One aiohttp GET's status and body; :meth:`response` is it as an httpx.Response."""

    url: str
    query: Query
    status: int
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def response(self) -> httpx.Response:
        """The answer as httpx's, for the checks httpx's figures use (outside the timer)."""
        request = httpx.Request("GET", self.url, params=self.query)
        return httpx.Response(self.status, content=self.content, request=request)


class AiohttpClient:
    """One aiohttp.ClientSession of up to :data:`CONNECTIONS` connections, requests gathered."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        self._base_url = base_url
        self._session = aiohttp.ClientSession(
            base_url,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=CONNECTIONS),
        )

    async def get(self, url: str, query: Query) -> Answer:
        """GET ``url`` with ``query``, read whole."""
        async with self._session.get(url, params=query) as answer:
            content = await answer.read()
            return Answer(self._base_url + url, query, answer.status, content)

    async def get_all(self, url: str, queries: Sequence[Query]) -> list[Answer]:
        """GET ``url`` once per query, all at once; responses in the queries' order."""
        return list(await asyncio.gather(*(self.get(url, query) for query in queries)))

    async def __aenter__(self) -> AiohttpClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
        *_: Any,
    ) -> None:
        await self._session.close()
