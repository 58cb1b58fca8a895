"""The OpenAPI 3.1 document of the REST edge, derived from the descriptors.

Paths and parameters come from the HTTP bindings, schemas from the message
descriptors, and descriptions from the ``.proto`` comments (read from the
descriptor set that ``make proto`` writes with source info).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor, descriptor_pb2

from hpcgate.edge.bindings import Binding, is_required
from hpcgate.edge.jsonmap import Scalar, in_real_oneof, scalar_of
from hpcgate.v1 import DESCRIPTOR_SET, options_pb2

FD = descriptor.FieldDescriptor
_PACKAGE_PREFIX = "hpcgate.v1."

# Every integer's range: the parser refuses a value out of it (found by the fuzz).
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1}
_INT64 = {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
_UINT64 = {"type": "integer", "format": "uint64", "minimum": 0, "maximum": 2**64 - 1}
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: _INT32,
    FD.TYPE_SINT32: _INT32,
    FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_UINT32: _UINT32,
    FD.TYPE_FIXED32: _UINT32,
    # Protobuf's JSON mapping writes 64-bit integers as strings and reads both.
    # The edge writes 64-bit integers as JSON numbers (see jsonmap), and
    # protobuf's parser reads numbers and numeric strings.
    FD.TYPE_INT64: _INT64,
    FD.TYPE_SINT64: _INT64,
    FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64,
    FD.TYPE_FIXED64: _UINT64,
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "integer", "null"]},
}

# FirecREST's error body (ApiResponseError), answered with every 4XX and 5XX.
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Error reply, in FirecREST's shape. `data` carries the gRPC error details.",
    "required": ["message"],
    "properties": {
        "errorType": {"type": "string", "enum": ["error", "validation"], "default": "error"},
        "message": {"type": "string"},
        "data": {"type": ["object", "null"], "additionalProperties": True},
        "user": {"type": ["string", "null"]},
        "causedBy": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}


_UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_FIXED32, FD.TYPE_UINT64, FD.TYPE_FIXED64}


def _not_default(field: descriptor.FieldDescriptor, schema: dict[str, Any]) -> None:
    """Narrow the schema of a required scalar without presence to values other than its default.

    Such a field cannot tell "absent" from the default (0, ""), so REQUIRED
    means "not the default" (AIP-203), which is what the server checks: job
    id 0 and an empty path are refused.
    """
    if field.is_repeated or field.has_presence or field.message_type is not None:
        return
    if field.type == FD.TYPE_STRING:
        schema["minLength"] = 1
    elif scalar_of(field) is Scalar.STRING:
        schema["not"] = {"pattern": "^0*$"}
    elif field.type in _UNSIGNED:
        schema["minimum"] = 1
    elif schema.get("type") == "integer":
        schema["not"] = {"const": 0}


def decimal_at_most(limit: int) -> str:
    """A pattern for the decimal numbers from 0 to ``limit`` (leading zeros allowed).

    An integer FirecREST types as a string has its range in a pattern: JSON
    Schema bounds only numbers. Shorter numbers, then each prefix of
    ``limit`` with a smaller next digit, then ``limit`` itself.
    """
    text = str(limit)
    alternatives = [f"[0-9]{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for i, char in enumerate(text):
        low, high = (1 if i == 0 and len(text) > 1 else 0), int(char) - 1
        if high >= low:
            rest = len(text) - i - 1
            digit = f"[{low}-{high}]" if high > low else str(low)
            alternatives.append(text[:i] + digit + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(text)
    return "^0*(?:" + "|".join(alternatives) + ")$"


def _constrain(field: descriptor.FieldDescriptor, schema: dict[str, Any]) -> None:
    """Add what ``(hpcgate.v1.schema)`` says the server accepts to a single value's schema."""
    options = field.GetOptions().Extensions[options_pb2.schema]
    if options.pattern:
        schema["pattern"] = options.pattern
    if options.HasField("minimum"):
        schema["minimum"] = options.minimum


def _exclusive(desc: descriptor.Descriptor, exclude: frozenset[str]) -> list[dict[str, Any]]:
    """For each real oneof, "not two of its members at once" (the parser refuses a pair).

    A pair of members is refused even if one is empty; found by the fuzz.
    """
    rules: list[dict[str, Any]] = []
    for oneof in desc.oneofs:
        names = [f.json_name for f in oneof.fields if f.name not in exclude]
        if len(names) < 2 or not in_real_oneof(oneof.fields[0]):
            continue
        pairs = [[a, b] for i, a in enumerate(names) for b in names[i + 1 :]]
        rules.append({"not": {"anyOf": [{"required": pair} for pair in pairs]}})
    return rules


def _may_be_null(field: descriptor.FieldDescriptor) -> bool:
    """Whether ``field`` may be null on the wire: every field not REQUIRED.

    Protobuf's JSON parser takes null as "unset" for any field (the proto3
    JSON mapping), and the edge writes unset fields with presence, and empty
    ``null_when_empty`` lists, as null (jsonmap). Found by the schemathesis
    fuzz (tests/fuzz): the document typed these fields non-null.
    """
    return not is_required(field)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` widened to admit null (a ``$ref`` is wrapped, its description kept)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in widened:
            widened["enum"] = [*widened["enum"], None]
        return widened
    if isinstance(kind, list):
        return schema if "null" in kind else {**schema, "type": [*kind, "null"]}
    described = {k: v for k, v in schema.items() if k == "description"}
    inner = {k: v for k, v in schema.items() if k != "description"}
    return {"anyOf": [inner, {"type": "null"}], **described}


def _clean(comment: str) -> str:
    """A comment without tool directives (``buf:lint:ignore ...``)."""
    lines = [line for line in comment.splitlines() if not line.strip().startswith("buf:")]
    return "\n".join(line.strip() for line in lines).strip()


_Comments = dict[tuple[int, ...], str]


def _walk_enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    name: str,
    path: tuple[int, ...],
    by_path: _Comments,
    found: dict[str, str],
) -> None:
    found[name] = by_path.get(path, "")
    for i, value in enumerate(enum.value):
        found[f"{name}.{value.name}"] = by_path.get((*path, 2, i), "")


def _walk_message(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    path: tuple[int, ...],
    by_path: _Comments,
    found: dict[str, str],
) -> None:
    # Source paths: 2 = field, 3 = nested message, 4 = nested enum.
    found[name] = by_path.get(path, "")
    for i, field in enumerate(msg.field):
        found[f"{name}.{field.name}"] = by_path.get((*path, 2, i), "")
    for i, nested in enumerate(msg.nested_type):
        _walk_message(nested, f"{name}.{nested.name}", (*path, 3, i), by_path, found)
    for i, enum in enumerate(msg.enum_type):
        _walk_enum(enum, f"{name}.{enum.name}", (*path, 4, i), by_path, found)


@cache
def comments() -> dict[str, str]:
    """Leading comments of every element, by full name (``pkg.Msg.field``)."""
    found: dict[str, str] = {}
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    for file in fds.file:
        by_path = {
            tuple(loc.path): _clean(loc.leading_comments)
            for loc in file.source_code_info.location
            if loc.leading_comments
        }
        prefix = f"{file.package}." if file.package else ""
        # File-level source paths: 4 = message, 5 = enum, 6 = service (2 = method).
        for i, msg in enumerate(file.message_type):
            _walk_message(msg, prefix + msg.name, (4, i), by_path, found)
        for i, enum in enumerate(file.enum_type):
            _walk_enum(enum, prefix + enum.name, (5, i), by_path, found)
        for i, service in enumerate(file.service):
            found[prefix + service.name] = by_path.get((6, i), "")
            for j, method in enumerate(service.method):
                found[f"{prefix}{service.name}.{method.name}"] = by_path.get((6, i, 2, j), "")
    return found


def _component_name(full_name: str) -> str:
    return full_name.removeprefix(_PACKAGE_PREFIX)


class _Schemas:
    """Collects component schemas for the messages and enums a document uses."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"ApiResponseError": _ERROR_SCHEMA}

    def ref(self, desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> dict[str, Any]:
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        name = _component_name(desc.full_name)
        if name not in self.components:
            self.components[name] = {}  # placeholder: stops recursion
            if isinstance(desc, descriptor.EnumDescriptor):
                self.components[name] = self._enum(desc)
            else:
                self.components[name] = self.message(desc)
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum(self, desc: descriptor.EnumDescriptor) -> dict[str, Any]:
        values = [v.name for v in desc.values]
        lines = [comments().get(desc.full_name, "")]
        lines += [
            f"- `{v.name}`: {comments().get(f'{desc.full_name}.{v.name}', '')}" for v in desc.values
        ]
        return {"type": "string", "enum": values, "description": "\n".join(filter(None, lines))}

    def field(self, field: descriptor.FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
        if is_required(field):
            _not_default(field, schema)
        text = comments().get(field.full_name)
        if text:
            # OpenAPI 3.1 (JSON Schema 2020-12) allows siblings of $ref.
            schema["description"] = text
        return schema

    def _single(self, field: descriptor.FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self.ref(field.enum_type)
        if scalar_of(field) is Scalar.STRING:  # an integer FirecREST types as a string
            return {"type": "string", "pattern": decimal_at_most(_SCALARS[field.type]["maximum"])}
        schema = dict(_SCALARS[field.type])
        _constrain(field, schema)
        return schema

    def message(
        self, desc: descriptor.Descriptor, exclude: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        fields = [f for f in desc.fields if f.name not in exclude]
        properties = {
            f.json_name: _nullable(self.field(f)) if _may_be_null(f) else self.field(f)
            for f in fields
        }
        # The parser refuses a field the message does not have (found by the fuzz).
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = [f.json_name for f in fields if is_required(f)]
        if required:
            schema["required"] = required
        exclusive = _exclusive(desc, exclude)
        if exclusive:
            schema["allOf"] = exclusive
        text = comments().get(desc.full_name)
        if text:
            schema["description"] = text
        return schema


def _parameter(schemas: _Schemas, field: descriptor.FieldDescriptor, where: str) -> dict[str, Any]:
    schema = schemas.field(field)
    description = schema.pop("description", "")
    return {
        "name": field.name if where == "path" else field.json_name,
        "in": where,
        "required": where == "path" or is_required(field),
        "description": description,
        "schema": schema,
    }


def _request_body(schemas: _Schemas, binding: Binding) -> dict[str, Any] | None:
    request = binding.method.input_type
    if binding.rest.multipart_file_field:
        name = binding.rest.multipart_file_field
        form = {
            "type": "object",
            "required": [name],
            "properties": {
                name: {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "application/octet-stream",
                }
            },
        }
        return {"required": True, "content": {"multipart/form-data": {"schema": form}}}
    if binding.body == "*":
        schema = schemas.message(request, exclude=frozenset(binding.path_fields))
        return {"required": True, "content": {"application/json": {"schema": schema}}}
    if binding.body:
        field = request.fields_by_name[binding.body]
        return {"required": True, "content": {"application/json": {"schema": schemas.field(field)}}}
    return None


def _success(schemas: _Schemas, binding: Binding) -> dict[str, Any]:
    reply = binding.method.output_type
    description = comments().get(reply.full_name) or "Success"
    if binding.success_code == 204:
        return {"description": description}
    if binding.raw_response:
        content: dict[str, Any] = {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
        }
    elif binding.server_streaming:
        item = schemas.ref(reply)
        # With `itemSchema` (OpenAPI 3.2's sequential media types), `schema` is
        # the whole stream read as an array of items; a string there fails every
        # stream (found by the fuzz).
        sse = "Server-Sent Events; each `data:` line is one JSON item"
        ndjson = "One JSON item per line"
        # An SSE item is an event whose `data` is the JSON item.
        event = {
            "type": "object",
            "properties": {
                "event": {"type": "string"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": item,
                },
            },
            "required": ["data"],
        }
        content = {
            "text/event-stream": {
                "schema": {"type": "array", "items": event, "description": sse},
                "itemSchema": event,
            },
            "application/x-ndjson": {
                "schema": {"type": "array", "items": item, "description": ndjson},
                "itemSchema": item,
            },
        }
    elif binding.response_body:
        content = {
            "application/json": {
                "schema": schemas.field(reply.fields_by_name[binding.response_body])
            }
        }
    else:
        content = {"application/json": {"schema": schemas.ref(reply)}}
    return {"description": description, "content": content}


def _operation(schemas: _Schemas, binding: Binding) -> dict[str, Any]:
    request = binding.method.input_type
    text = comments().get(binding.method.full_name, "")
    parameters = [
        _parameter(schemas, request.fields_by_name[n], "path") for n in binding.path_fields
    ]
    parameters += [_parameter(schemas, f, "query") for f in binding.query_fields()]
    error = {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ApiResponseError"}}
        }
    }
    operation: dict[str, Any] = {
        "operationId": binding.operation_id,
        "summary": text.split("\n", 1)[0],
        "description": text,
        "tags": [binding.service.name.lower()],
        "parameters": parameters,
        "responses": {
            str(binding.success_code): _success(schemas, binding),
            "4XX": {"description": "Client error", **error},
            "5XX": {"description": "Server error", **error},
        },
    }
    if binding.rest.public:
        # Overrides the document-wide bearer requirement, as the edge asks for no token.
        operation["security"] = []
    body = _request_body(schemas, binding)
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document(bindings: list[Binding], title: str = "hpcgate") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``bindings``."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    services = {}
    for binding in sorted(bindings, key=lambda b: b.template):
        paths.setdefault(binding.route_path, {})[binding.verb.lower()] = _operation(
            schemas, binding
        )
        services[binding.service.name] = binding.service
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "v1",
            "description": (
                "HPC cluster access: FirecREST v2 compatible REST API, transcoded to gRPC."
            ),
        },
        "tags": [
            {"name": name.lower(), "description": comments().get(service.full_name, "")}
            for name, service in sorted(services.items())
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "HTTPBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"HTTPBearer": []}],
    }
