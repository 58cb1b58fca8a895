"""The health needs of every RPC, as the contracts declare them.

Each RPC of ``hpcgate.v1`` carries ``option (hpcgate.v1.needs)``: the
services of the system it names that it cannot do without. They are read
here once, from the descriptors, into one table by full method name
(``/hpcgate.v1.Scheduler/SubmitJob``); the call context gates each call on
its method's row. An RPC without the option, or naming a service no health
probe checks, stops the server from starting: a forgotten declaration must
not become a call that skips its health gate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from google.protobuf import descriptor

from hpcgate.v1 import (
    filesystem_pb2,
    options_pb2,
    scheduler_pb2,
    status_pb2,
    transfer_pb2,
)

# The services the health checker probes (its probes' service types).
SERVICES = frozenset({"ssh", "scheduler", "filesystem", "s3"})
# The contracts whose RPCs the server serves.
_FILES = (status_pb2, scheduler_pb2, filesystem_pb2, transfer_pb2)


def methods() -> Iterator[descriptor.MethodDescriptor]:
    """Every RPC of the served contracts."""
    for module in _FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


def full_name(method: descriptor.MethodDescriptor) -> str:
    """The method's gRPC path, ``/package.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def needs_of(method: descriptor.MethodDescriptor) -> tuple[str, ...]:
    """The services ``method`` declares it needs; ValueError if it declares none."""
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.needs):
        raise ValueError(f"{method.full_name} declares no option (hpcgate.v1.needs)")
    services = tuple(options.Extensions[options_pb2.needs].services)
    unknown = set(services) - SERVICES
    if unknown:
        raise ValueError(f"{method.full_name} needs unknown services {sorted(unknown)}")
    return services


NEEDS: Mapping[str, tuple[str, ...]] = {full_name(m): needs_of(m) for m in methods()}
