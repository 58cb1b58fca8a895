"""The Status service against the real Slurm of the loopback cluster."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from grpc_status import rpc_status

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.v1 import status_pb2, status_pb2_grpc


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


async def test_systems_report_health_of_every_service(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        body = (await client.get("/status/systems", headers=live.headers("alice"))).json()
    (system,) = body["systems"]
    health = {(h["serviceType"], h.get("path")): h for h in system["servicesHealth"]}
    assert set(health) == {
        ("ssh", None),
        ("scheduler", None),
        ("filesystem", "/home"),
        ("filesystem", "/scratch"),
        ("s3", None),
    }
    assert all(h["healthy"] for h in health.values()), health
    assert all(h["latency"] > 0 for h in health.values())
    assert system["lastHealthCheck"]


async def test_systems_describe_the_staging_area_without_its_secrets(live: LiveService) -> None:
    """FirecREST's s3 data_transfer, filled from the system's s3 config; no key or private URL."""
    s3 = live.running.runtime.systems[live.system].config.s3
    assert s3 is not None
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        body = (await client.get("/status/systems", headers=live.headers("alice"))).json()
    (system,) = body["systems"]
    transfer = system["dataOperation"]["data_transfer"]
    assert transfer["serviceType"] == "s3"
    assert transfer["publicUrl"] == s3.client_endpoint
    assert transfer["ttl"] == s3.url_expiry
    assert transfer["multipart"]["max_part_size"] == s3.max_part_size
    assert transfer["bucketLifecycleConfiguration"] == {"days": s3.lifecycle_days}
    assert not {"privateUrl", "accessKeyId", "secretAccessKey"} & transfer.keys()


async def test_nodes_over_grpc_and_rest(live: LiveService, cluster: Cluster) -> None:
    stub = status_pb2_grpc.StatusStub(live.channel)
    reply = await stub.ListNodes(
        status_pb2.ListNodesRequest(system_name=live.system), metadata=live.metadata("alice")
    )
    (node,) = reply.nodes
    assert node.name == cluster.slurm["node"]
    assert node.cpus == cluster.slurm["cpus"]
    assert node.state[0] in {"IDLE", "MIXED", "ALLOCATED"}
    assert set(node.partitions) == set(cluster.slurm["partitions"])
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        body = (
            await client.get(f"/status/{live.system}/nodes", headers=live.headers("bob"))
        ).json()
    assert body["nodes"][0]["name"] == node.name
    assert body["nodes"][0]["cpus"] == node.cpus


async def test_hidden_partitions_only_on_request(live: LiveService, cluster: Cluster) -> None:
    hidden = set(cluster.slurm["hidden_partitions"])
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        url, headers = f"/status/{live.system}/partitions", live.headers("alice")
        visible = (await client.get(url, headers=headers)).json()["partitions"]
        everything = (await client.get(url, params={"show_hidden": "true"}, headers=headers)).json()
    names = {p["name"] for p in visible}
    all_names = {p["name"] for p in everything["partitions"]}
    assert names == set(cluster.slurm["partitions"]) - hidden
    assert all_names == set(cluster.slurm["partitions"])
    assert all(p["partition"] == "UP" for p in visible)


async def test_reservations(live: LiveService, cluster: Cluster) -> None:
    stub = status_pb2_grpc.StatusStub(live.channel)
    reply = await stub.ListReservations(
        status_pb2.ListReservationsRequest(system_name=live.system), metadata=live.metadata("bob")
    )
    (reservation,) = reply.reservations
    assert reservation.name == cluster.slurm["reservation"]
    assert reservation.node_list == cluster.slurm["node"]
    assert reservation.end_time > reservation.start_time > 0


async def test_userinfo_is_each_callers_own(live: LiveService, cluster: Cluster) -> None:
    """alice and bob at once each see their own uid, groups and accounts (per-user certs)."""
    stub = status_pb2_grpc.StatusStub(live.channel)

    async def info(user: str) -> status_pb2.GetUserInfoResponse:
        request = status_pb2.GetUserInfoRequest(system_name=live.system)
        return await stub.GetUserInfo(request, metadata=live.metadata(user))

    replies = await asyncio.gather(*(info(u) for u in ["alice", "bob"] * 10))
    for user, reply in zip(["alice", "bob"] * 10, replies, strict=True):
        expected = cluster.users[user]
        assert reply.user.name == user
        assert reply.user.id == str(expected["uid"])
        assert reply.group.id == str(expected["gid"])
        assert {g.name for g in reply.groups} >= {user, cluster.raw["project_group"]}
        assert {a.name for a in reply.accounts} == set(expected["accounts"])
        defaults = [a.name for a in reply.accounts if a.is_default]
        assert defaults == [expected["default_account"]]
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        body = (
            await client.get(f"/status/{live.system}/userinfo", headers=live.headers("bob"))
        ).json()
    assert body["user"] == {"id": str(cluster.users["bob"]["uid"]), "name": "bob"}
    assert body["accounts"] == [{"name": "proj1", "default": True}]


async def test_unknown_system_is_404(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        response = await client.get("/status/nowhere/nodes", headers=live.headers("alice"))
    assert response.status_code == 404
    assert response.json()["data"]["reason"] == "SYSTEM_NOT_FOUND"


async def test_liveness_lists_health_runs_without_a_token(live: LiveService) -> None:
    async with httpx.AsyncClient(base_url=live.rest_url) as client:
        body = (await client.get("/status/liveness/")).json()
    assert live.system in body["healthcheckRuns"]


async def test_required_claims_gate_the_system(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("claims") / "jwks.json"
    issuer.write_jwks(jwks)
    settings = live_settings(cluster, jwks, required_claims={"groups": ["hpc-users"]})
    async for service in start_service(settings):
        url = f"/status/{service.settings.systems[0].name}/userinfo"
        async with httpx.AsyncClient(base_url=service.rest_url) as client:
            member = issuer.token("alice", groups=["hpc-users"])
            outsider = issuer.token("bob", groups=["other"])
            allowed = await client.get(url, headers={"Authorization": f"Bearer {member}"})
            denied = await client.get(url, headers={"Authorization": f"Bearer {outsider}"})
        assert allowed.status_code == 200, allowed.text
        assert denied.status_code == 403
        assert denied.json()["data"]["reason"] == "SYSTEM_ACCESS_DENIED"


async def test_a_burst_of_calls_beyond_grpcs_pending_default_all_succeed(live: LiveService) -> None:
    """3,000 calls at once on one channel: gRPC's default would cancel hundreds of them."""
    stub = status_pb2_grpc.StatusStub(live.channel)
    metadata = live.metadata("alice")
    request = status_pb2.ListSystemsRequest()
    calls = (stub.ListSystems(request, metadata=metadata) for _ in range(3000))
    replies = await asyncio.gather(*calls, return_exceptions=True)
    failures = [reply for reply in replies if isinstance(reply, BaseException)]
    assert failures == []
    assert all(isinstance(reply, status_pb2.ListSystemsResponse) for reply in replies)
