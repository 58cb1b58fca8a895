"""Stub proxies that turn ``grpc.RpcError`` into :class:`HpcgateError`.

Every method of a generated stub, sync or asyncio, keeps its signature and
its call object (cancel, metadata, ...); only errors change, wherever they
surface: at the call, while iterating a stream, or when awaiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import grpc
from google.protobuf.message import Message

from hpcgate.client.errors import from_rpc_error


class _SyncStream:
    """A server stream whose iteration raises ``HpcgateError``."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _SyncMethod:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self._inner(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return result if isinstance(result, Message) else _SyncStream(result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AsyncCall:
    """An asyncio call whose await, ``read`` and iteration raise ``HpcgateError``."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self._call.__await__())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def read(self) -> Any:
        try:
            return await self._call.read()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self._call:
                yield item
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _AsyncMethod:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> _AsyncCall:
        return _AsyncCall(self._inner(*args, **kwargs))


class Guarded:
    """A stub whose methods raise ``HpcgateError`` instead of ``grpc.RpcError``."""

    def __init__(self, stub: Any, *, asynchronous: bool) -> None:
        self._stub = stub
        self._wrap = _AsyncMethod if asynchronous else _SyncMethod

    def __getattr__(self, name: str) -> Any:
        method = self._wrap(getattr(self._stub, name))
        setattr(self, name, method)  # later lookups skip __getattr__
        return method
