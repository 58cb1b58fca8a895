"""Read the HTTP bindings of the hpcgate services from their descriptors.

A binding joins one ``google.api.http`` rule to its RPC: verb, path template,
body selector, the hpcgate REST options, and the message classes. Everything
the edge serves, and everything the OpenAPI document lists, comes from here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pool, message, message_factory

from hpcgate.v1 import options_pb2

# The generated modules whose services the edge exposes; importing them
# registers their descriptors in the default pool.
SERVICE_MODULES = (
    "hpcgate.v1.status_pb2",
    "hpcgate.v1.scheduler_pb2",
    "hpcgate.v1.filesystem_pb2",
    "hpcgate.v1.transfer_pb2",
)

_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Gathering:
    """The RPC answering many requests of one caller at once (``(hpcgate.v1.rest).gathered_by``)."""

    rpc_path: str
    request_class: type[message.Message]
    response_class: type[message.Message]


@dataclass(frozen=True)
class Binding:
    """One REST route: an HTTP verb and path bound to one RPC.

    What the edge derives per request (path fields, message class, query
    fields) is computed once per binding (``cached_property``), not on
    every request.
    """

    method: descriptor.MethodDescriptor
    verb: str
    template: str
    body: str
    response_body: str
    rest: options_pb2.RestOptions

    @property
    def service(self) -> descriptor.ServiceDescriptor:
        return self.method.containing_service

    @property
    def rpc_path(self) -> str:
        """The gRPC method path, ``/package.Service/Method``."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        return f"{self.service.name}_{self.method.name}"

    @cached_property
    def path_fields(self) -> tuple[str, ...]:
        """Request field names bound by the path template, in order."""
        return tuple(m.group(1) for m in _VARIABLE.finditer(self.template))

    @property
    def route_path(self) -> str:
        """The template in Starlette's syntax (``{name}``), with no ``=pattern``."""
        return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", self.template)

    @cached_property
    def request_class(self) -> type[message.Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[message.Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def raw_response(self) -> bool:
        """True when the reply is ``google.api.HttpBody``: raw bytes, not JSON."""
        return self.method.output_type.full_name == "google.api.HttpBody"

    @property
    def reads_body(self) -> bool:
        """Whether the route reads a request body (JSON or a multipart form)."""
        return bool(self.body or self.rest.multipart_file_field)

    @cached_property
    def gathered_by(self) -> Gathering | None:
        """The RPC that answers many of this one's requests at once, if the contract names one."""
        name = self.rest.gathered_by
        if not name:
            return None
        method = descriptor_pool.Default().FindMethodByName(name)
        return Gathering(
            rpc_path=f"/{method.containing_service.full_name}/{method.name}",
            request_class=message_factory.GetMessageClass(method.input_type),
            response_class=message_factory.GetMessageClass(method.output_type),
        )

    @property
    def success_code(self) -> int:
        return self.rest.success_code or 200

    def query_fields(self) -> list[descriptor.FieldDescriptor]:
        """Request fields that travel as query parameters (not path, body or form)."""
        if self.body == "*":
            return []
        bound = {name.split(".")[0] for name in self.path_fields}
        bound.update(f for f in (self.body, self.rest.multipart_file_field) if f)
        return [f for f in self.method.input_type.fields if f.name not in bound]

    @cached_property
    def query_fields_by_key(self) -> dict[str, descriptor.FieldDescriptor]:
        """:meth:`query_fields` by proto name and by JSON name: what a query key may be."""
        fields = self.query_fields()
        by_key = {f.name: f for f in fields}
        by_key.update({f.json_name: f for f in fields})
        return by_key

    def specificity(self) -> tuple[int, ...]:
        """Sort key that puts literal segments before variables (``jobs/watch``
        before ``jobs/{job_id}``), so the most specific route matches first."""
        return tuple(int(seg.startswith("{")) for seg in self.template.strip("/").split("/"))


def _rules(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, http_pb2.HttpRule]]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        yield rule.custom.kind.upper(), rule.custom.path, rule
    elif pattern is not None:
        yield pattern.upper(), getattr(rule, pattern), rule
    for extra in rule.additional_bindings:
        yield from _rules(extra)


def _check_template(method: descriptor.MethodDescriptor, template: str) -> None:
    for match in _VARIABLE.finditer(template):
        name, pattern = match.groups()
        if pattern not in (None, "*"):
            raise ValueError(f"{method.full_name}: unsupported path pattern {match.group(0)}")
        if name not in method.input_type.fields_by_name:
            raise ValueError(f"{method.full_name}: path variable {name} is not a request field")


def bindings_of(services: Iterable[descriptor.ServiceDescriptor]) -> list[Binding]:
    """Every HTTP binding of ``services``, the most specific paths first."""
    found: list[Binding] = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue  # gRPC-only RPC
            if method.client_streaming:
                raise ValueError(f"{method.full_name}: client streaming cannot have a REST rule")
            rest = options.Extensions[options_pb2.rest]
            for verb, template, rule in _rules(options.Extensions[annotations_pb2.http]):
                _check_template(method, template)
                found.append(Binding(method, verb, template, rule.body, rule.response_body, rest))
    found.sort(key=lambda b: (b.specificity(), b.template))
    return found


def hpcgate_services() -> list[descriptor.ServiceDescriptor]:
    """The services of the generated hpcgate modules."""
    services: list[descriptor.ServiceDescriptor] = []
    for name in SERVICE_MODULES:
        module = importlib.import_module(name)
        services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def is_required(field: descriptor.FieldDescriptor) -> bool:
    """Whether the contract marks ``field`` ``(google.api.field_behavior) = REQUIRED``."""
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors
