"""The client's channel policy names real methods and retries reads only."""

from __future__ import annotations

import json

from hpcgate.client.channel import IDEMPOTENT, SERVICES, STREAMS, CallPolicy, service_config
from hpcgate.v1 import filesystem_pb2, scheduler_pb2, status_pb2, transfer_pb2

FILES = {
    "Status": status_pb2,
    "Filesystem": filesystem_pb2,
    "Scheduler": scheduler_pb2,
    "Transfer": transfer_pb2,
}


def _methods(service: str) -> set[str]:
    return set(FILES[service].DESCRIPTOR.services_by_name[service].methods_by_name)


def test_every_idempotent_or_stream_name_is_a_method_of_its_service() -> None:
    everything = set().union(*(_methods(service) for service in SERVICES))
    for service, names in IDEMPOTENT.items():
        assert set(names) <= _methods(service), service
    assert everything >= STREAMS


def test_only_reads_are_retried_and_streams_have_no_deadline() -> None:
    config = json.loads(service_config(CallPolicy(deadline=7)))
    retried: set[str] = set()
    timed: set[str] = set()
    for entry in config["methodConfig"]:
        names = {name.get("method", "*") for name in entry["name"]}
        if "retryPolicy" in entry:
            assert entry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
            retried |= names
        if "timeout" in entry:
            assert entry["timeout"] == "7s"
            timed |= names
    assert retried == set().union(*map(set, IDEMPOTENT.values()))
    assert not {"SubmitJob", "Rm", "UploadStream", "CancelJob"} & retried
    assert not (timed - {"*"}) & STREAMS


def test_every_stream_is_named_so_the_service_deadline_skips_it() -> None:
    config = json.loads(service_config(CallPolicy()))
    named = {
        (name["service"].rsplit(".", 1)[1], name["method"])
        for entry in config["methodConfig"]
        if "timeout" not in entry
        for name in entry["name"]
    }
    for service in SERVICES:
        descriptor = FILES[service].DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            if method.server_streaming or method.client_streaming:
                assert (service, method.name) in named, method.full_name
