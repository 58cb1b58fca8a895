"""Statuses that gRPC itself made (no server details) get the edge's words, never its text."""

from __future__ import annotations

import json

import grpc
import pytest

from hpcgate.edge.errors import status_response


@pytest.mark.parametrize(
    ("code", "text", "http", "reason"),
    [
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max (70000000 vs. 67108864)",
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:50051: "
            "Failed to connect to remote host: Connection refused",
            503,
            "SERVER_UNAVAILABLE",
        ),
        (grpc.StatusCode.INTERNAL, "ipv4:10.0.0.7:50051: stream reset", 502, "SERVER_ERROR"),
    ],
)
def test_library_statuses_are_worded_by_code(
    code: grpc.StatusCode, text: str, http: int, reason: str
) -> None:
    response = status_response(code, text, (), user="alice")
    body = json.loads(bytes(response.body))
    assert response.status_code == http
    assert body["data"] == {"reason": reason}
    assert body["user"] == "alice"
    assert "127.0.0.1" not in body["message"] and "10.0.0.7" not in body["message"]
    assert "larger than max" not in body["message"]
