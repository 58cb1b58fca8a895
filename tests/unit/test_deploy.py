"""The deployment artifacts under deploy/: valid Kubernetes, and consistent with the code.

Every manifest is validated against the Kubernetes schemas
(kubernetes-validate, strict: an unknown field is an error), and the parts
that must agree with hpcgate itself are checked against it: the site file
in the ConfigMap loads with the server's own configuration model, the
probes and ports match what the server and the edge listen on, and the
image runs as the non-root user the Deployments require.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from hpcgate.server.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
KUBERNETES = "1.30.0"  # the oldest release still supported upstream when this was written


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append(
                    (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
                )
    return found


DOCUMENTS = _documents()


def _one(kind: str, name: str) -> dict[str, Any]:
    matches = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def _container(deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _one("Deployment", deployment)["spec"]["template"]["spec"][
        "containers"
    ]
    return containers[0]


@pytest.mark.parametrize(("label", "document"), DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_every_manifest_is_valid_kubernetes(label: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_kustomization_names_every_manifest() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_the_site_file_loads_with_the_servers_model() -> None:
    site = yaml.safe_load(_one("ConfigMap", "hpcgate-site")["data"]["site.yaml"])
    settings = parse_config(site)
    assert settings.server.listen.endswith(":50051")
    # Replicas coordinate through the Redis of redis.yaml.
    assert settings.coordination.backend == "redis"
    redis = _one("Service", "hpcgate-redis")
    port = redis["spec"]["ports"][0]["port"]
    assert settings.coordination.url == f"redis://{redis['metadata']['name']}:{port}/0"
    # Secrets come by reference: files mounted from Secrets, or variables set from them.
    server = _container("hpcgate-server")
    mounts = [m["mountPath"] for m in server["volumeMounts"]]
    key_file = str(settings.credentials.ca_key.file)  # type: ignore[union-attr]
    assert any(key_file.startswith(m + "/") for m in mounts), key_file
    variables = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"]}
    for system in settings.systems:
        assert system.s3 is not None
        for secret in (system.s3.access_key, system.s3.secret_key):
            assert secret.env in variables, secret.env
        known_hosts = str(system.ssh.known_hosts)
        assert any(known_hosts.startswith(m + "/") for m in mounts), known_hosts


def test_probes_and_ports_match_what_the_processes_serve() -> None:
    site = yaml.safe_load(_one("ConfigMap", "hpcgate-site")["data"]["site.yaml"])
    server = _container("hpcgate-server")
    grpc_port = {p["name"]: p["containerPort"] for p in server["ports"]}["grpc"]
    assert site["server"]["listen"] == f"0.0.0.0:{grpc_port}"
    assert site["server"]["metrics_listen"].endswith(
        f":{ {p['name']: p['containerPort'] for p in server['ports']}['metrics'] }"
    )
    for probe in ("readinessProbe", "livenessProbe"):
        # grpc.health.v1 of the whole server: "" is SERVING once it listens.
        assert server[probe]["grpc"] == {"port": grpc_port, "service": ""}

    edge = _container("hpcgate-edge")
    args = edge["args"]
    target = args[args.index("--server") + 1]
    service = _one("Service", "hpcgate-server")
    assert target == f"{service['metadata']['name']}:{grpc_port}"
    assert service["spec"]["clusterIP"] == "None"  # every replica's address, for balancing
    http_port = int(args[args.index("--port") + 1])
    assert {p["name"]: p["containerPort"] for p in edge["ports"]}["http"] == http_port
    assert edge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert edge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    metrics = args[args.index("--metrics-listen") + 1]
    assert {p["name"]: p["containerPort"] for p in edge["ports"]}["metrics"] == int(
        metrics.rpartition(":")[2]
    )


def test_graceful_shutdown_fits_in_the_termination_grace() -> None:
    site = yaml.safe_load(_one("ConfigMap", "hpcgate-site")["data"]["site.yaml"])
    grace = _one("Deployment", "hpcgate-server")["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > site["server"]["shutdown_grace"]


def test_the_image_runs_as_the_non_root_user_the_deployments_require() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None, "the image must name a numeric non-root USER"
    assert user.group(1) != "0"
    for name in ("hpcgate-server", "hpcgate-edge"):
        context = _one("Deployment", name)["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert str(context["runAsUser"]) == user.group(1)


def test_the_deployments_run_commands_the_packages_install() -> None:
    root = DEPLOY.parent
    scripts: set[str] = set()
    for pyproject in [root / "pyproject.toml", *root.glob("*/pyproject.toml")]:
        scripts |= set(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    for name in ("hpcgate-server", "hpcgate-edge"):
        assert _container(name)["args"][0] in scripts
