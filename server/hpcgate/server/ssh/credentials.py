"""Per-user SSH credentials: short-lived certificates minted from a CA, or static keys.

The server logs in to a cluster *as the caller*. For ordinary users it holds a
user-CA private key and mints, in memory, a fresh key pair plus an OpenSSH
user certificate whose only principal is the username and whose validity is a
few minutes; the cluster's sshd trusts the CA (``TrustedUserCAKeys``). Nothing
is ever written to disk, and a leaked certificate is useless soon after.
Service accounts (the health checker's identity, say) may use fixed keys
instead. A site that keeps its CA key elsewhere configures a signing service
(``credentials.signing_url``), which :class:`SigningService` asks.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate

from hpcgate.server.config import ConfigError, CredentialsConfig, StaticKey
from hpcgate.server.errors import ErrorKind, ServiceError

# A certificate is valid from this many seconds in the past, so that a cluster
# whose clock lags the server's a little still accepts it.
CLOCK_SKEW_ALLOWANCE = 120
# Renew a cached certificate once less than this fraction of its lifetime is left.
RENEW_FRACTION = 1 / 3
# POSIX-ish account names; anything else never becomes a certificate principal.
_USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class UserCredentials:
    """What :func:`asyncssh.connect` needs to log in as one user."""

    username: str
    key: asyncssh.SSHKey
    certificate: asyncssh.SSHCertificate | None
    # time.time() after which these credentials must not be used for a new login.
    expires_at: float

    def client_keys(self) -> list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate | None]]:
        """The ``client_keys`` argument of :func:`asyncssh.connect`."""
        return [(self.key, self.certificate)]


class CredentialProvider(Protocol):
    """Source of login credentials for a username.

    Implementations may do I/O (a signing service), hence async. They raise
    :class:`ServiceError` (PERMISSION_DENIED) for users they cannot serve.
    """

    async def credentials(self, username: str) -> UserCredentials:
        """Credentials valid for at least a login right now."""
        ...


def check_username(username: str) -> None:
    """Refuse usernames that cannot be a safe certificate principal or login name."""
    if not _USERNAME.fullmatch(username):
        raise ServiceError(
            ErrorKind.PERMISSION_DENIED,
            f"{username!r} is not a valid cluster username",
            "SSH_INVALID_USERNAME",
        )


class _CachedCertificates:
    """Short-lived certificates cached per user and renewed before they expire.

    A certificate is reused until less than :data:`RENEW_FRACTION` of its
    lifetime is left, so a burst of logins costs one signature.
    """

    def __init__(self, lifetime: float) -> None:
        self._lifetime = lifetime
        self._cache: dict[str, UserCredentials] = {}

    async def credentials(self, username: str) -> UserCredentials:
        """A cached certificate for ``username``, or a freshly issued one."""
        check_username(username)
        now = time.time()
        cached = self._cache.get(username)
        if cached is not None and cached.expires_at - now > self._lifetime * RENEW_FRACTION:
            return cached
        issued = await self._issue(username, now)
        self._forget_expired(now)
        self._cache[username] = issued
        return issued

    async def _issue(self, username: str, now: float) -> UserCredentials:
        raise NotImplementedError

    def _forget_expired(self, now: float) -> None:
        """Drop certificates that can no longer log in (bounds the cache)."""
        for name in [n for n, c in self._cache.items() if c.expires_at <= now]:
            del self._cache[name]


class CertificateAuthority(_CachedCertificates):
    """Mints short-lived OpenSSH user certificates in memory from a CA key.

    Minting is synchronous and quick (ed25519), so concurrent callers need no lock.
    """

    def __init__(
        self,
        ca_key: asyncssh.SSHKey | str,
        lifetime: float = 300,
        *,
        allow_port_forwarding: bool = False,
    ) -> None:
        """``ca_key`` is the CA private key (object or OpenSSH/PEM text).

        ``allow_port_forwarding`` must be true when a system is reached through
        a jump host, which forwards the connection on the user's behalf.
        """
        super().__init__(lifetime)
        self._ca = asyncssh.import_private_key(ca_key) if isinstance(ca_key, str) else ca_key
        self._allow_port_forwarding = allow_port_forwarding

    async def _issue(self, username: str, now: float) -> UserCredentials:
        return self.mint(username, now)

    def mint(self, username: str, now: float | None = None) -> UserCredentials:
        """A new key pair and certificate for ``username`` (principal = username)."""
        check_username(username)
        now = time.time() if now is None else now
        key = asyncssh.generate_private_key("ssh-ed25519")
        valid_before = int(now + self._lifetime)
        serial = secrets.randbits(63)
        certificate = self._ca.generate_user_certificate(
            key,
            # Shows up in sshd's log: who, and which certificate.
            key_id=f"hpcgate:{username}:{serial:x}",
            serial=serial,
            principals=[username],
            valid_after=int(now - CLOCK_SKEW_ALLOWANCE),
            valid_before=valid_before,
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_port_forwarding=self._allow_port_forwarding,
            permit_pty=False,
            permit_user_rc=False,
        )
        return UserCredentials(username, key, certificate, float(valid_before))


class SigningService(_CachedCertificates):
    """Gets user certificates from a signing service over HTTPS.

    The server generates the key pair (the private key never leaves memory)
    and sends only the public key: ``POST <url>`` with a bearer token and
    ``{"principal", "public_key", "lifetime"}``; the service answers
    ``{"certificate": "<OpenSSH certificate>"}``. This is the shape of an SSH
    CA front end such as Vault's SSH secrets engine or FirecREST's sshservice.
    """

    def __init__(self, url: str, token: str | None, lifetime: float = 300) -> None:
        super().__init__(lifetime)
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def credentials(self, username: str) -> UserCredentials:
        # One request per user at a time: concurrent logins share its answer.
        lock = self._locks.setdefault(username, asyncio.Lock())
        async with lock:
            return await super().credentials(username)

    async def _issue(self, username: str, now: float) -> UserCredentials:
        import httpx  # only for sites with a signing service (see auth.jwks._get)

        key = asyncssh.generate_private_key("ssh-ed25519")
        body = {
            "principal": username,
            "public_key": key.export_public_key().decode().strip(),
            "lifetime": int(self._lifetime),
        }
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(self._url, json=body, headers=self._headers)
            response.raise_for_status()
            certificate = asyncssh.import_certificate(response.json()["certificate"])
        except (httpx.HTTPError, KeyError, ValueError, asyncssh.KeyImportError) as error:
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                f"the SSH signing service refused or failed for {username}: {error}",
                "SSH_SIGNING_FAILED",
            ) from None
        if not isinstance(certificate, SSHOpenSSHCertificate) or username not in (
            certificate.principals
        ):
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                f"the SSH signing service returned a certificate not valid for {username}",
                "SSH_SIGNING_FAILED",
            )
        # asyncssh keeps the validity private; the service grants what was asked.
        return UserCredentials(username, key, certificate, now + self._lifetime)


class StaticKeys:
    """Fixed private keys (optionally with certificates) for named service accounts.

    Keys are read from their files on first use and kept in memory.
    """

    def __init__(self, keys: Mapping[str, StaticKey]) -> None:
        """``keys`` maps a username to its key (and certificate) files."""
        self._files = dict(keys)
        self._loaded: dict[str, UserCredentials] = {}

    def __contains__(self, username: object) -> bool:
        """Whether ``username`` has a static key."""
        return username in self._files

    async def credentials(self, username: str) -> UserCredentials:
        """The static key of ``username``; PERMISSION_DENIED if it has none."""
        loaded = self._loaded.get(username)
        if loaded is None:
            loaded = self._load(username)
            self._loaded[username] = loaded
        return loaded

    def _load(self, username: str) -> UserCredentials:
        spec = self._files.get(username)
        if spec is None:
            raise _no_credentials(username)
        try:
            key = asyncssh.read_private_key(spec.private_key_file)
            cert = (
                asyncssh.read_certificate(spec.certificate_file)
                if spec.certificate_file is not None
                else None
            )
        except (OSError, asyncssh.KeyImportError) as error:
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                f"cannot load the SSH key of {username}: {error}",
                "SSH_CREDENTIALS_UNAVAILABLE",
            ) from error
        return UserCredentials(username, key, cert, float("inf"))


class ChainedCredentials:
    """Static keys for the accounts that have one, the CA for everybody else."""

    def __init__(self, static: StaticKeys, authority: CredentialProvider | None) -> None:
        """``authority`` may be None when only static keys are configured."""
        self._static = static
        self._authority = authority

    async def credentials(self, username: str) -> UserCredentials:
        """Credentials for ``username`` from the first source that knows it."""
        if username in self._static:
            return await self._static.credentials(username)
        if self._authority is None:
            raise _no_credentials(username)
        return await self._authority.credentials(username)


def _no_credentials(username: str) -> ServiceError:
    return ServiceError(
        ErrorKind.PERMISSION_DENIED,
        f"the server has no SSH credentials for {username}",
        "SSH_NO_CREDENTIALS",
    )


def build_credential_provider(
    config: CredentialsConfig, *, allow_port_forwarding: bool = False
) -> CredentialProvider:
    """The provider that ``config`` describes (static keys first, then the CA).

    Raises ConfigError for a CA key that does not load.
    """
    authority: CredentialProvider | None = None
    if config.ca_key is not None:
        try:
            authority = CertificateAuthority(
                config.ca_key.reveal(),
                config.certificate_lifetime,
                allow_port_forwarding=allow_port_forwarding,
            )
        except (OSError, asyncssh.KeyImportError) as error:
            raise ConfigError(f"credentials.ca_key: cannot load the CA key: {error}") from None
    elif config.signing_url is not None:
        token = config.signing_token.reveal() if config.signing_token is not None else None
        return ChainedCredentials(
            StaticKeys(config.static_keys),
            SigningService(config.signing_url, token, config.certificate_lifetime),
        )
    return ChainedCredentials(StaticKeys(config.static_keys), authority)
