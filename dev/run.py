"""``make run`` / ``make stop``: the service on the local loopback cluster.

``start`` starts the cluster (dev/cluster/cluster.py), writes a server
configuration for it, starts the gRPC server and the REST edge as background
processes, mints bearer tokens for alice and bob, prints how to call the
service, and writes the same facts to ``.hpcgate/dev.json``. It is
idempotent: what already runs is reused. ``stop`` stops the server and edge
it started (by pid); ``make stop`` then stops the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hpcgate.server.auth.devkeys import DevIssuer
from localsite import SYSTEM, local_config

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".hpcgate"
RUN = STATE / "run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_cluster() -> dict[str, Any]:
    """Start (or reuse) the loopback cluster; return its JSON description."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev" / "cluster" / "cluster.py"), "start"],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def _alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -1, ...) would address whole process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids() -> dict[str, Any]:
    path = RUN / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _spawn(name: str, argv: list[str]) -> int:
    log = (RUN / f"{name}.log").open("ab")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    return process.pid


def _wait_http(url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s; see {log}")


def start() -> dict[str, Any]:
    cluster = start_cluster()
    RUN.mkdir(parents=True, exist_ok=True)
    issuer = DevIssuer.load_or_create(RUN / "jwt-signing-key.pem")
    issuer.write_jwks(RUN / "jwks.json")
    config_path = RUN / "hpcgate.yaml"
    config = local_config(cluster, RUN / "jwks.json")
    config["server"] = {"metrics_listen": f"127.0.0.1:{free_port()}"}
    config_path.write_text(yaml.safe_dump(config))

    pids = _pids()
    if not all(_alive(pids.get(name, {}).get("pid", -1)) for name in ("server", "edge")):
        stop_service()
        grpc_port, rest_port = free_port(), free_port()
        grpc_target = f"127.0.0.1:{grpc_port}"
        py = sys.executable
        pids = {
            "server": {
                "pid": _spawn(
                    "server",
                    [
                        py,
                        "-m",
                        "hpcgate.server",
                        "--config",
                        str(config_path),
                        "--listen",
                        grpc_target,
                    ],
                ),
                "address": grpc_target,
            },
            "edge": {
                "pid": _spawn(
                    "edge",
                    [py, "-m", "hpcgate.edge", "--server", grpc_target, "--port", str(rest_port)],
                ),
                "address": f"http://127.0.0.1:{rest_port}",
            },
        }
        (RUN / "pids.json").write_text(json.dumps(pids, indent=2))
    rest = pids["edge"]["address"]
    _wait_http(f"{rest}/status/liveness/", 30, RUN / "edge.log")

    facts = {
        "grpc": pids["server"]["address"],
        "rest": rest,
        "system": SYSTEM,
        "tokens": {user: issuer.token(user, lifetime=24 * 3600) for user in ("alice", "bob")},
        "ssh": {
            "host": cluster["ssh"]["host"],
            "port": cluster["ssh"]["port"],
            "ca_key": cluster["ssh"]["ca_key"],
            "known_hosts": cluster["ssh"]["known_hosts"],
        },
        "s3": {"endpoint": cluster["s3"]["endpoint"]},
        "config": str(config_path),
        "metrics": f"http://{config['server']['metrics_listen']}/metrics",
    }
    (STATE / "dev.json").write_text(json.dumps(facts, indent=2))
    return facts


def stop_service() -> None:
    for name, entry in _pids().items():
        pid = entry.get("pid", -1)
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)  # started in its own session: pid == pgid
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            print(f"stopped {name} (pid {pid})", file=sys.stderr)
    (RUN / "pids.json").unlink(missing_ok=True)


def _banner(facts: dict[str, Any]) -> str:
    rest, system, alice = facts["rest"], facts["system"], facts["tokens"]["alice"]
    return f"""
hpcgate is running on the local cluster.

  gRPC  {facts["grpc"]}
  REST  {rest}   (OpenAPI: {rest}/openapi.json)
  Metrics {facts["metrics"]}

Tokens (valid 24 h):
  ALICE={alice}
  BOB={facts["tokens"]["bob"]}

Try:
  curl -H "Authorization: Bearer $ALICE" {rest}/status/systems
  curl -H "Authorization: Bearer $ALICE" "{rest}/filesystem/{system}/ops/ls?path=/home/alice"
  .venv/bin/python - <<'PY'
import grpc, json
from hpcgate.v1 import status_pb2, status_pb2_grpc
dev = json.load(open(".hpcgate/dev.json"))
with grpc.insecure_channel(dev["grpc"]) as channel:
    stub = status_pb2_grpc.StatusStub(channel)
    auth = [("authorization", "Bearer " + dev["tokens"]["alice"])]
    print(stub.ListSystems(status_pb2.ListSystemsRequest(), metadata=auth))
PY

The same facts are in .hpcgate/dev.json. Stop everything with: make stop
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args(argv)
    if args.command == "start":
        print(_banner(start()))
    else:
        stop_service()


if __name__ == "__main__":
    main()
