"""The client and stubs install without the server's dependencies."""

from __future__ import annotations

from importlib.metadata import requires

from packaging.requirements import Requirement

SERVER_ONLY = {
    "asyncssh",
    "boto3",
    "pyjwt",
    "pydantic",
    "prometheus-client",
    "starlette",
    "uvicorn",
    "httptools",
}


def _requirements() -> list[Requirement]:
    return [Requirement(text) for text in requires("hpcgate") or []]


def test_base_install_pulls_no_server_dependencies() -> None:
    base = {r.name.lower() for r in _requirements() if r.marker is None}
    assert base, "hpcgate declares no base requirements"
    assert base.isdisjoint(SERVER_ONLY), base & SERVER_ONLY
    assert {"grpcio", "protobuf"} <= base


def test_server_extra_brings_them() -> None:
    server = {
        r.name.lower()
        for r in _requirements()
        if r.marker is not None and r.marker.evaluate({"extra": "server"})
    }
    assert {"asyncssh", "boto3", "pyjwt", "pydantic"} <= server
