"""Turn an HTTP request into the request message of its RPC, generically.

The mapping follows google.api.http: path variables and query parameters
fill the request fields they name (by proto name or JSON name), and the body
fills either the whole message (``body: "*"``) or one field. Protobuf's own
JSON parser does the type conversion, so errors name the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import descriptor, json_format, message
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from hpcgate.edge.bindings import Binding, is_required
from hpcgate.edge.body import BodyLimits, bounded_stream, read_body
from hpcgate.v1 import options_pb2

_TRUE = {"true", "1", "yes", "on", ""}  # a bare `?recursive` means true, as in FastAPI
_FALSE = {"false", "0", "no", "off"}

# Largest multipart/form-data body the edge reads, in bytes. Each system's
# own limit (``max_ops_file_size``) is the server's to enforce; this bound
# only stops a huge body before it fills the edge's memory or disk.
MAX_FORM_BODY = BodyLimits.upload

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


# Well-known types whose JSON form is one string ("30s", an RFC 3339 time,
# "a,b"), so that a query parameter can carry them too.
_STRING_FORMS = frozenset(
    {"google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask"}
)


def _is_wrapper(field: descriptor.FieldDescriptor) -> bool:
    """Message fields whose JSON form is a scalar, so also a query value: the
    google.protobuf.*Value wrappers and the string-form well-known types."""
    msg = field.message_type
    if msg is None or not msg.full_name.startswith("google.protobuf."):
        return False
    return msg.name.endswith("Value") or msg.full_name in _STRING_FORMS


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


def parse_json_body(binding: Binding, raw: bytes) -> dict[str, Any]:
    """The JSON body ``raw`` as request fields; BadRequestError naming what is wrong.

    The bytes are decoded as UTF-8 here, strictly, so that bad bytes are the
    client's error (400) and not a UnicodeDecodeError deep in ``json``; a
    document nested too deeply for the parser is a 400 as well.
    """
    if not binding.body or not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequestError(
            f"request body is not valid UTF-8 (byte {error.start}: {error.reason})"
        ) from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequestError("request body is JSON nested too deeply") from None
    if binding.body == "*":
        if not isinstance(parsed, dict):
            raise BadRequestError("request body must be a JSON object")
        return parsed
    return {binding.body: parsed}


async def _read_form(request: Request, limit: int, limits: BodyLimits) -> FormData:
    """The multipart/form-data body of ``request``, read while it stays within ``limit``."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise BadRequestError("request body must be multipart/form-data")
    async with aclosing(bounded_stream(request, limit, limits)) as stream:
        try:
            return await MultiPartParser(request.headers, stream).parse()
        except MultiPartException as error:
            raise BadRequestError(f"malformed multipart body: {error.message}") from None


def _form_filename(raw: str) -> str:
    """The part's file name with HTML's form escapes (%22, %0D, %0A) decoded."""
    return _FORM_NAME_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)


async def _form_file(
    binding: Binding, request: Request, target: message.Message, limits: BodyLimits
) -> None:
    name = binding.rest.multipart_file_field
    form = await _read_form(request, limits.upload, limits)
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


def parse_dict(data: dict[str, Any], target: message.Message) -> None:
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


def body_limit(binding: Binding, limits: BodyLimits) -> int:
    """The most body bytes ``binding``'s route reads: the upload limit or the JSON one."""
    if binding.rest.multipart_file_field:
        return limits.upload
    return limits.json if binding.body else 0


@dataclass(frozen=True)
class Built:
    """A request message, and the JSON names its client spelled otherwise.

    ``spelled`` maps a JSON name to the key the client used (``sourcePath``:
    ``path``), so that errors name the field as the client knows it.
    """

    message: message.Message
    spelled: dict[str, str]


def _spellings(desc: descriptor.Descriptor, keys: Iterable[str]) -> dict[str, str]:
    spelled: dict[str, str] = {}
    for key in keys:
        field = _field(desc, key)
        if field is not None and field.json_name != key:
            spelled[field.json_name] = key
    return spelled


async def build_request(binding: Binding, request: Request, limits: BodyLimits) -> Built:
    """The RPC's request message for ``request``; raises BadRequestError naming the field.

    The body is read within ``limits`` (BodyError when it breaks them). A
    route without a body reads none: whatever a client sent is ignored.
    """
    target = binding.request_class()
    data: dict[str, Any] = {}
    if binding.body:
        data = parse_json_body(binding, await read_body(request, limits.json, limits))
    query: dict[str, list[str]] = {}
    # Most requests have no query: parsing an empty one still builds a QueryParams.
    if request.scope["query_string"]:
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(value)
    spelled = _spellings(binding.method.input_type, [*data, *query]) if data or query else {}
    data.update(query_to_dict(binding, query))
    for name in binding.path_fields:
        data[name] = request.path_params[name]
    parse_dict(data, target)
    if binding.rest.multipart_file_field:
        await _form_file(binding, request, target, limits)
    _check_required(target)
    return Built(target, spelled)


_REQUIRED: dict[str, tuple[descriptor.FieldDescriptor, ...]] = {}


def _check_required(target: message.Message) -> None:
    """BadRequestError naming the first REQUIRED field of ``target`` that the request left out.

    A field with presence is missing when unset; a scalar without presence
    when it holds its default (AIP-203: "" and 0 are not values of a
    required field). FirecREST's request validation refuses these before
    its handler runs, and so does the edge (``errorType: validation``).
    """
    desc: descriptor.Descriptor = target.DESCRIPTOR  # type: ignore[assignment]  # upb's, same API
    required = _REQUIRED.get(desc.full_name)
    if required is None:
        required = _REQUIRED[desc.full_name] = tuple(f for f in desc.fields if is_required(f))
    for field in required:
        if field.has_presence:
            missing = not target.HasField(field.name)
        else:
            missing = getattr(target, field.name) == field.default_value
        if missing:
            raise BadRequestError(f"{field.json_name}: field required", field.json_name)
