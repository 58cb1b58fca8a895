"""How the edge names its servers to gRPC, and the service config it gives the channel."""

from __future__ import annotations

import json

from hpcgate.edge.upstream import service_config, target_of


def test_targets_and_service_config() -> None:
    assert target_of("10.0.0.1:50051") == "10.0.0.1:50051"
    assert target_of("10.0.0.1:1, 10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert target_of("dns:///servers.example.org:50051") == "dns:///servers.example.org:50051"
    config = json.loads(service_config(["/hpcgate.v1.Status/ListSystems"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "hpcgate.v1.Status", "method": "ListSystems"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
