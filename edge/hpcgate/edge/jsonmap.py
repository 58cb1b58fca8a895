"""Messages to FirecREST's JSON.

Protobuf's JSON mapping is right about names and presence but writes 64-bit
integers as strings; FirecREST (FastAPI) writes them as numbers, and its
clients compare them (pyfirecrest: ``stat()["size"] < limit``). So after
``MessageToDict`` this module turns 64-bit integer fields back into numbers,
walking the descriptor. No library offers that switch.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, json_format, message

FD = descriptor.FieldDescriptor
_INT64 = {FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64}


def _value(field: FD, value: Any) -> Any:
    if field.type in _INT64:
        return int(value)
    if field.message_type is not None and isinstance(value, dict):
        return _fix(field.message_type, value)
    return value


def _fix(desc: descriptor.Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    if desc.full_name.startswith("google.protobuf."):
        return data  # well-known types have their own JSON forms
    for field in desc.fields:
        key = field.json_name
        if key not in data:
            continue
        value = data[key]
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            inner = entry.fields_by_name["value"]
            data[key] = {k: _value(inner, v) for k, v in value.items()}
        elif isinstance(value, list):
            data[key] = [_value(field, v) for v in value]
        else:
            data[key] = _value(field, value)
    return data


def to_json(msg: message.Message) -> dict[str, Any]:
    """``msg`` as FirecREST's JSON: camelCase names, defaults written, 64-bit ints as numbers."""
    data = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    return _fix(msg.DESCRIPTOR, data)  # type: ignore[arg-type]  # upb's Descriptor is the same API
