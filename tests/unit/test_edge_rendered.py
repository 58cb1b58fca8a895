"""The edge's rendered-reply cache: the same body as rendering anew, bounded, keyed by the bytes."""

from __future__ import annotations

import json

from hpcgate.edge.jsonmap import to_json
from hpcgate.edge.rendered import RenderedReplies
from hpcgate.v1 import filesystem_pb2, scheduler_pb2

PATH = "/hpcgate.v1.Filesystem/Ls"


def _listing(*names: str) -> bytes:
    files = [filesystem_pb2.File(name=name, size=2**40) for name in names]
    return filesystem_pb2.LsResponse(output=files).SerializeToString()


def test_a_body_is_what_rendering_the_reply_gives_and_is_reused() -> None:
    cache = RenderedReplies()
    raw = _listing("a", "é")
    body = cache.body(filesystem_pb2.LsResponse, PATH, "", raw)
    assert json.loads(body) == to_json(filesystem_pb2.LsResponse.FromString(raw))
    assert "é".encode() in body  # UTF-8 as Starlette's JSONResponse writes, not \\u escapes
    assert cache.body(filesystem_pb2.LsResponse, PATH, "", raw) is body
    assert len(cache) == 1


def test_the_selected_field_and_the_rpc_are_part_of_the_key() -> None:
    cache = RenderedReplies()
    raw = _listing("a")
    whole = json.loads(cache.body(filesystem_pb2.LsResponse, PATH, "", raw))
    output = json.loads(cache.body(filesystem_pb2.LsResponse, PATH, "output", raw))
    assert output == whole["output"]
    unset = scheduler_pb2.SubmitJobResponse().SerializeToString()  # b"": shared by many types
    assert json.loads(cache.body(scheduler_pb2.SubmitJobResponse, "/x/Submit", "", unset)) == {
        "jobId": None
    }
    assert json.loads(cache.body(filesystem_pb2.LsResponse, PATH, "", unset)) == {"output": []}


def test_the_cache_keeps_the_most_recent_entries_and_no_large_reply() -> None:
    cache = RenderedReplies(entries=2, max_reply_bytes=64)
    first, second, third = _listing("1"), _listing("2"), _listing("3")
    kept = cache.body(filesystem_pb2.LsResponse, PATH, "", first)
    cache.body(filesystem_pb2.LsResponse, PATH, "", second)
    assert cache.body(filesystem_pb2.LsResponse, PATH, "", first) is kept  # now most recent
    cache.body(filesystem_pb2.LsResponse, PATH, "", third)  # drops "2", the least recent
    assert len(cache) == 2
    assert cache.body(filesystem_pb2.LsResponse, PATH, "", first) is kept
    large = _listing(*(f"name-{i}" for i in range(20)))
    assert len(large) > 64
    body = cache.body(filesystem_pb2.LsResponse, PATH, "", large)
    assert len(json.loads(body)["output"]) == 20
    assert len(cache) == 2
