"""pytest plugin: the loopback HPC cluster of dev/cluster/cluster.py.

Load with ``pytest_plugins = ["cluster_fixture"]`` (tests/ on the path).
The session fixture ``cluster`` runs ``cluster.py start`` once (idempotent:
it reuses a cluster that already runs) and returns a :class:`Cluster`.
It never skips: if the cluster cannot start, the fixture fails with the
script's stderr.

SSH helpers mint user certificates in memory, signed by the cluster's CA,
and connect with host-key verification against the cluster's known_hosts::

    async with cluster.connect("alice") as conn:
        r = await conn.run("id -un", check=True)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "dev" / "cluster" / "cluster.py"
START_TIMEOUT_S = 900  # a fresh machine installs Debian packages first


@dataclass(frozen=True)
class SSHInfo:
    host: str
    port: int
    known_hosts: str
    ca_key: str
    ca_pub: str
    host_key: str
    max_sessions: int
    users: list[str]


@dataclass(frozen=True)
class S3Info:
    endpoint: str
    region: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Cluster:
    """The JSON printed by ``cluster.py start``, with typed access to what tests use."""

    raw: dict[str, Any]
    ssh: SSHInfo
    s3: S3Info
    state_dir: Path
    slurm_conf: str
    _ca: list[asyncssh.SSHKey] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Cluster:
        s = doc["ssh"]
        return cls(
            raw=doc,
            ssh=SSHInfo(
                host=s["host"],
                port=int(s["port"]),
                known_hosts=s["known_hosts"],
                ca_key=s["ca_key"],
                ca_pub=s["ca_pub"],
                host_key=s["host_key"],
                max_sessions=int(s["max_sessions"]),
                users=list(s["users"]),
            ),
            s3=S3Info(
                **{k: doc["s3"][k] for k in ("endpoint", "region", "access_key", "secret_key")}
            ),
            state_dir=Path(doc["state_dir"]),
            slurm_conf=doc["slurm"]["conf"],
        )

    @property
    def slurm(self) -> dict[str, Any]:
        slurm: dict[str, Any] = self.raw["slurm"]
        return slurm

    @property
    def users(self) -> dict[str, Any]:
        users: dict[str, Any] = self.raw["users"]
        return users

    def ca_key(self) -> asyncssh.SSHKey:
        if not self._ca:
            self._ca.append(asyncssh.read_private_key(self.ssh.ca_key))
        return self._ca[0]

    def mint_user_key(
        self, user: str, *, valid_for: float = 3600, principals: list[str] | None = None
    ) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        return mint_user_key(self.ca_key(), user, valid_for=valid_for, principals=principals)

    def connect(self, user: str, *, key: Any = None, **kwargs: Any) -> Any:
        """asyncssh.connect as ``user`` with a fresh CA-signed certificate.

        Returns asyncssh's awaitable/async-context-manager. ``key`` replaces
        the client key: a (key, cert) pair or a bare key (no certificate).
        """
        if key is None:
            key = self.mint_user_key(user)
        return ssh_connect(self.ssh, user, key, **kwargs)


def mint_user_key(
    ca: asyncssh.SSHKey,
    user: str,
    *,
    valid_for: float = 3600,
    principals: list[str] | None = None,
) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    """A new ed25519 key and a user certificate for it signed by ``ca``, in memory."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca.generate_user_certificate(
        key.convert_to_public(),
        f"hpcgate-test-{user}",
        principals=principals if principals is not None else [user],
        valid_after=now - 60,
        valid_before=now + int(valid_for),
    )
    return key, cert


def ssh_connect(ssh: SSHInfo, user: str, key: Any, **kwargs: Any) -> Any:
    """Connect verifying the host key against the cluster's known_hosts (unless overridden)."""
    opts: dict[str, Any] = {
        "username": user,
        "client_keys": [key],
        "known_hosts": ssh.known_hosts,
        "agent_path": None,
        "config": None,
        "preferred_auth": "publickey",
        "connect_timeout": 20,
    }
    opts.update(kwargs)
    return asyncssh.connect(ssh.host, ssh.port, **opts)


def start_cluster() -> Cluster:
    """Run ``cluster.py start`` and parse its JSON; pytest.fail with its stderr if it cannot."""
    try:
        r = subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            env=dict(os.environ),
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(
            f"cluster.py start did not finish within {START_TIMEOUT_S}s\n--- stderr ---\n{err}",
            pytrace=False,
        )
    if r.returncode != 0:
        pytest.fail(
            f"cluster.py start failed (exit {r.returncode})\n--- stderr ---\n{r.stderr}",
            pytrace=False,
        )
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        pytest.fail(
            f"cluster.py start printed no JSON\n--- stdout ---\n{r.stdout}\n"
            f"--- stderr ---\n{r.stderr}",
            pytrace=False,
        )
    return Cluster.from_json(doc)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The running loopback cluster (started once per session, left running)."""
    return start_cluster()
