"""The server configuration for the loopback cluster (dev/cluster).

Shared by ``make run`` (dev/run.py) and the tests' ``live`` fixture, so that
both run the service exactly as configured here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from devkeys import DEV_AUDIENCE, DEV_ISSUER

SYSTEM = "cluster"
# The scheduler plug-ins the loopback cluster can be reached with.
SCHEDULERS = ("slurm", "slurm-rest")


def scheduler_block(cluster: dict[str, Any], plugin: str = "slurm") -> dict[str, Any]:
    """The system's ``scheduler`` block: Slurm's commands over SSH, or its slurmrestd.

    ``slurm-rest`` talks to the cluster's slurmrestd (on loopback, JWT auth),
    minting each user's token with the cluster's key; the version is detected.
    """
    if plugin == "slurm":
        return {"type": "slurm"}
    if plugin != "slurm-rest":
        raise ValueError(f"unknown scheduler plug-in {plugin!r}; one of {', '.join(SCHEDULERS)}")
    rest = cluster["slurmrestd"]
    return {
        "type": "slurm-rest",
        "url": rest["url"],
        "api_version": "auto",
        "jwt_key_file": rest["jwt_key"],
    }


def local_config(
    cluster: dict[str, Any],
    jwks_file: Path | None = None,
    issuer: str | None = None,
    scheduler: str = "slurm",
) -> dict[str, Any]:
    """The server configuration for the loopback cluster.

    Tokens are those of the development issuer whose keys are in
    ``jwks_file``, or, given ``issuer``, those of that OIDC provider
    (dev/oidc.py), whose keys the server finds through its discovery document.
    ``scheduler`` is the plug-in (:data:`SCHEDULERS`) the system uses.
    """
    ssh, s3 = cluster["ssh"], cluster["s3"]
    keys: dict[str, Any] = {"jwks_file": str(jwks_file)}
    if issuer is not None:
        # An unknown kid (the provider rotated, SIGHUP) refetches within 10 s,
        # not a site's 5 minutes: one provider on loopback, and a developer waiting.
        keys = {"issuer": issuer, "jwks_refresh_interval": 10}
    return {
        "auth": {
            "issuer": DEV_ISSUER,
            **keys,
            "audience": DEV_AUDIENCE,
            "username_claim": "preferred_username",
            "algorithms": ["RS256"],
        },
        "credentials": {
            "ca_key": {"file": ssh["ca_key"]},
            "certificate_lifetime": 300,
            "service_account": cluster["service_account"]["name"],
        },
        "systems": [
            {
                "name": SYSTEM,
                "ssh": {
                    "host": ssh["host"],
                    "port": ssh["port"],
                    "known_hosts": ssh["known_hosts"],
                    "pool": {"max_connections": 4, "max_channels": ssh.get("max_sessions", 10)},
                },
                "scheduler": scheduler_block(cluster, scheduler),
                "filesystems": [
                    {"path": "/home", "data_type": "users", "default_work_dir": True},
                    {"path": "/scratch", "data_type": "scratch"},
                ],
                "s3": {
                    "endpoint": s3["endpoint"],
                    "region": s3.get("region", "us-east-1"),
                    "access_key": {"value": s3["access_key"]},
                    "secret_key": {"value": s3["secret_key"]},
                },
                "probing": {"interval": 10, "timeout": 5},
                "data_operation": {"data_transfer": transfer_methods(cluster)},
            }
        ],
    }


def transfer_methods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """s3 (the default), and the streamer and wormhole when the cluster has their venvs.

    The streamer's jobs run on the cluster's one node, which the client
    reaches on loopback, at the ports the cluster set aside for them. The
    wormhole's jobs use the cluster's mailbox server and transit relay (a
    client must too: ``WORMHOLE_RELAY_URL``, ``WORMHOLE_TRANSIT_HELPER``).
    """
    methods: list[dict[str, Any]] = [{"service_type": "s3"}]
    streamer = cluster.get("streamer")
    if streamer and Path(streamer["python"]).exists():
        methods.append(
            {
                "service_type": "streamer",
                "python": streamer["python"],
                "host": streamer["host"],
                "public_ips": [streamer["host"]],
                "port_range": streamer["port_range"],
                "wait_timeout": 600,
            }
        )
    wormhole = cluster.get("wormhole")
    if wormhole and Path(wormhole["command"]).exists():
        methods.append(
            {
                "service_type": "wormhole",
                "command": wormhole["command"],
                "relay_url": wormhole["mailbox_url"],
                "transit_helper": wormhole["transit_relay"],
                "transfer_timeout": 3600,
            }
        )
    return methods


# pyfirecrest (3.10, the newest) downloads with ``wormhole receive --code
# CODE``, an option no magic-wormhole release has (0.10.5 to 0.24.0 take the
# code as ``receive``'s argument; ``send`` has ``--code``). This shim, first
# on a client's PATH, passes that code as the argument and runs the real
# command; every other call passes through unchanged.
_WORMHOLE_SHIM = """#!{python}
import os, sys
args = sys.argv[1:]
if args[:1] == ["receive"] and "--code" in args[:-1]:
    at = args.index("--code")
    args.append(args.pop(at + 1))
    del args[at]
os.execv({real!r}, [{real!r}, *args])
"""


def wormhole_client_env(cluster: dict[str, Any], bin_dir: Path, path: str) -> dict[str, str]:
    """What a client process needs to run pyfirecrest's wormhole method against the cluster.

    Writes the ``wormhole`` shim (above) into ``bin_dir`` and returns the
    variables to set: ``PATH`` (``bin_dir`` before ``path``), the cluster's
    mailbox server and transit relay, and ``WORMHOLE_ACCEPT_FILE`` (else
    pyfirecrest's ``wormhole receive`` asks on stdin).
    """
    wormhole = cluster["wormhole"]
    shim = bin_dir / "wormhole"
    shim.write_text(_WORMHOLE_SHIM.format(python=sys.executable, real=wormhole["command"]))
    shim.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{path}",
        "WORMHOLE_RELAY_URL": wormhole["mailbox_url"],
        "WORMHOLE_TRANSIT_HELPER": wormhole["transit_relay"],
        "WORMHOLE_ACCEPT_FILE": "1",
    }
