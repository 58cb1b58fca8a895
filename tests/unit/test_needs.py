"""Every RPC declares its health needs in the contracts, and they are the intended ones."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from hpcgate.server.servicers.needs import NEEDS, SERVICES, full_name, methods, needs_of

SCHEDULER = ("ssh", "scheduler")
FILES = ("ssh", "filesystem")
JOBS = ("ssh", "scheduler", "filesystem")
# What each RPC needs, per service; a service's "*" is the need of its other RPCs.
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "Status": {"ListSystems": (), "GetLiveness": (), "*": SCHEDULER},
    "Scheduler": {"*": SCHEDULER},
    "Filesystem": {"*": FILES},
    "Transfer": {
        # The s3 method needs S3 too, checked once it is the method asked for.
        "Upload": SCHEDULER,
        "Download": SCHEDULER,
        "GetTransfer": SCHEDULER,
        "WatchTransfer": SCHEDULER,
        "*": JOBS,
    },
}


def test_every_rpc_has_its_intended_needs() -> None:
    served = list(methods())
    assert len(served) >= 40  # all four contracts were read
    for method in served:
        service = EXPECTED[method.containing_service.name]
        expected = service.get(method.name, service["*"])
        assert NEEDS[full_name(method)] == expected, method.full_name
    assert set(NEEDS) == {full_name(m) for m in served}


def test_needs_name_only_probed_services() -> None:
    # s3: the s3 transfer method's need, required where it is chosen (servicers/transfer.py).
    assert {s for needs in NEEDS.values() for s in needs} | {"s3"} == SERVICES


def test_an_rpc_without_needs_is_refused() -> None:
    """The server cannot start with an RPC that would skip its health gate."""
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(name="undeclared.proto", package="undeclared")
    proto.message_type.add(name="Empty")
    service = proto.service.add(name="Service")
    service.method.add(
        name="Forgotten", input_type=".undeclared.Empty", output_type=".undeclared.Empty"
    )
    pool.Add(proto)
    method = pool.FindServiceByName("undeclared.Service").methods_by_name["Forgotten"]
    with pytest.raises(ValueError, match=r"undeclared\.Service\.Forgotten declares no option"):
        needs_of(method)
