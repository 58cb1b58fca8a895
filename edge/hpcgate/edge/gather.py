"""Requests of one caller that arrive together, answered by one call: RPCs whose contract says so.

A gRPC call costs the edge about 0.2 ms of CPU and the server about 0.25 ms
(grpc.aio's own floor), more than the HTTP request it serves: a workflow
fetching a thousand small files over ``ops/download`` paid it a thousand
times. An RPC whose ``(hpcgate.v1.rest).gathered_by`` names another (``Download``:
``DownloadMany``) has its requests of one caller (the same token) for one
system gathered while the event loop turns once; then

- a request that came alone is an ordinary call (the caller is told to make
  it: :meth:`Gatherer.submit` answers None), so one download at a time costs
  what it did;
- two or more go as one call of the gathering RPC, whose stream brings each
  request's reply or error (a google.rpc.Status) as the single call would
  have answered it, several to a stream message (``max_files_per_reply``:
  a message costs each end more than a small file's answer); the server
  runs the same code for each.

A caller's requests never share a call with another token's. A call that
fails as a whole (a refused token, the server unreachable) is each
request's failure, as each call's would have been.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import status_pb2

from hpcgate.edge.bindings import Gathering

# Requests in one gathered call at most (the server takes 1,000), and
# answers to one of its stream messages at most (the server bounds their bytes).
MAX_GATHERED = 1000
PER_REPLY = MAX_GATHERED
Metadata = list[tuple[str, str]]


@dataclass(frozen=True)
class Gathered:
    """One request's answer from a gathered call.

    ``reply`` or ``error`` (a google.rpc.Status) is the request's own outcome;
    ``failed`` is the whole call's failure, when it brought no outcome for
    this request; ``username`` is the caller the server named (empty if none).
    """

    reply: Any = None
    error: status_pb2.Status | None = None
    failed: grpc.aio.AioRpcError | None = None
    username: str = ""


@dataclass
class _Batch:
    gathering: Gathering
    system: str
    metadata: Metadata
    paths: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[Gathered | None]] = field(default_factory=list)
    closed: bool = False


Key = tuple[str, str, str]  # gathering RPC, token, system
Caller = Callable[[Gathering], Any]  # the unary-stream multi-callable of a gathering RPC


class Gatherer:
    """Gathers requests by caller, system and RPC for one loop turn, and makes their calls."""

    def __init__(
        self, callable_of: Caller, timeout: float, username_of: Callable[[Any], str]
    ) -> None:
        self._callable_of = callable_of
        self._timeout = timeout
        self._username_of = username_of
        self._open: dict[Key, _Batch] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def submit(
        self, gathering: Gathering, token: str, system: str, path: str, metadata: Metadata
    ) -> Gathered | None:
        """The answer to the request for ``path``, or None: it came alone, call it yourself."""
        key = (gathering.rpc_path, token, system)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(gathering, system, metadata)
            asyncio.get_running_loop().call_soon(self._close, key, batch)
        waiter: asyncio.Future[Gathered | None] = asyncio.get_running_loop().create_future()
        batch.paths.append(path)
        batch.waiters.append(waiter)
        if len(batch.paths) >= MAX_GATHERED:
            self._close(key, batch)
        return await waiter

    def _close(self, key: Key, batch: _Batch) -> None:
        """No more requests join ``batch``: one alone calls itself, more are one call."""
        if batch.closed:
            return  # it filled up before the loop turned
        batch.closed = True
        if self._open.get(key) is batch:
            del self._open[key]
        if len(batch.waiters) == 1:
            _answer(batch.waiters[0], None)
            return
        task = asyncio.get_running_loop().create_task(self._call(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _call(self, batch: _Batch) -> None:
        outcomes: dict[int, Any] = {}
        make: Any = batch.gathering.request_class
        request = make(system_name=batch.system, paths=batch.paths, max_files_per_reply=PER_REPLY)
        call = self._callable_of(batch.gathering)(
            request, metadata=batch.metadata, timeout=self._timeout
        )
        failed: grpc.aio.AioRpcError | None = None
        username = ""
        try:
            async for reply in call:
                # Several answers to a reply, or (a server before that) one.
                for answer in reply.files or (reply,):
                    outcomes[answer.index] = answer
            username = self._username_of(await call.trailing_metadata())
        except grpc.aio.AioRpcError as error:
            failed = error
        finally:
            call.cancel()  # a no-op once the call has ended
        for index, waiter in enumerate(batch.waiters):
            reply = outcomes.get(index)
            if reply is None:
                _answer(waiter, Gathered(failed=failed or _missing()))
            elif reply.HasField("error"):
                _answer(waiter, Gathered(error=reply.error, username=username))
            else:
                _answer(waiter, Gathered(reply=reply.body, username=username))


def _answer(waiter: asyncio.Future[Gathered | None], answer: Gathered | None) -> None:
    if not waiter.done():  # a request whose client went away is cancelled
        waiter.set_result(answer)


def _missing() -> grpc.aio.AioRpcError:
    """The failure of a request a finished call brought no outcome for (a server's bug)."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="the gathered call brought no answer for this request",
        debug_error_string="",
    )
