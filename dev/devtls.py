"""A development certificate authority: TLS for `make run` and the tests.

One CA key and certificate, and leaf certificates it signs: the server's
(for ``localhost`` and ``127.0.0.1``) and a client certificate for the edge
(mutual TLS). Written once into a folder and reused, like the dev signing
key of :mod:`devkeys`. A development convenience only: a site brings its own
certificates (README, "TLS").
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Pair:
    """A PEM certificate and its PEM private key, as files."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class DevCA:
    """The files of the development CA: its certificate, and the leaves it signed."""

    ca: Path
    server: Pair
    client: Pair

    @classmethod
    def load_or_create(cls, directory: Path) -> DevCA:
        """The CA in ``directory``, made there first if it is not (or has expired)."""
        made = cls(
            directory / "ca.pem",
            Pair(directory / "server.pem", directory / "server-key.pem"),
            Pair(directory / "client.pem", directory / "client-key.pem"),
        )
        if not made._valid():
            directory.mkdir(parents=True, exist_ok=True)
            made._create()
        return made

    def _valid(self) -> bool:
        files = (self.ca, self.server.certificate, self.server.key, self.client.certificate)
        if not all(f.exists() for f in (*files, self.client.key)):
            return False
        ca = x509.load_pem_x509_certificate(self.ca.read_bytes())
        return ca.not_valid_after_utc - datetime.timedelta(days=1) > _now()

    def _create(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpcgate development CA")])
        ca = (
            _builder(ca_name, ca_name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(self.ca, ca.public_bytes(serialization.Encoding.PEM))
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
        self._leaf(self.server, "hpcgate-server", ca, ca_key, server, names)
        self._leaf(self.client, "hpcgate-edge", ca, ca_key, client, [])

    @staticmethod
    def _leaf(
        pair: Pair,
        name: str,
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
        alternatives: list[x509.GeneralName],
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = _builder(subject, ca.subject, key.public_key())
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if alternatives:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), critical=False
            )
        certificate = builder.sign(ca_key, hashes.SHA256())
        _write(pair.certificate, certificate.public_bytes(serialization.Encoding.PEM))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(pair.key, pem, mode=0o600)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)
