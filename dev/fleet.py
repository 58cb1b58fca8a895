"""``make fleet`` / ``make stop``: hpcgate as a fleet on this machine.

What a centre runs, on loopback: the local cluster (dev/cluster/cluster.py),
Redis for the replicas' coordination, three server replicas sharing it
(``coordination: {backend: redis}``), two edges each balancing over all
three servers, and nginx in front of the edges (REST) and the servers
(gRPC, ``grpc_pass``) with the shipped ``deploy/nginx/hpcgate.conf``, its
addresses swapped for these. It prints the same facts as ``make run``
(the addresses are nginx's), plus every replica's address, and writes them
to ``.hpcgate/fleet.json``. ``stop`` stops what ``start`` started (by pid).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from localsite import SYSTEM, local_config
from oidc import Provider
from run import (
    ROOT,
    STATE,
    banner,
    free_port,
    spawn_oidc,
    spawn_process,
    start_cluster,
    stop_processes,
    tls_facts,
    wait_http,
)

FLEET = STATE / "fleet"
SERVERS = 3
EDGES = 2
NGINX = "/usr/sbin/nginx"
REDIS = "/usr/bin/redis-server"
NGINX_CONF = ROOT / "deploy" / "nginx" / "hpcgate.conf"


def _upstream(conf: str, name: str, addresses: list[str]) -> str:
    """``conf`` with upstream ``name``'s server lines replaced by ``addresses``."""
    block = re.search(rf"upstream {name} \{{.*?\n\}}", conf, re.DOTALL)
    if block is None:
        raise ValueError(f"no upstream {name} in {NGINX_CONF}")
    body = re.sub(r"\n    server [^;]+;", "", block.group(0))
    lines = "".join(f"\n    server {a} max_fails=1 fail_timeout=5s;" for a in addresses)
    return conf.replace(block.group(0), body.replace("{", "{" + lines, 1))


def render_nginx(edges: list[str], servers: list[str], rest_port: int, grpc_port: int) -> str:
    """The shipped nginx file with these upstreams and loopback listeners, nothing else changed."""
    conf = _upstream(NGINX_CONF.read_text(), "hpcgate_edges", edges)
    conf = _upstream(conf, "hpcgate_servers", servers)
    conf, rest = re.subn(r"listen 8080;", f"listen 127.0.0.1:{rest_port};", conf)
    conf, grpc = re.subn(r"listen 50050 http2;", f"listen 127.0.0.1:{grpc_port} http2;", conf)
    if rest != 1 or grpc != 1:
        raise ValueError(f"the listeners of {NGINX_CONF} changed: update dev/fleet.py")
    return conf


def nginx_main(directory: Path, include: Path) -> str:
    """An nginx.conf that runs in the foreground with everything kept in ``directory``."""
    temp = {k: directory / f"nginx-{k}" for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""\
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log {directory}/nginx-access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {include};
}}
"""


def _pids() -> dict[str, Any]:
    path = FLEET / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def stop() -> None:
    """Stop what ``start`` started (nginx first, so that it stops taking requests)."""
    pids = _pids()
    order = sorted(pids, key=lambda name: (not name.startswith("nginx"), name))
    stop_processes({name: pids[name] for name in order})
    (FLEET / "pids.json").unlink(missing_ok=True)
    (STATE / "fleet.json").unlink(missing_ok=True)


def _wait_grpc_serving(target: str, log: Path, timeout: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"server {target} is not serving after {timeout:.0f} s; see {log}")


def start() -> dict[str, Any]:
    """Start the fleet (after stopping one left running) and return its facts."""
    cluster = start_cluster()
    stop()
    FLEET.mkdir(parents=True, exist_ok=True)
    pids: dict[str, Any] = {}
    try:
        pids["oidc"] = spawn_oidc(FLEET)
        issuer = pids["oidc"]["address"]
        wait_http(f"{issuer}/.well-known/openid-configuration", 30, FLEET / "oidc.log")

        redis_port = free_port()
        argv = [REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(FLEET)]
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        pids["redis"] = {"pid": spawn_process("redis", argv, FLEET), "address": redis_url}

        config = local_config(cluster, issuer=issuer)
        config["coordination"] = {"backend": "redis", "url": redis_url}
        servers = []
        for index in range(SERVERS):
            name, target = f"server{index}", f"127.0.0.1:{free_port()}"
            config["server"] = {"metrics_listen": f"127.0.0.1:{free_port()}"}
            path = FLEET / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            argv = [sys.executable, "-m", "hpcgate.server", "--config", str(path)]
            argv += ["--listen", target]
            pids[name] = {
                "pid": spawn_process(name, argv, FLEET),
                "address": target,
                "metrics": f"http://{config['server']['metrics_listen']}/metrics",
            }
            servers.append(target)
        edges = []
        for index in range(EDGES):
            name, port = f"edge{index}", free_port()
            argv = [sys.executable, "-m", "hpcgate.edge", "--server", ",".join(servers)]
            argv += ["--port", str(port)]
            pids[name] = {"pid": spawn_process(name, argv, FLEET), "address": f"127.0.0.1:{port}"}
            edges.append(f"127.0.0.1:{port}")

        rest_port, grpc_port = free_port(), free_port()
        (FLEET / "hpcgate-nginx.conf").write_text(
            render_nginx(edges, servers, rest_port, grpc_port)
        )
        main = FLEET / "nginx.conf"
        main.write_text(nginx_main(FLEET, FLEET / "hpcgate-nginx.conf"))
        pids["nginx"] = {
            "pid": spawn_process("nginx", [NGINX, "-c", str(main)], FLEET),
            "address": f"http://127.0.0.1:{rest_port}",
        }
        (FLEET / "pids.json").write_text(json.dumps(pids, indent=2))

        for index, target in enumerate(servers):
            log = FLEET / f"server{index}.log"
            _wait_grpc_serving(target, log)
            wait_http(pids[f"server{index}"]["metrics"], 30, log)
        for edge in edges:
            wait_http(f"http://{edge}/status/liveness/", 30, FLEET / "edge0.log")
        rest = f"http://127.0.0.1:{rest_port}"
        wait_http(f"{rest}/status/liveness/", 30, FLEET / "nginx-error.log")
    except BaseException:
        stop_processes(pids)
        raise

    provider = Provider.load_or_create(issuer, FLEET / "oidc.json")
    facts = {
        "tls": tls_facts(FLEET / "tls"),
        "grpc": f"127.0.0.1:{grpc_port}",
        "rest": rest,
        "system": SYSTEM,
        "tokens": {user: provider.token(user, lifetime=24 * 3600) for user in ("alice", "bob")},
        "oidc": provider.facts(),
        "metrics": pids["server0"]["metrics"],
        "replicas": {
            "servers": [
                {"grpc": pids[f"server{i}"]["address"], "metrics": pids[f"server{i}"]["metrics"]}
                for i in range(SERVERS)
            ],
            "edges": [f"http://{e}" for e in edges],
            "redis": redis_url,
            "nginx": {"rest": rest, "grpc": f"127.0.0.1:{grpc_port}"},
        },
    }
    (STATE / "fleet.json").write_text(json.dumps(facts, indent=2))
    return facts


def fleet_banner(facts: dict[str, Any]) -> str:
    """``make run``'s banner, for the fleet (through nginx), then the replicas."""
    replicas = facts["replicas"]
    lines = [banner(facts).replace(".hpcgate/dev.json", ".hpcgate/fleet.json")]
    lines.append("Replicas (nginx balances over them; the edges balance over the servers):")
    for index, server in enumerate(replicas["servers"]):
        lines.append(f"  server{index}  gRPC {server['grpc']}   metrics {server['metrics']}")
    for index, edge in enumerate(replicas["edges"]):
        lines.append(f"  edge{index}    REST {edge}")
    lines.append(f"  redis    {replicas['redis']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args(argv)
    if args.command == "start":
        print(fleet_banner(start()))
    else:
        stop()


if __name__ == "__main__":
    main()
