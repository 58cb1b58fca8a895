"""Messages to FirecREST's JSON.

Protobuf's JSON mapping is right about names but not about FirecREST's
types and keys. FirecREST (FastAPI, pydantic) writes every field of its
model, None as null; writes integers as numbers, 64-bit ones too (clients
compare them: pyfirecrest's ``stat()["size"] < limit``); and types some ids
and sizes as strings. So after ``MessageToDict`` this module, walking the
descriptor:

- writes 64-bit integer fields as numbers;
- writes fields marked ``(hpcgate.v1.json).as_string`` as strings;
- writes an unset field with presence (``optional``, or a message) as null,
  and an empty repeated or map field marked ``null_when_empty`` as null;
- leaves out a field marked ``omit_when_empty`` that is unset or empty (a
  field of only some kinds of a FirecREST union);
- leaves out nulls within a message marked ``(hpcgate.v1.json_message).omit_null``
  (FirecREST's ``response_model_exclude_none``).

The rules are data in the contracts, so no endpoint has code of its own; no
library offers these switches. Each message type's plan is worked out once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, json_format, message

from hpcgate.v1 import options_pb2

FD = descriptor.FieldDescriptor
_INT64 = {FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64}
_INTEGERS = _INT64 | {
    FD.TYPE_INT32,
    FD.TYPE_UINT32,
    FD.TYPE_SINT32,
    FD.TYPE_FIXED32,
    FD.TYPE_SFIXED32,
}


class Scalar(enum.Enum):
    """How one scalar value reaches the wire."""

    AS_IS = enum.auto()  # protobuf's JSON form
    NUMBER = enum.auto()  # a 64-bit integer, which protobuf writes as a string
    STRING = enum.auto()  # an integer FirecREST types as a string


@dataclass(frozen=True)
class FieldPlan:
    """What the edge does with one field of a message."""

    key: str  # the JSON name
    scalar: Scalar
    nested: descriptor.Descriptor | None  # message type of the value (or of a map's values)
    is_map: bool
    is_list: bool
    null_when_unset: bool  # has presence, is not in a real oneof, is not omit_when_empty
    null_when_empty: bool
    omit_when_empty: bool


def json_options(field: FD) -> options_pb2.JsonOptions:
    """The field's ``(hpcgate.v1.json)`` option (all false when not given)."""
    opts: options_pb2.JsonOptions = field.GetOptions().Extensions[options_pb2.json]
    return opts


def omits_null(desc: descriptor.Descriptor) -> bool:
    """Whether the message's JSON leaves out null fields (``json_message.omit_null``)."""
    return bool(desc.GetOptions().Extensions[options_pb2.json_message].omit_null)


def scalar_of(field: FD) -> Scalar:
    """How the values of ``field`` (a map's: of its value field) are written."""
    if json_options(field).as_string and field.type in _INTEGERS:
        return Scalar.STRING
    if field.type in _INT64:
        return Scalar.NUMBER
    return Scalar.AS_IS


def in_real_oneof(field: FD) -> bool:
    """Whether ``field`` is a member of a real oneof (only one member is ever written).

    proto3 ``optional`` puts a field alone in a synthetic oneof named after it
    (``_name``); Python's descriptors do not flag those, so the name tells.
    """
    oneof = field.containing_oneof
    if oneof is None:
        return False
    return not (len(oneof.fields) == 1 and oneof.name == f"_{field.name}")


def _field_plan(field: FD) -> FieldPlan:
    entry = field.message_type
    is_map = entry is not None and entry.GetOptions().map_entry
    valued = entry.fields_by_name["value"] if entry is not None and is_map else field
    options = json_options(field)
    return FieldPlan(
        key=field.json_name,
        scalar=scalar_of(valued),
        nested=valued.message_type,
        is_map=is_map,
        is_list=bool(field.is_repeated) and not is_map,
        null_when_unset=(
            field.has_presence and not in_real_oneof(field) and not options.omit_when_empty
        ),
        null_when_empty=bool(field.is_repeated) and options.null_when_empty,
        omit_when_empty=options.omit_when_empty,
    )


_PLANS: dict[str, tuple[FieldPlan, ...]] = {}


def _plan(desc: descriptor.Descriptor) -> tuple[FieldPlan, ...]:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = _PLANS[desc.full_name] = tuple(_field_plan(f) for f in desc.fields)
    return plan


def _value(plan: FieldPlan, value: Any, omit: bool) -> Any:
    if plan.scalar is Scalar.NUMBER:
        return int(value)
    if plan.scalar is Scalar.STRING:
        return str(int(value))
    if plan.nested is not None and isinstance(value, dict):
        return _fix(plan.nested, value, omit)
    return value


def _fix(desc: descriptor.Descriptor, data: dict[str, Any], omit: bool) -> dict[str, Any]:
    if desc.full_name.startswith("google.protobuf."):
        return data  # well-known types have their own JSON forms
    omit = omit or omits_null(desc)
    for plan in _plan(desc):
        key = plan.key
        if key not in data:
            if plan.null_when_unset and not omit:
                data[key] = None
            continue
        value = data[key]
        if (plan.is_list or plan.is_map) and not value and plan.omit_when_empty:
            del data[key]  # (an unset scalar or message is not in data at all)
        elif (plan.is_list or plan.is_map) and not value and plan.null_when_empty:
            if omit:
                del data[key]
            else:
                data[key] = None
        elif plan.is_map:
            data[key] = {k: _value(plan, v, omit) for k, v in value.items()}
        elif plan.is_list:
            data[key] = [_value(plan, v, omit) for v in value]
        else:
            data[key] = _value(plan, value, omit)
    return data


def to_json(msg: message.Message) -> dict[str, Any]:
    """``msg`` as FirecREST's JSON (see the module's docstring)."""
    data = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    return _fix(msg.DESCRIPTOR, data, False)  # type: ignore[arg-type]  # upb's Descriptor is the same API
