"""SSH access to the clusters: per-user credentials and connection pools."""

from hpcgate.server.ssh.connection import CommandResult, StdoutSink, retry_channel_open
from hpcgate.server.ssh.credentials import (
    CertificateAuthority,
    CredentialProvider,
    UserCredentials,
    build_credential_provider,
)
from hpcgate.server.ssh.deadlines import deadline_after
from hpcgate.server.ssh.pool import PoolManager, PoolStats, SSHPool
from hpcgate.server.ssh.userpool import UserStats

__all__ = [
    "CertificateAuthority",
    "CommandResult",
    "CredentialProvider",
    "PoolManager",
    "PoolStats",
    "SSHPool",
    "StdoutSink",
    "UserCredentials",
    "UserStats",
    "build_credential_provider",
    "deadline_after",
    "retry_channel_open",
]
