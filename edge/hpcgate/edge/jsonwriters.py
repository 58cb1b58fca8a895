"""FirecREST's JSON of a message, read straight from its fields: :mod:`.jsonmap`'s rules, faster.

``MessageToDict`` walks every field of every message generically and
:mod:`.jsonmap` then walks its output again: ~50 us per entry of an
``ls`` reply, nearly all of the edge's CPU for a big directory (py-spy,
``bench/scenarios/big_dir.py``). For message types made only of strings,
bools, integers, nested such messages, Timestamps and repeated fields of
those (listings, jobs, most replies), this module works out each type's
steps once, compiles them into one function (:func:`_writer`), and
writes the JSON value in one pass, by the same
rules (see :mod:`.jsonmap`): integers as numbers (``as_string``: strings),
unset fields with presence as null unless left out (``omit_null``,
``omit_when_empty``, members of a real oneof), empty repeated fields as
``[]``, null (``null_when_empty``) or left out, Timestamps in RFC 3339 as
protobuf writes them. Keys come in field order. Any other type (enums,
floats, bytes, maps, other well-known types) gets no writer, and
:func:`.jsonmap.to_json` keeps its generic path for it.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import descriptor, message

from hpcgate.edge import jsonmap
from hpcgate.edge.jsonmap import Scalar, in_real_oneof, json_options, omits_null, scalar_of

FD = descriptor.FieldDescriptor
Writer = Callable[..., dict[str, Any]]  # (message, chunked=False) -> its JSON value
Convert = Callable[[Any], Any] | None  # None: the value as it is
_PLAIN = {FD.TYPE_STRING, FD.TYPE_BOOL}
TIMESTAMP = "google.protobuf.Timestamp"
WELL_KNOWN = "google.protobuf."  # their own JSON forms: only Timestamp's is written here
# RFC 3339 forms of the Timestamps seen lately (listings repeat mtimes); cleared when full.
_STAMPS: dict[tuple[int, int], str] = {}
STAMP_CACHE = 4096
# With ``chunked``, a repeated message field longer than this is written to
# JSON bytes this many elements at a time (an orjson.Fragment): the edge then
# never holds the dicts of a 100,000-entry listing at once (~70 MB), only the
# reply, one chunk's dicts and the bytes.
CHUNK = 1000


@dataclass(frozen=True)
class Step:
    """How one field reaches the JSON object."""

    name: str  # the attribute
    key: str  # the JSON name
    convert: Convert
    repeated: bool
    presence: bool  # written only when set (HasField)
    null_when_unset: bool  # when not set: null (else left out)
    when_empty: str  # a repeated field with no element: "list", "null" or "omit"


def _stamp(value: Any) -> str:
    key = (value.seconds, value.nanos)
    text = _STAMPS.get(key)
    if text is None:
        if len(_STAMPS) >= STAMP_CACHE:
            _STAMPS.clear()
        text = _STAMPS[key] = value.ToJsonString()
    return text


def _convert(field: FD, omit: bool) -> tuple[bool, Convert]:
    """Whether the field's values can be written here, and how."""
    if field.type == FD.TYPE_MESSAGE:
        nested = field.message_type
        if nested is None or nested.GetOptions().map_entry:
            return False, None
        if nested.full_name == TIMESTAMP:
            return True, _stamp
        if nested.full_name.startswith(WELL_KNOWN):
            return False, None
        inner = writer(nested, omit)
        return inner is not None, inner
    if field.type in _PLAIN:
        return True, None
    scalar = scalar_of(field)
    if scalar is Scalar.STRING:
        return True, str
    if field.type == FD.TYPE_ENUM or (
        scalar is Scalar.AS_IS
        and field.cpp_type
        not in (
            FD.CPPTYPE_INT32,
            FD.CPPTYPE_UINT32,
        )
    ):
        return False, None  # enums, floats, doubles, bytes
    return True, None  # integers: numbers, as upb gives them


def _step(field: FD, omit: bool) -> Step | None:
    supported, convert = _convert(field, omit)
    if not supported:
        return None
    options = json_options(field)
    repeated = bool(field.is_repeated)
    when_empty = "list"
    if repeated and options.omit_when_empty:
        when_empty = "omit"
    elif repeated and options.null_when_empty:
        when_empty = "omit" if omit else "null"
    presence = not repeated and field.has_presence
    null_when_unset = (
        presence and not in_real_oneof(field) and not options.omit_when_empty and not omit
    )
    return Step(
        field.name, field.json_name, convert, repeated, presence, null_when_unset, when_empty
    )


def _compile(desc: descriptor.Descriptor, omit: bool) -> Writer | None:
    steps = []
    for field in desc.fields:
        step = _step(field, omit)
        if step is None:
            return None
        steps.append(step)
    return _writer(tuple(steps))


def _writer(steps: tuple[Step, ...]) -> Writer:
    """One function writing exactly ``steps``, compiled from source made for them.

    The same steps walked in a loop (a getattr, the tests of a step's
    kind, a call per field) took 2.5 us per entry of an ``ls`` reply, the
    edge's whole cost of a big listing; straight-line code reading each
    field by its attribute takes about half (dataclasses builds its
    methods the same way). Only names from the descriptors and ``repr``
    of them reach the source, never a value.
    """
    env: dict[str, Any] = {"_chunked": _chunked, "CHUNK": CHUNK}
    lines = ["def write(msg, chunked=False):", "    data = {}"]
    for index, step in enumerate(steps):
        read = _attribute(step.name)
        key = f"data[{step.key!r}]"
        convert = None if step.convert is None else f"c{index}"
        if convert is not None:
            env[convert] = step.convert
        if step.repeated:
            lines.append(f"    v = {read}")
            if convert is not None:
                lines.append(f"    if chunked and len(v) > CHUNK: {key} = _chunked(v, {convert})")
                lines.append(f"    elif v: {key} = list(map({convert}, v))")
            else:
                lines.append(f"    if v: {key} = list(v)")
            if step.when_empty == "list":
                lines.append(f"    else: {key} = []")
            elif step.when_empty == "null":
                lines.append(f"    else: {key} = None")
        elif step.presence:
            value = read if convert is None else f"{convert}({read})"
            lines.append(f"    if msg.HasField({step.name!r}): {key} = {value}")
            if step.null_when_unset:
                lines.append(f"    else: {key} = None")
        else:
            lines.append(f"    {key} = {read if convert is None else f'{convert}({read})'}")
    lines.append("    return data")
    exec("\n".join(lines), env)  # the source holds descriptor names only, no value
    write: Writer = env["write"]
    return write


def _attribute(name: str) -> str:
    """Source reading the field ``name`` of ``msg`` (a keyword cannot follow a dot)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"msg.{name}"
    return f"getattr(msg, {name!r})"


def _chunked(values: Sequence[Any], convert: Callable[[Any], Any]) -> orjson.Fragment:
    """``values`` converted and written as a JSON array, CHUNK elements at a time."""
    parts = [
        orjson.dumps([convert(v) for v in values[start : start + CHUNK]])[1:-1]
        for start in range(0, len(values), CHUNK)
    ]
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


_WRITERS: dict[tuple[str, bool], Writer | None] = {}


def writer(desc: descriptor.Descriptor, omit: bool = False) -> Writer | None:
    """The writer of ``desc``'s messages (nulls left out with ``omit``), or None if it has none.

    Worked out once per type. A type that contains itself gets none (the
    entry is None while it is being compiled).
    """
    if desc.full_name.startswith(WELL_KNOWN):
        return None
    omit = omit or omits_null(desc)
    key = (desc.full_name, omit)
    if key in _WRITERS:
        return _WRITERS[key]
    _WRITERS[key] = None
    found = _WRITERS[key] = _compile(desc, omit)
    return found


def to_json(msg: message.Message, chunked: bool = False) -> dict[str, Any]:
    """``msg`` as FirecREST's JSON: by its type's writer, else by :func:`.jsonmap.to_json`.

    With ``chunked``, long lists of messages may come as orjson Fragments
    (JSON already written, see :data:`CHUNK`): for ``orjson.dumps`` only.
    """
    write = writer(msg.DESCRIPTOR)  # type: ignore[arg-type]  # upb's Descriptor is the same API
    return write(msg, chunked) if write is not None else jsonmap.to_json(msg)
