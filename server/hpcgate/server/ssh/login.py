"""Opening a user's SSH connection: the login options, host keys, jump host and login errors.

Only what hpcgate configures is used: the user's key and certificate, the
configured known hosts, no ``~/.ssh/config``, agent or GSS of the server's
own environment. Errors name the system, never its address (that goes to
the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import asyncssh

from hpcgate.server.config import SSHConfig
from hpcgate.server.errors import ErrorKind, ServiceError, redact_addresses
from hpcgate.server.ssh.connection import Client, Connection
from hpcgate.server.ssh.credentials import CredentialProvider
from hpcgate.server.ssh.errors import describe, unavailable

log = logging.getLogger(__name__)

# Keepalives that may go unanswered before a connection counts as dead.
KEEPALIVE_COUNT_MAX = 3
# Ciphers offered first, ahead of asyncssh's defaults ("^": prepend). AES-GCM
# seals a packet in one call (AES-NI), while asyncssh's chacha20-poly1305
# (its first choice) builds three ChaCha20 contexts per packet; every SFTP
# request is two packets (asyncssh sends an SSH_MSG_IGNORE before each), so
# for many small files this is the largest CPU cost of the SSH side: 1,000
# stat/open/read/close downloads took 0.53 s of CPU with chacha20, 0.34 s
# with AES-GCM. A server that offers neither still gets asyncssh's defaults.
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


async def open_connection(
    system: str,
    ssh: SSHConfig,
    credentials: CredentialProvider,
    user: str,
    on_lost: Callable[[Connection, Exception | None], None],
) -> Connection:
    """Log in to ``system`` as ``user``; raise ServiceError (UNAVAILABLE, PERMISSION_DENIED).

    ``on_lost`` is called with the connection when asyncssh reports it closed.
    """
    client_keys = (await credentials.credentials(user)).client_keys()
    client = Client()
    jump: asyncssh.SSHClientConnection | None = None
    try:
        if ssh.proxy_jump is not None:
            jump_user, jump_host, jump_port = parse_jump(ssh.proxy_jump)
            jump = await asyncssh.connect(
                jump_host, jump_port, **_options(ssh, jump_user or user, client_keys)
            )
        conn = await asyncssh.connect(
            ssh.host,
            ssh.port,
            tunnel=jump if jump is not None else (),
            client_factory=lambda: client,
            **_options(ssh, user, client_keys),
        )
    except (asyncssh.Error, OSError) as error:
        if jump is not None:
            jump.close()
        raise _connect_error(system, ssh, user, error) from error
    except BaseException:
        if jump is not None:
            jump.close()
        raise
    pooled = Connection(conn, jump)
    client.on_lost = lambda exc: on_lost(pooled, exc)
    log.info("opened ssh connection to %s as %s", system, user)
    return pooled


def parse_jump(spec: str) -> tuple[str | None, str, int]:
    """Split ``[user@]host[:port]`` (host may be ``[v6addr]``)."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        port = int(port_text)
    return user or None, host, port


def _options(ssh: SSHConfig, user: str, client_keys: Sequence[object]) -> dict[str, object]:
    """Keyword arguments of asyncssh.connect: our key and certificate only,
    verified host keys, timeouts and keepalives."""
    timeouts = ssh.timeouts
    return {
        "username": user,
        "client_keys": client_keys,
        "known_hosts": _known_hosts(ssh),
        # Nothing from the server's own environment: no ~/.ssh/config, agent or GSS.
        "config": None,
        "agent_path": None,
        "gss_auth": False,
        "kbdint_auth": False,
        "password": None,
        "preferred_auth": "publickey",
        "encryption_algs": PREFERRED_CIPHERS,
        "connect_timeout": timeouts.connect + timeouts.login,
        "login_timeout": timeouts.login,
        "keepalive_interval": timeouts.keepalive,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
    }


def _known_hosts(ssh: SSHConfig) -> asyncssh.SSHKnownHosts:
    """The trusted host keys (file re-read per connect, so rotations apply)."""
    lines = []
    if ssh.known_hosts is not None:
        lines.append(ssh.known_hosts.read_text())
    if ssh.known_hosts_entry is not None:
        lines.append(ssh.known_hosts_entry)
    return asyncssh.import_known_hosts("\n".join(lines))


def _connect_error(system: str, ssh: SSHConfig, user: str, error: Exception) -> ServiceError:
    """The ServiceError for a failed login of ``user``.

    The message names the system, never its address: that goes to the log.
    """
    log.info("ssh login to %s:%s failed: %r", ssh.host, ssh.port, error)
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return unavailable(
            f"SSH host key mismatch: the host key of {system} is not the one"
            f" in known_hosts; refusing to connect ({redact_addresses(error.reason)})",
            "SSH_HOST_KEY_MISMATCH",
        )
    if isinstance(error, asyncssh.PermissionDenied):
        return ServiceError(
            ErrorKind.PERMISSION_DENIED,
            f"{system} refused the SSH login of {user}",
            "SSH_AUTH_FAILED",
        )
    if isinstance(error, TimeoutError):
        return unavailable(f"timed out connecting to {system}", "SSH_UNREACHABLE")
    return unavailable(f"cannot connect to {system}: {describe(error)}", "SSH_UNREACHABLE")
