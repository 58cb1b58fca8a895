"""The live server and edge on an event loop of their own, for synchronous tests.

Schemathesis drives its cases from synchronous test functions (Hypothesis
cannot await), and while such a test runs, the session's event loop, where
the ``live`` fixture serves, does not. So the fuzz tests run the same stack
(``start_service`` on ``live_settings``) on a uvloop in a thread, as a separate
process would, and reach it over loopback HTTP like any client.
"""

from __future__ import annotations

import asyncio
import shlex
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from cluster_fixture import Cluster
from conftest import Service, live_settings, start_service
from devkeys import DevIssuer

T = TypeVar("T")


class ThreadedStack:
    """A server and an edge on the loopback cluster, served by a thread's event loop."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.issuer = DevIssuer.generate()
        self._jwks = workdir / "jwks.json"
        self.issuer.write_jwks(self._jwks)
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-stack")
        self._stop: asyncio.Event | None = None
        self._served: asyncio.Future[None] | None = None
        self.service: Service | None = None

    @property
    def rest_url(self) -> str:
        assert self.service is not None, "the stack is not started"
        return self.service.rest_url

    def headers(self, user: str) -> dict[str, str]:
        """HTTP headers authenticating as ``user`` with a fresh token."""
        return {"Authorization": f"Bearer {self.issuer.token(user)}"}

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run ``coro`` on the stack's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def shell(self, user: str, *argv: str) -> str:
        """Run ``argv`` (quoted) as ``user`` on the cluster over SSH; returns its stdout."""
        async with self.cluster.connect(user) as conn:
            result = await conn.run(shlex.join(argv), check=True)
        return str(result.stdout)

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        self._stop = asyncio.Event()
        try:
            async for service in start_service(live_settings(self.cluster, self._jwks)):
                for system in service.running.runtime.systems.values():
                    await system.health.wait_first_run()
                self.service = service
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    def start(self) -> None:
        self._thread.start()

        async def begin() -> asyncio.Future[None]:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._served = asyncio.ensure_future(self._serve(ready))
            return ready

        ready = self.run(begin())
        self.run(_wait(ready))

    def stop(self) -> None:
        async def end() -> None:
            if self._stop is not None:
                self._stop.set()
            if self._served is not None:
                await self._served

        try:
            self.run(end())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


async def _wait(future: asyncio.Future[None]) -> None:
    await future


@contextmanager
def threaded_stack(cluster: Cluster, workdir: Path) -> Iterator[ThreadedStack]:
    """A started :class:`ThreadedStack`, stopped on exit."""
    stack = ThreadedStack(cluster, workdir)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
