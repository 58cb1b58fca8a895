"""The walking skeleton: the same API over gRPC and over REST, from one contract."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import SKELETON_CONFIG, Service, serve_asgi
from hpcgate.edge import create_app
from hpcgate.edge.bindings import bindings_of, hpcgate_services
from hpcgate.server.app import build_concerns
from hpcgate.server.config import parse_config
from hpcgate.server.rpc.method_table import MethodTable
from hpcgate.v1 import status_pb2, status_pb2_grpc, transfer_pb2, transfer_pb2_grpc

REFERENCE = Path(__file__).parents[1] / "data" / "firecrest-v2-openapi-2.5.6.yaml"
HTTP_VERBS = {"get", "post", "put", "delete", "patch"}
# The skeleton's server checks no tokens, but the edge asks every caller for
# a bearer token of a JWT's shape ("{}" . "{}" . no signature).
ANY_TOKEN = {"Authorization": "Bearer e30.e30.x"}


def _operations(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {
        (verb.upper(), path) for path, ops in paths.items() for verb in ops if verb in HTTP_VERBS
    }


async def test_list_systems_same_over_grpc_and_rest(skeleton: Service) -> None:
    stub = status_pb2_grpc.StatusStub(skeleton.channel)
    reply = await stub.ListSystems(status_pb2.ListSystemsRequest())
    assert [s.name for s in reply.systems] == ["daint", "eiger"]

    async with httpx.AsyncClient(base_url=skeleton.rest_url, headers=ANY_TOKEN) as client:
        response = await client.get("/status/systems")
    assert response.status_code == 200
    body = response.json()
    # FirecREST's JSON shape: camelCase names, defaults written out, unset optionals null.
    daint = body["systems"][0]
    assert daint["name"] == "daint"
    assert daint["ssh"] == {
        "host": "daint.example.org",
        "port": 2222,
        "maxClients": 4,
        "proxyHost": None,
        "proxyPort": None,
        "timeout": {
            "connection": 10,
            "login": 10,
            "commandExecution": 60,
            "idleTimeout": 60,
            "keepAlive": 15,
        },
    }
    assert daint["fileSystems"][0] == {"path": "/home", "dataType": "users", "defaultWorkDir": True}
    assert daint["dataOperation"]["max_ops_file_size"] == 5 * 1024 * 1024  # a number, not "5242880"
    assert body["systems"][1]["scheduler"]["version"] == "24.05"
    # Same content both ways.
    same = json_format.ParseDict(body, status_pb2.ListSystemsResponse())
    assert same == reply


async def test_openapi_has_every_firecrest_operation(skeleton: Service) -> None:
    reference = _operations(yaml.safe_load(REFERENCE.read_text()))
    assert len(reference) == 35
    async with httpx.AsyncClient(base_url=skeleton.rest_url) as client:
        document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    ours = _operations(document)
    assert reference <= ours, sorted(reference - ours)
    # The watch is there too, as SSE and NDJSON, and descriptions come from comments.
    watch = document["paths"]["/compute/{system_name}/jobs/watch"]["get"]
    assert set(watch["responses"]["200"]["content"]) == {
        "text/event-stream",
        "application/x-ndjson",
    }
    ls = document["paths"]["/filesystem/{system_name}/ops/ls"]["get"]
    assert ls["description"]
    assert {p["name"] for p in ls["parameters"]} >= {"system_name", "path", "showHidden"}
    upload = document["paths"]["/filesystem/{system_name}/ops/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "204" in upload["responses"]
    for path in document["paths"].values():
        for operation in path.values():
            assert "buf:lint" not in operation["description"]


def test_every_firecrest_path_is_bound_to_an_rpc() -> None:
    bindings = bindings_of(hpcgate_services())
    reference = _operations(yaml.safe_load(REFERENCE.read_text()))
    assert reference <= {(b.verb, b.template) for b in bindings}
    # Literal segments sort before variables, so /jobs/watch is not a job id.
    templates = [b.template for b in bindings]
    watch = templates.index("/compute/{system_name}/jobs/watch")
    assert watch < templates.index("/compute/{system_name}/jobs/{job_id}")


async def test_unimplemented_rpc_is_501_and_unimplemented() -> None:
    """An RPC without an implementation: UNIMPLEMENTED over gRPC, 501 over REST.

    Every hpcgate RPC is implemented now, so a bare server serves the
    generated base servicer (whose every method raises NotImplementedError)
    behind the server's own concerns, with a real edge in front.
    """
    server = grpc.aio.server()
    table = MethodTable(build_concerns(parse_config(SKELETON_CONFIG)))
    servicer = transfer_pb2_grpc.TransferServicer()
    transfer_pb2_grpc.add_TransferServicer_to_server(servicer, table.as_server())
    table.install(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    edge, edge_task, url = await serve_asgi(create_app(f"127.0.0.1:{port}"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = transfer_pb2_grpc.TransferStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Rm(transfer_pb2.TransferRmRequest(system_name="daint", path="/home/x"))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

        async with httpx.AsyncClient(base_url=url, headers=ANY_TOKEN) as client:
            response = await client.delete(
                "/filesystem/daint/transfer/rm", params={"path": "/home/x"}
            )
        assert response.status_code == 501
        body = response.json()
        assert body["errorType"] == "error"
        assert body["message"]
        assert body["data"]["reason"] == "NOT_IMPLEMENTED"
    finally:
        edge.should_exit = True
        await edge_task
        await server.stop(None)


async def test_bad_path_variable_is_400_naming_the_field(skeleton: Service) -> None:
    async with httpx.AsyncClient(base_url=skeleton.rest_url, headers=ANY_TOKEN) as client:
        response = await client.get("/compute/daint/jobs/not-a-number")
        bad_bool = await client.get(
            "/filesystem/daint/ops/ls", params={"path": "/home", "showHidden": "maybe"}
        )
        bad_json = await client.post("/compute/daint/jobs", content=b"{not json")
    assert response.status_code == 400
    assert "job_id" in response.json()["message"]
    assert bad_bool.status_code == 400
    assert bad_bool.json()["data"]["fieldViolations"][0]["field"] == "showHidden"
    assert bad_json.status_code == 400


async def test_liveness_and_health_and_reflection(skeleton: Service) -> None:
    async with httpx.AsyncClient(base_url=skeleton.rest_url) as client:
        response = await client.get("/status/liveness/")
    assert response.status_code == 200

    health = health_pb2_grpc.HealthStub(skeleton.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="hpcgate.v1.Status"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    reflect = reflection_pb2_grpc.ServerReflectionStub(skeleton.channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert {
        "hpcgate.v1.Status",
        "hpcgate.v1.Scheduler",
        "hpcgate.v1.Filesystem",
        "hpcgate.v1.Transfer",
    } <= names
