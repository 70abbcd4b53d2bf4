"""Small X.509 helpers: a CA, certificates signed by it, and TLS server contexts.

Used by the webhook (which creates or loads its own serving certificate) and by the
local cluster script (API server, client certificates, service-account keys).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ebb.kube.client import ApiError, KubeClient
from ebb.kube.resources import SECRETS


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str, days: int = 3650) -> KeyPair:
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 365,
) -> KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("CA key must be an EC or RSA key")
    key = _key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def signing_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for signing service-account tokens."""
    key = _key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _pem(key), public


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def load_or_create_serving(
    directory: Path, common_name: str, dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> KeyPair:
    """The serving certificate and CA in `directory`, created on first use.

    Returns the CA (whose certificate goes into webhook and extender caBundles).
    A certificate that expires within 30 days, or lacks a requested name, is reissued.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    tls_cert, tls_key = directory / "tls.crt", directory / "tls.key"
    if ca_cert.exists() and ca_key.exists():
        ca = KeyPair(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = make_ca(f"{common_name}-ca")
        ca.write(ca_cert, ca_key)
    if not _still_good(tls_cert, dns_names, ip_addresses):
        issue(ca, common_name, dns_names=dns_names, ip_addresses=ip_addresses, server=True).write(
            tls_cert, tls_key
        )
    return ca


def _still_good(cert_path: Path, dns_names: Sequence[str], ips: Sequence[str]) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - _now() < datetime.timedelta(days=30):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= have_dns and set(ips) <= have_ips


_SECRET_FILES = {"ca.crt": "ca.crt", "tls.crt": "tls.crt", "tls.key": "tls.key", "ca.key": "ca.key"}


async def sync_secret(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    directory: Path,
    common_name: str,
    dns_names: Sequence[str],
) -> None:
    """Share one serving certificate between replicas through a Secret: use the Secret's
    if it exists, else create it from a new (or this directory's) certificate. A
    replica that loses the race to create it takes the winner's."""

    def write(data: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for key, file_name in _SECRET_FILES.items():
            if key in data:
                path = directory / file_name
                path.write_bytes(base64.b64decode(data[key]))
                path.chmod(0o600)

    existing = await client.get_or_none(SECRETS, name, namespace)
    if existing is not None:
        write(existing.get("data") or {})
        return
    load_or_create_serving(directory, common_name, dns_names, ())
    data = {
        key: base64.b64encode((directory / file_name).read_bytes()).decode()
        for key, file_name in _SECRET_FILES.items()
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }
    try:
        await client.create(SECRETS, body, namespace)
    except ApiError as exc:
        if not exc.already_exists:
            raise
        winner = await client.get(SECRETS, name, namespace)
        write(winner.get("data") or {})
