"""The compiled writers give exactly the JSON of the generic path, for every contract message.

Every message type of ``hpcgate.v1`` is filled three ways (every field
set, with repeated fields of two elements; nothing set; every other field
set) and written both ways; the values must be equal (key order aside,
which JSON objects do not have).
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google.protobuf import descriptor, message

import hpcgate.v1
from hpcgate.edge import jsonmap, jsonwriters, rendered
from hpcgate.v1 import filesystem_pb2

FD = descriptor.FieldDescriptor


def _message_types() -> Iterator[type[message.Message]]:
    for info in pkgutil.iter_modules(hpcgate.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"hpcgate.v1.{info.name}")
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            yield getattr(module, desc.name)


def _writer(kind: type[message.Message]) -> jsonwriters.Writer | None:
    return jsonwriters.writer(kind.DESCRIPTOR)  # type: ignore[arg-type]  # upb's: the same API


def _scalar(field: Any, n: int) -> object:
    if field.cpp_type == FD.CPPTYPE_STRING:
        return b"b%d" % n if field.type == FD.TYPE_BYTES else f"s{n}\n\u00e9"
    if field.cpp_type == FD.CPPTYPE_BOOL:
        return True
    if field.cpp_type in (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE):
        return 1.5
    if field.cpp_type == FD.CPPTYPE_ENUM:
        return field.enum_type.values[-1].number  # (an enum field has its type)
    if field.cpp_type in (FD.CPPTYPE_INT64, FD.CPPTYPE_UINT64):
        return 2**40 + n
    return 7 + n


def _fill(msg: message.Message, depth: int, every: int) -> None:
    """Set every ``every``-th field of ``msg`` (and of its messages, ``depth`` levels down)."""
    counter = itertools.count()
    for field in msg.DESCRIPTOR.fields:
        if next(counter) % every:
            continue
        oneof = field.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name) is not None:
            continue  # one member of a oneof at most
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # maps have no writer: the generic path is tested in test_jsonmap
        if field.message_type is not None:
            if depth == 0:
                continue
            if field.message_type.full_name == jsonwriters.TIMESTAMP:
                items = [getattr(msg, field.name).add()] if field.is_repeated else []
                stamp = items[0] if items else getattr(msg, field.name)
                stamp.FromNanoseconds(1_700_000_000_123_000_000)
                continue
            if field.is_repeated:
                for _ in range(2):
                    _fill(getattr(msg, field.name).add(), depth - 1, every)
            else:
                child = getattr(msg, field.name)
                child.SetInParent()
                _fill(child, depth - 1, every)
        elif field.is_repeated:
            getattr(msg, field.name).extend([_scalar(field, 0), _scalar(field, 1)])
        else:
            setattr(msg, field.name, _scalar(field, 0))


TYPES = list(_message_types())


@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.DESCRIPTOR.full_name)
def test_writer_equals_the_generic_path(kind: type[message.Message], every: int) -> None:
    filled = kind()
    _fill(filled, 3, every)
    for msg in (kind(), filled):
        write = _writer(kind)
        if write is None:
            continue
        assert write(msg) == jsonmap.to_json(msg)
        assert jsonwriters.to_json(msg) == jsonmap.to_json(msg)


def test_the_big_replies_have_writers_and_others_fall_back() -> None:
    assert _writer(filesystem_pb2.LsResponse) is not None
    assert _writer(filesystem_pb2.StatResponse) is not None
    covered = [t for t in TYPES if _writer(t) is not None]
    assert len(covered) > len(TYPES) // 2
    # bytes (base64), and whatever holds them, keep the generic path
    assert _writer(filesystem_pb2.DownloadStreamResponse) is None


def test_listing_entry() -> None:
    reply = filesystem_pb2.LsResponse()
    entry = reply.output.add(name="a", type="l", user="u", group="g", size=2**40)
    entry.last_modified.seconds = 1_700_000_000
    entry.link_target = "t"
    reply.output.add(name="b", type="-")
    assert jsonwriters.to_json(reply) == {
        "output": [
            {
                "name": "a",
                "type": "l",
                "linkTarget": "t",
                "user": "u",
                "group": "g",
                "permissions": "",
                "lastModified": "2023-11-14T22:13:20Z",
                "size": str(2**40),
            },
            {
                "name": "b",
                "type": "-",
                "linkTarget": None,
                "user": "",
                "group": "",
                "permissions": "",
                "lastModified": None,
                "size": "0",
            },
        ]
    }


def test_a_long_listing_is_rendered_in_chunks_to_the_same_json() -> None:
    reply = filesystem_pb2.LsResponse()
    for i in range(2 * jsonwriters.CHUNK + 7):
        entry = reply.output.add(name=f"e{i}\n\u00e9", type="-", size=i)
        entry.last_modified.seconds = 1_700_000_000 + i % 3
    reply.unreadable.add(name="x", message="Permission denied")
    expected = jsonmap.to_json(reply)
    assert isinstance(jsonwriters.to_json(reply, chunked=True)["output"], orjson.Fragment)
    assert orjson.loads(rendered.render(reply, "")) == expected
    assert orjson.loads(rendered.render(reply, "output")) == expected["output"]
    assert jsonwriters.to_json(reply) == expected  # unchunked: plain values
