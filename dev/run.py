"""``make run`` / ``make stop``: the service on the local loopback cluster.

``start`` starts the cluster (dev/cluster/cluster.py), a local OIDC provider
(dev/oidc.py), writes a server configuration that trusts that provider (keys
by discovery, as a site's), starts the gRPC server and the REST edge as
background processes, mints 24-hour bearer tokens for alice and bob with the
provider's key, prints how to call the service (static tokens, or
pyfirecrest's ClientCredentialsAuth against the provider), and writes the
same facts to ``.hpcgate/dev.json``. It is idempotent: what already runs is
reused. ``stop`` stops the provider, server and edge it started (by pid);
``make stop`` then stops the cluster.
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

from devkeys import DevIssuer
from devtls import DevCA
from localsite import SYSTEM, local_config
from oidc import TOKEN_LIFETIME, Provider

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


def alive(pid: int) -> bool:
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


def spawn_process(name: str, argv: list[str], run_dir: Path = RUN) -> int:
    """Start ``argv`` in a session of its own (pid == process group), logging to ``name.log``."""
    log = (run_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    return process.pid


def write_config(cluster: dict[str, Any], run_dir: Path) -> tuple[DevIssuer, Path, dict[str, Any]]:
    """Write a server configuration for ``cluster`` trusting a development key (``make bench``).

    Returns the token issuer (its key is kept in ``run_dir``), the config
    file and its content.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    issuer = DevIssuer.load_or_create(run_dir / "jwt-signing-key.pem")
    issuer.write_jwks(run_dir / "jwks.json")
    config_path, config = _write_server_config(
        local_config(cluster, run_dir / "jwks.json"), run_dir
    )
    return issuer, config_path, config


def _write_server_config(config: dict[str, Any], run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``config`` with a metrics port as ``run_dir/hpcgate.yaml``.

    The metrics port is a free one, so several services (``make run``,
    ``make bench``) can run side by side.
    """
    config["server"] = {"metrics_listen": f"127.0.0.1:{free_port()}"}
    config_path = run_dir / "hpcgate.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, config


def spawn_oidc(run_dir: Path) -> dict[str, Any]:
    """Start the local OIDC provider on a free port; its clients and keys stay in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, str(ROOT / "dev" / "oidc.py"), "--state", str(run_dir)]
    argv += ["--port", str(port)]
    return {"pid": spawn_process("oidc", argv, run_dir), "address": f"http://127.0.0.1:{port}"}


def spawn_service(config_path: Path, run_dir: Path) -> dict[str, Any]:
    """Start the gRPC server and the REST edge as background processes on free ports.

    Each runs in its own session (pid == process group id) and logs into
    ``run_dir``. Returns ``{"server"|"edge": {"pid", "address"}}``, the
    shape of ``pids.json``; the caller waits for readiness (:func:`wait_http`).
    """
    grpc_port, rest_port = free_port(), free_port()
    grpc_target = f"127.0.0.1:{grpc_port}"
    server_argv = [sys.executable, "-m", "hpcgate.server", "--config", str(config_path)]
    server_argv += ["--listen", grpc_target]
    edge_argv = [sys.executable, "-m", "hpcgate.edge", "--server", grpc_target]
    edge_argv += ["--port", str(rest_port)]
    return {
        "server": {"pid": spawn_process("server", server_argv, run_dir), "address": grpc_target},
        "edge": {
            "pid": spawn_process("edge", edge_argv, run_dir),
            "address": f"http://127.0.0.1:{rest_port}",
        },
    }


def stop_processes(pids: dict[str, Any]) -> None:
    """SIGTERM each process group of ``pids`` (the shape :func:`spawn_service` returns)."""
    for name, entry in pids.items():
        pid = entry.get("pid", -1)
        if alive(pid):
            os.killpg(pid, signal.SIGTERM)  # started in its own session: pid == pgid
            for _ in range(50):
                if not alive(pid):
                    break
                time.sleep(0.1)
            print(f"stopped {name} (pid {pid})", file=sys.stderr)


def wait_http(url: str, timeout: float, log: Path) -> None:
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
    config_path = RUN / "hpcgate.yaml"

    pids = _pids()
    if not all(alive(pids.get(name, {}).get("pid", -1)) for name in ("oidc", "server", "edge")):
        stop_service()
        # The provider first: its address is the issuer the server trusts.
        pids = {"oidc": spawn_oidc(RUN)}
        issuer = pids["oidc"]["address"]
        wait_http(f"{issuer}/.well-known/openid-configuration", 30, RUN / "oidc.log")
        # HPCGATE_SCHEDULER=slurm-rest reaches Slurm through slurmrestd instead.
        plugin = os.environ.get("HPCGATE_SCHEDULER", "slurm")
        config_path, _ = _write_server_config(
            local_config(cluster, issuer=issuer, scheduler=plugin), RUN
        )
        pids.update(spawn_service(config_path, RUN))
        (RUN / "pids.json").write_text(json.dumps(pids, indent=2))
    config = yaml.safe_load(config_path.read_text())
    rest = pids["edge"]["address"]
    wait_http(f"{rest}/status/liveness/", 30, RUN / "edge.log")
    # The provider's clients and keys, as the running provider keeps them.
    provider = Provider.load_or_create(pids["oidc"]["address"], RUN / "oidc.json")

    facts = {
        "tls": tls_facts(RUN / "tls"),
        "grpc": pids["server"]["address"],
        "rest": rest,
        "system": SYSTEM,
        "tokens": {user: provider.token(user, lifetime=24 * 3600) for user in ("alice", "bob")},
        "oidc": provider.facts(),
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


def tls_facts(directory: Path) -> dict[str, Any]:
    """The development CA in ``directory`` (made there once) and its certificates' files.

    For trying ``server.tls`` and the edge's ``--server-ca``/``--client-cert``
    (README "TLS"); the development service itself stays plaintext on loopback.
    """
    ca = DevCA.load_or_create(directory)
    return {
        "ca": str(ca.ca),
        "server": {"certificate": str(ca.server.certificate), "key": str(ca.server.key)},
        "edge": {"certificate": str(ca.client.certificate), "key": str(ca.client.key)},
    }


def stop_service() -> None:
    stop_processes(_pids())
    (RUN / "pids.json").unlink(missing_ok=True)


def banner(facts: dict[str, Any]) -> str:
    rest, system, alice = facts["rest"], facts["system"], facts["tokens"]["alice"]
    oidc = facts["oidc"]
    alice_client, bob_client = oidc["clients"]["alice"], oidc["clients"]["bob"]
    return f"""
hpcgate is running on the local cluster.

  gRPC  {facts["grpc"]}
  REST  {rest}   (OpenAPI: {rest}/openapi.json)
  Metrics {facts["metrics"]}

Tokens (valid 24 h):
  ALICE={alice}
  BOB={facts["tokens"]["bob"]}

OIDC provider {oidc["issuer"]} (client credentials, tokens valid {TOKEN_LIFETIME // 60} min):
  token URL  {oidc["token_url"]}
  alice      client_id={alice_client["client_id"]} client_secret={alice_client["client_secret"]}
  bob        client_id={bob_client["client_id"]} client_secret={bob_client["client_secret"]}

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
  .venv/bin/python - <<'PY'
import json
from firecrest import ClientCredentialsAuth
from firecrest.v2 import Firecrest
dev = json.load(open(".hpcgate/dev.json"))
alice = dev["oidc"]["clients"]["alice"]
auth = ClientCredentialsAuth(alice["client_id"], alice["client_secret"], dev["oidc"]["token_url"])
client = Firecrest(firecrest_url=dev["rest"], authorization=auth)
print(client.list_files(dev["system"], "/home/alice"))
PY

A development CA for trying TLS (server.tls, hpcgate-edge --server-ca): {facts["tls"]["ca"]}

The same facts are in .hpcgate/dev.json. Stop everything with: make stop
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args(argv)
    if args.command == "start":
        print(banner(start()))
    else:
        stop_service()


if __name__ == "__main__":
    main()
