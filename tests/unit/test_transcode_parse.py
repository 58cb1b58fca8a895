"""The edge's request filling: plain strings set directly, everything else through ParseDict."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from hpcgate.edge.transcode import BadRequestError, parse_dict
from hpcgate.v1 import filesystem_pb2, status_pb2


def test_string_fields_by_json_or_proto_name() -> None:
    request = filesystem_pb2.DownloadRequest()
    parse_dict({"system_name": "daint", "path": "/home/a b"}, request)
    assert (request.system_name, request.path) == ("daint", "/home/a b")
    again = filesystem_pb2.DownloadRequest()
    parse_dict({"systemName": "daint", "path": ""}, again)
    assert again.system_name == "daint" and again.path == ""


def test_other_values_go_through_parsedict_and_its_errors() -> None:
    with pytest.raises(BadRequestError, match="path"):
        parse_dict({"system_name": "daint", "path": 7}, filesystem_pb2.DownloadRequest())
    with pytest.raises(BadRequestError, match="nope"):
        parse_dict({"system_name": "daint", "nope": "x"}, filesystem_pb2.DownloadRequest())
    # One field under both of its names: whatever ParseDict makes of it.
    both = {"system_name": "a", "systemName": "b"}
    ours, reference = filesystem_pb2.DownloadRequest(), filesystem_pb2.DownloadRequest()
    parse_dict(dict(both), ours)
    json_format.ParseDict(dict(both), reference)
    assert ours == reference


def test_non_string_fields_still_parse() -> None:
    request = status_pb2.ListNodesRequest()
    parse_dict({"system_name": "daint"}, request)
    assert request.system_name == "daint"
