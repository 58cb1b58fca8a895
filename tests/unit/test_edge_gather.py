"""The edge's gathering of concurrent requests (:mod:`hpcgate.edge.gather`): who rides together.

A real grpc.aio server on loopback answers the gathering RPC here with a
servicer of the test's own, which records every call: the rules under test
(one loop turn, one token and system per call, the size bound, a failed or
incomplete call) are the edge's, whatever the server reads. The real
server's answers are compared in ``tests/integration/test_edge_gathered.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2
from google.rpc import status_pb2

from hpcgate.edge import gather
from hpcgate.edge.bindings import Gathering, bindings_of, hpcgate_services
from hpcgate.edge.gather import Gatherer
from hpcgate.v1 import filesystem_pb2

FAIL = "fail-the-call"
SKIP = "answer-nothing-for-me"


def _download_gathering() -> Gathering:
    bindings = bindings_of(hpcgate_services())
    (binding,) = [b for b in bindings if b.method.full_name == "hpcgate.v1.Filesystem.Download"]
    assert binding.gathered_by is not None
    return binding.gathered_by


@dataclass
class Recorder:
    """Records each call; answers two files to a reply when asked to pack (else one)."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    per_reply: list[int] = field(default_factory=list)
    packs: bool = True

    async def many(
        self, request: filesystem_pb2.DownloadManyRequest, context: Any
    ) -> AsyncIterator[filesystem_pb2.DownloadManyResponse]:
        token = dict(context.invocation_metadata())["authorization"]
        self.calls.append((token, list(request.paths)))
        self.per_reply.append(request.max_files_per_reply)
        if FAIL in request.paths:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        answers = [
            _answer(request.system_name, index, path)
            for index, path in reversed(list(enumerate(request.paths)))
            if path != SKIP
        ]
        if not (self.packs and request.max_files_per_reply > 1):
            for answer in answers:
                yield answer
            return
        for start in range(0, len(answers), 2):
            yield filesystem_pb2.DownloadManyResponse(files=answers[start : start + 2])


def _answer(system: str, index: int, path: str) -> filesystem_pb2.DownloadManyResponse:
    if path.startswith("missing"):
        error = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message=path)
        return filesystem_pb2.DownloadManyResponse(index=index, error=error)
    body = httpbody_pb2.HttpBody(data=f"{system}:{path}".encode())
    return filesystem_pb2.DownloadManyResponse(index=index, body=body)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Gatherer, Recorder]]:
    recorder = Recorder()
    gathering = _download_gathering()
    service, method = gathering.rpc_path.strip("/").split("/")
    handler = grpc.unary_stream_rpc_method_handler(
        recorder.many,
        request_deserializer=filesystem_pb2.DownloadManyRequest.FromString,
        response_serializer=filesystem_pb2.DownloadManyResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    def callable_of(g: Gathering) -> Any:
        return channel.unary_stream(
            g.rpc_path,
            request_serializer=filesystem_pb2.DownloadManyRequest.SerializeToString,
            response_deserializer=g.response_class.FromString,
        )

    try:
        yield Gatherer(callable_of, 10.0, lambda _: "someone"), recorder
    finally:
        await channel.close(None)
        await server.stop(0)


async def _submit(gatherer: Gatherer, token: str, system: str, path: str) -> Any:
    metadata = [("authorization", token)]
    return await gatherer.submit(_download_gathering(), token, system, path, metadata)


async def test_a_request_that_comes_alone_is_told_to_call_itself(
    served: tuple[Gatherer, Recorder],
) -> None:
    gatherer, recorder = served
    assert await _submit(gatherer, "t1", "cluster", "a") is None
    assert recorder.calls == []


async def test_requests_of_one_turn_ride_one_call_by_token_and_system(
    served: tuple[Gatherer, Recorder],
) -> None:
    gatherer, recorder = served
    asked = [("t1", "cluster", "a"), ("t2", "cluster", "b"), ("t1", "cluster", "c")]
    asked += [("t1", "other", "d"), ("t1", "other", "missing-e"), ("t2", "cluster", "f")]
    answers = await asyncio.gather(*(_submit(gatherer, *a) for a in asked))
    assert sorted(recorder.calls) == [
        ("t1", ["a", "c"]),
        ("t1", ["d", "missing-e"]),
        ("t2", ["b", "f"]),
    ]
    bodies = [a.reply.data if a.reply is not None else None for a in answers]
    assert bodies == [b"cluster:a", b"cluster:b", b"cluster:c", b"other:d", None, b"cluster:f"]
    assert answers[4].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert {a.username for a in answers} == {"someone"}
    assert recorder.per_reply == [gather.PER_REPLY] * 3  # the edge takes packed replies


async def test_answers_one_to_a_reply_are_taken_too(served: tuple[Gatherer, Recorder]) -> None:
    """A server that does not pack (before ``max_files_per_reply``) answers each alone."""
    gatherer, recorder = served
    recorder.packs = False
    paths = ["a", "missing-b", "c"]
    answers = await asyncio.gather(*(_submit(gatherer, "t1", "cluster", p) for p in paths))
    assert [a.reply.data if a.reply is not None else None for a in answers] == [
        b"cluster:a",
        None,
        b"cluster:c",
    ]
    assert answers[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_full_call_is_sent_and_the_rest_ride_the_next(
    served: tuple[Gatherer, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    gatherer, recorder = served
    monkeypatch.setattr(gather, "MAX_GATHERED", 3)
    answers = await asyncio.gather(*(_submit(gatherer, "t1", "cluster", str(n)) for n in range(7)))
    assert [len(paths) for _, paths in recorder.calls] == [3, 3]
    assert answers[6] is None  # the seventh came alone into its own turn's batch
    assert [a.reply.data for a in answers[:6]] == [f"cluster:{n}".encode() for n in range(6)]


async def test_a_failed_call_is_each_requests_failure_and_a_missing_answer_an_error(
    served: tuple[Gatherer, Recorder],
) -> None:
    gatherer, _ = served
    failed = await asyncio.gather(*(_submit(gatherer, "t1", "cluster", p) for p in ("a", FAIL)))
    assert [a.failed.code() for a in failed] == [grpc.StatusCode.UNAVAILABLE] * 2
    partial = await asyncio.gather(*(_submit(gatherer, "t1", "cluster", p) for p in ("a", SKIP)))
    assert partial[0].reply.data == b"cluster:a"
    assert partial[1].failed.code() == grpc.StatusCode.INTERNAL
