"""The client and stubs (dist `hpcgate`) install without the server's dependencies."""

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


def _requirements(dist: str = "hpcgate") -> list[Requirement]:
    return [Requirement(text) for text in requires(dist) or []]


def test_base_install_pulls_no_server_dependencies() -> None:
    base = {r.name.lower() for r in _requirements() if r.marker is None}
    assert base, "hpcgate declares no base requirements"
    assert base.isdisjoint(SERVER_ONLY), base & SERVER_ONLY
    assert {"grpcio", "protobuf"} <= base


def test_the_server_distribution_brings_them_and_the_client() -> None:
    server = {r.name.lower(): r for r in _requirements("hpcgate-server")}
    assert {"asyncssh", "boto3", "pyjwt", "pydantic", "hpcgate"} <= set(server)
    edge = {r.name.lower() for r in _requirements("hpcgate-edge")}
    assert {"starlette", "uvicorn", "hpcgate"} <= edge
