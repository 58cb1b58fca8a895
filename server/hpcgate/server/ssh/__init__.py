"""SSH access to the clusters: per-user credentials and connection pools."""

from hpcgate.server.ssh.credentials import (
    CertificateAuthority,
    CredentialProvider,
    UserCredentials,
    build_credential_provider,
)
from hpcgate.server.ssh.pool import (
    CommandResult,
    PoolManager,
    PoolStats,
    SSHPool,
    UserStats,
    deadline_after,
    retry_channel_open,
)

__all__ = [
    "CertificateAuthority",
    "CommandResult",
    "CredentialProvider",
    "PoolManager",
    "PoolStats",
    "SSHPool",
    "UserCredentials",
    "UserStats",
    "build_credential_provider",
    "deadline_after",
    "retry_channel_open",
]
