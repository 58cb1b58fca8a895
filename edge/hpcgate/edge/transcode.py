"""Turn an HTTP request into the request message of its RPC, generically.

The mapping follows google.api.http: path variables and query parameters
fill the request fields they name (by proto name or JSON name), and the body
fills either the whole message (``body: "*"``) or one field. Protobuf's own
JSON parser does the type conversion, so errors name the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, cast

from google.protobuf import descriptor, json_format, message
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from hpcgate.edge.bindings import Binding
from hpcgate.v1 import options_pb2

_TRUE = {"true", "1", "yes", "on", ""}  # a bare `?recursive` means true, as in FastAPI
_FALSE = {"false", "0", "no", "off"}

# Largest multipart/form-data body the edge reads, in bytes. Each system's
# own limit (``max_ops_file_size``) is the server's to enforce; this bound
# only stops a huge body before it fills the edge's memory or disk.
MAX_FORM_BODY = 64 * 1024 * 1024

# HTML's multipart/form-data encoding (which browsers and httpx, hence
# pyfirecrest, follow) sends '"', CR and LF in a file name as %22, %0D, %0A.
_FORM_NAME_ESCAPE = re.compile("%(22|0[AaDd])")


class BadRequestError(Exception):
    """The HTTP request does not make a valid request message."""

    # The HTTP status to answer with.
    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLargeError(BadRequestError):
    """The request body is larger than the edge reads."""

    status_code = 413


def _field(desc: descriptor.Descriptor, key: str) -> descriptor.FieldDescriptor | None:
    by_name = desc.fields_by_name.get(key)
    if by_name is not None:
        return by_name
    return next((f for f in desc.fields if f.json_name == key), None)


def _scalar(field: descriptor.FieldDescriptor, text: str) -> Any:
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadRequestError(
            f"{field.json_name}: expected a boolean, got {text!r}", field.json_name
        )
    return text  # the JSON parser converts numbers and enums given as strings


def _query_value(field: descriptor.FieldDescriptor, values: list[str]) -> Any:
    if field.message_type is not None and not _is_wrapper(field):
        raise BadRequestError(
            f"{field.json_name}: cannot be given as a query parameter", field.json_name
        )
    if _is_repeated(field):
        return [_scalar(field, v) for v in values]
    if len(values) > 1:
        raise BadRequestError(f"{field.json_name}: given more than once", field.json_name)
    return _scalar(field, values[0])


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_wrapper(field: descriptor.FieldDescriptor) -> bool:
    """google.protobuf.*Value wrappers take a scalar in JSON, so also in a query."""
    msg = field.message_type
    return (
        msg is not None
        and msg.full_name.startswith("google.protobuf.")
        and msg.name.endswith("Value")
    )


def query_to_dict(binding: Binding, query: Mapping[str, list[str]]) -> dict[str, Any]:
    """Map query parameters onto request fields.

    Unknown parameters are ignored, as FastAPI (and so FirecREST) does:
    pyfirecrest sends some that an operation does not take.
    """
    allowed = binding.query_fields_by_key
    data: dict[str, Any] = {}
    for key, values in query.items():
        field = allowed.get(key)
        if field is not None:
            data[field.name] = _query_value(field, values)
    return data


async def _body(binding: Binding, request: Request) -> dict[str, Any]:
    if not binding.body:
        return {}
    raw = await request.body()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    if binding.body == "*":
        if not isinstance(parsed, dict):
            raise BadRequestError("request body must be a JSON object")
        return parsed
    return {binding.body: parsed}


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """``stream``, failing with PayloadTooLargeError once more than ``limit`` bytes came."""
    seen = 0
    async for piece in stream:
        seen += len(piece)
        if seen > limit:
            raise PayloadTooLargeError(f"request body larger than {limit} bytes")
        yield piece


async def _read_form(request: Request, limit: int) -> FormData:
    """The multipart/form-data body of ``request``, read while it stays within ``limit``."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise BadRequestError("request body must be multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body larger than {limit} bytes")
    async with aclosing(_bounded(request.stream(), limit)) as stream:
        try:
            return await MultiPartParser(request.headers, stream).parse()
        except MultiPartException as error:
            raise BadRequestError(f"malformed multipart body: {error.message}") from None


def _form_filename(raw: str) -> str:
    """The part's file name with HTML's form escapes (%22, %0D, %0A) decoded."""
    return _FORM_NAME_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)


async def _form_file(
    binding: Binding, request: Request, target: message.Message, limit: int
) -> None:
    name = binding.rest.multipart_file_field
    form = await _read_form(request, limit)
    try:
        part = form.get(name)
        if not isinstance(part, UploadFile):
            raise BadRequestError(f"{name}: missing multipart file part", name)
        uploaded = options_pb2.UploadedFile(
            filename=_form_filename(part.filename or ""),
            content_type=part.content_type or "",
            content=await part.read(),
        )
    finally:
        await form.close()
    getattr(target, name).CopyFrom(uploaded)


# Per message type: its singular string fields by JSON and by proto name.
_STRING_FIELDS: dict[str, dict[str, descriptor.FieldDescriptor]] = {}


def _string_fields(target: message.Message) -> dict[str, descriptor.FieldDescriptor]:
    kind = target.DESCRIPTOR
    fields = _STRING_FIELDS.get(kind.full_name)
    if fields is None:
        fields = {}
        for any_field in kind.fields:
            field = cast(descriptor.FieldDescriptor, any_field)  # upb's or the pure one
            if field.type == field.TYPE_STRING and not _is_repeated(field):
                fields[field.json_name] = fields[field.name] = field
        _STRING_FIELDS[kind.full_name] = fields
    return fields


def _parse(data: dict[str, Any], target: message.Message) -> None:
    """Fill ``target`` from ``data`` (JSON names or proto names), as json_format.ParseDict.

    Most requests carry only strings for string fields (the system name and
    a path): those are set directly, because ParseDict's general walk was the
    largest piece of the edge's own per-request CPU. Anything else goes
    through ParseDict, which also writes the error messages.
    """
    fields = _string_fields(target)
    simple = all(isinstance(value, str) and key in fields for key, value in data.items())
    if simple and len({fields[key].name for key in data}) == len(data):
        try:
            for key, value in data.items():
                setattr(target, fields[key].name, value)
            return
        except (TypeError, ValueError):  # not valid UTF-8, say: ParseDict words the error
            target.Clear()
    try:
        json_format.ParseDict(data, target)
    except json_format.ParseError as error:
        raise BadRequestError(str(error)) from None


async def build_request(
    binding: Binding, request: Request, *, max_form_body: int = MAX_FORM_BODY
) -> message.Message:
    """The RPC's request message for ``request``; raises BadRequestError naming the field.

    A multipart body larger than ``max_form_body`` bytes is PayloadTooLargeError.
    """
    target = binding.request_class()
    data = await _body(binding, request)
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    data.update(query_to_dict(binding, query))
    for name in binding.path_fields:
        data[name] = request.path_params[name]
    _parse(data, target)
    if binding.rest.multipart_file_field:
        await _form_file(binding, request, target, max_form_body)
    return target
