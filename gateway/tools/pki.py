"""Keys and certificates: a development CA and the certificates it issues.

The development CA is for tests and the simulator: a broker, the cloud
stand-in and each gateway get certificates from it, so the whole system
runs over mutual TLS exactly as in production.  Private keys are written
through :func:`gateway.store.files.write_private`, mode 0600 from the
moment they exist (never chmod after the fact).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.store.files import write_private


@dataclass(frozen=True)
class Issued:
    """A private key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``name.key`` (0600) and ``name.pem``; return their paths."""
        key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
        write_private(
            key_path,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path


def _name(cn: str, unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(attributes)


def make_ca(cn: str = "doorgw development CA", days: int = 3650) -> Issued:
    """A self-signed CA for development and tests (never for production)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
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
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued,
    cn: str,
    *,
    server: bool = False,
    hosts: tuple[str, ...] = (),
    days: int = 825,
    unit: str | None = None,
) -> Issued:
    """A new key, and its certificate for ``cn`` from ``ca``: TLS server (``hosts``) or
    client; ``unit`` adds an OU (a gateway's site, as ``doorgw provision`` asks for)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(
        key,
        certify(ca, _name(cn, unit), key.public_key(), server=server, hosts=hosts, days=days),
    )


def certify(
    ca: Issued,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    *,
    server: bool = False,
    hosts: tuple[str, ...] = (),
    days: int = 825,
) -> x509.Certificate:
    """A certificate binding ``subject`` to ``public_key``, signed by ``ca`` (server or client)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())
