"""Per-user SSH credentials (no cluster needed): minting, caching, renewal, static keys."""

from __future__ import annotations

import time
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import SSHPacket
from asyncssh.public_key import SSHOpenSSHCertificate

from hpcgate.server.config import ConfigError, CredentialsConfig, parse_config
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.ssh import PoolManager, build_credential_provider
from hpcgate.server.ssh.credentials import CLOCK_SKEW_ALLOWANCE, CertificateAuthority


def validity(cert: asyncssh.SSHCertificate) -> tuple[int, int]:
    """valid_after and valid_before, read from the ed25519 certificate's wire form."""
    packet = SSHPacket(cert.public_data)
    for _ in range(3):  # type name, nonce, public key
        packet.get_string()
    packet.get_uint64()  # serial
    packet.get_uint32()  # certificate type
    packet.get_string()  # key id
    packet.get_string()  # principals
    return packet.get_uint64(), packet.get_uint64()


@pytest.fixture(scope="module")
def ca_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


async def test_certificate_names_the_user_and_is_short_lived(ca_key: asyncssh.SSHKey) -> None:
    before = time.time()
    creds = await CertificateAuthority(ca_key, lifetime=300).credentials("alice")
    cert = creds.certificate
    assert isinstance(cert, SSHOpenSSHCertificate)
    assert cert.principals == ["alice"]
    assert cert.signing_key is not None
    assert cert.signing_key.public_data == ca_key.public_data
    assert cert.key.public_data == creds.key.public_data
    valid_after, valid_before = validity(cert)
    assert before - CLOCK_SKEW_ALLOWANCE - 1 <= valid_after <= before
    assert valid_before - before == pytest.approx(300, abs=2)
    assert creds.expires_at == valid_before
    # Least privilege: no pty, no forwarding, no ~/.ssh/rc.
    assert cert.options == {}


async def test_certificates_are_cached_then_renewed(
    ca_key: asyncssh.SSHKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority(ca_key, lifetime=300)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    first = await authority.credentials("alice")
    assert await authority.credentials("alice") is first
    assert (await authority.credentials("bob")).key is not first.key

    monkeypatch.setattr(time, "time", lambda: now + 150)  # half the lifetime left
    assert await authority.credentials("alice") is first
    monkeypatch.setattr(time, "time", lambda: now + 250)  # less than a third left
    renewed = await authority.credentials("alice")
    assert renewed is not first
    assert renewed.key.public_data != first.key.public_data


async def test_jump_hosts_get_port_forwarding(ca_key: asyncssh.SSHKey) -> None:
    creds = await CertificateAuthority(ca_key, allow_port_forwarding=True).credentials("alice")
    assert isinstance(creds.certificate, SSHOpenSSHCertificate)
    assert creds.certificate.options == {"permit-port-forwarding": True}


async def test_odd_usernames_never_become_principals(ca_key: asyncssh.SSHKey) -> None:
    authority = CertificateAuthority(ca_key)
    for name in ("", "-oProxyCommand=x", "alice,bob", "a b", "../root", "x" * 65):
        with pytest.raises(ServiceError) as caught:
            await authority.credentials(name)
        assert caught.value.reason == "SSH_INVALID_USERNAME"


async def test_static_keys_take_precedence(ca_key: asyncssh.SSHKey, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(tmp_path / "svc")
    config = CredentialsConfig(
        ca_key={"value": ca_key.export_private_key().decode()},
        static_keys={"svc": {"private_key_file": tmp_path / "svc"}},
    )
    provider = build_credential_provider(config)
    svc = await provider.credentials("svc")
    assert (svc.key.public_data, svc.certificate) == (key.public_data, None)
    alice = await provider.credentials("alice")
    assert alice.certificate is not None

    only_static = build_credential_provider(CredentialsConfig(static_keys=config.static_keys))
    with pytest.raises(ServiceError) as caught:
        await only_static.credentials("alice")
    assert (caught.value.code, caught.value.reason) == (
        ErrorKind.PERMISSION_DENIED,
        "SSH_NO_CREDENTIALS",
    )


def test_bad_ca_key_is_a_config_error() -> None:
    config = CredentialsConfig(ca_key={"value": "not a key"})
    with pytest.raises(ConfigError, match=r"credentials\.ca_key"):
        build_credential_provider(config)


def test_manager_finds_systems_case_insensitively(ca_key: asyncssh.SSHKey) -> None:
    settings = parse_config(
        {
            "credentials": {"ca_key": {"value": ca_key.export_private_key().decode()}},
            "systems": [
                {"name": "Daint", "ssh": {"host": "daint", "known_hosts_entry": "daint x"}},
                {"name": "eiger", "ssh": {"host": "eiger", "known_hosts_entry": "eiger x"}},
            ],
        }
    )
    manager = PoolManager(settings)
    assert manager.pool("daint").name == "Daint"
    assert manager.pool("EIGER").name == "eiger"
    with pytest.raises(ServiceError) as caught:
        manager.pool("alps")
    assert (caught.value.code, caught.value.reason) == (
        ErrorKind.NOT_FOUND,
        "SYSTEM_NOT_FOUND",
    )
