"""Small X.509 helpers: a CA, certificates signed by it, and TLS server contexts.

Used by the webhook and extender (which create, load and renew their own serving
certificate) and by the local cluster script (API server, client certificates,
service-account keys).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


YEAR = datetime.timedelta(days=365)
# A certificate is renewed once this share of its lifetime has passed: a third of it is
# left to notice a failed renewal and retry.
RENEW_AT = 2 / 3


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    lifetime: datetime.timedelta = YEAR,
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
    # Valid a little before now, for clocks behind ours; not so much that the renewal
    # point (RENEW_AT of the span) is already past for a short lifetime.
    backdate = min(datetime.timedelta(minutes=5), lifetime / 20)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - backdate)
        .not_valid_after(_now() + lifetime)
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


def renewal_due(cert_pem: bytes, now: datetime.datetime) -> bool:
    """Whether RENEW_AT of the certificate's lifetime has passed at `now`."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AT


HandshakeFailed = Callable[[ssl.SSLError], None]


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca: Path | None = None,
    on_handshake_failure: HandshakeFailed | None = None,
) -> ssl.SSLContext:
    """A TLS 1.2+ server context. With `client_ca`, it asks callers for a client
    certificate and refuses the handshake of one that CA did not issue; a caller may
    still send none (CERT_OPTIONAL), for the routes that take anyone to decide.

    The context is kept: `load_cert_chain` on it again serves a renewed certificate to
    every later handshake."""
    # Not create_default_context: that would trust the system's public CAs for clients.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(client_ca))
    if on_handshake_failure is not None:
        ctx.sslobject_class = _reporting_ssl_object(on_handshake_failure)
    return ctx


def _reporting_ssl_object(report: HandshakeFailed) -> type[ssl.SSLObject]:
    """An SSLObject that reports a failed handshake (asyncio drops it silently)."""

    class ReportingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                report(exc)
                raise

    return ReportingSSLObject


def peer_common_name(ssl_object: ssl.SSLObject | None) -> str | None:
    """The common name of the client certificate the handshake verified, if any."""
    if ssl_object is None:
        return None
    subject: Any = (ssl_object.getpeercert() or {}).get("subject", ())
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return str(names[-1]) if names else None


def load_or_create_serving(
    directory: Path,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    lifetime: datetime.timedelta = YEAR,
) -> KeyPair:
    """The serving certificate and CA in `directory`, created on first use.

    Returns the CA (whose certificate goes into webhook and extender caBundles; it stays,
    so that they need no update when the serving certificate is renewed). A certificate
    past RENEW_AT of its lifetime, or lacking a requested name, is reissued.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    tls_cert, tls_key = directory / "tls.crt", directory / "tls.key"
    if ca_cert.exists() and ca_key.exists():
        ca = KeyPair(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = make_ca(f"{common_name}-ca")
        ca.write(ca_cert, ca_key)
    if not tls_cert.exists() or not _still_good(tls_cert.read_bytes(), dns_names, ip_addresses):
        _serving(ca, common_name, dns_names, ip_addresses, lifetime).write(tls_cert, tls_key)
    return ca


def _serving(
    ca: KeyPair,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    lifetime: datetime.timedelta,
) -> KeyPair:
    """A serving certificate for these names, issued by `ca`."""
    return issue(
        ca,
        common_name,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        server=True,
        lifetime=lifetime,
    )


def _still_good(cert_pem: bytes, dns_names: Sequence[str], ips: Sequence[str]) -> bool:
    if renewal_due(cert_pem, _now()):
        return False
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= have_dns and set(ips) <= have_ips


_SECRET_FILES = ("ca.crt", "tls.crt", "tls.key", "ca.key")
SecretData = dict[str, bytes]


async def sync_secret(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    directory: Path,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    lifetime: datetime.timedelta = YEAR,
) -> KeyPair:
    """Share one serving certificate between replicas through a Secret, and renew it
    there: use the Secret's if it exists, else create it from a new (or this
    directory's) certificate; reissue it from the Secret's CA once it is due. Writes the
    files into `directory` and returns the CA.

    A Secret without ca.key (one cert-manager fills) is used as it is: its issuer renews."""

    def fresh() -> SecretData:
        load_or_create_serving(directory, common_name, dns_names, ip_addresses, lifetime)
        return {key: (directory / key).read_bytes() for key in _SECRET_FILES}

    def renewed(data: SecretData) -> SecretData | None:
        if "ca.key" not in data or _still_good(data["tls.crt"], dns_names, ip_addresses):
            return None
        ca = KeyPair(data["ca.crt"], data["ca.key"])
        pair = _serving(ca, common_name, dns_names, ip_addresses, lifetime)
        return {**data, "tls.crt": pair.cert_pem, "tls.key": pair.key_pem}

    data = await _keep_secret(
        client, namespace=namespace, name=name, kind="Opaque", fresh=fresh, renewed=renewed
    )
    _write_changed(directory, data)
    return KeyPair(data["ca.crt"], data.get("ca.key", b""))


def _write_changed(directory: Path, data: SecretData) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key in _SECRET_FILES:
        path = directory / key
        if key in data and (not path.exists() or path.read_bytes() != data[key]):
            path.write_bytes(data[key])
            path.chmod(0o600)


async def sync_client_secret(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    ca: KeyPair,
    common_name: str,
    lifetime: datetime.timedelta = YEAR,
) -> None:
    """Keep a client certificate issued by `ca` (tls.crt, tls.key and ca.crt) in a
    kubernetes.io/tls Secret, for a caller that mounts it (kube-scheduler on EKS), and
    reissue it once it is due."""

    def fresh() -> SecretData:
        pair = issue(ca, common_name, client=True, lifetime=lifetime)
        return {"ca.crt": ca.cert_pem, "tls.crt": pair.cert_pem, "tls.key": pair.key_pem}

    def renewed(data: SecretData) -> SecretData | None:
        due = data.get("ca.crt") != ca.cert_pem or renewal_due(data["tls.crt"], _now())
        return fresh() if due else None

    await _keep_secret(
        client,
        namespace=namespace,
        name=name,
        kind="kubernetes.io/tls",
        fresh=fresh,
        renewed=renewed,
    )


async def _keep_secret(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    kind: str,
    fresh: Callable[[], SecretData],
    renewed: Callable[[SecretData], SecretData | None],
) -> SecretData:
    """The Secret's data: created from `fresh()` when missing, replaced by `renewed(data)`
    unless that is None. Replicas race; the writes carry resourceVersion preconditions,
    so one wins and the others take the winner's."""
    existing = await client.get_or_none(SECRETS, name, namespace)
    if existing is None:
        data = fresh()
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": kind,
            "metadata": {"name": name, "namespace": namespace},
            "data": _encode(data),
        }
        try:
            await client.create(SECRETS, body, namespace)
            return data
        except ApiError as exc:
            if not exc.already_exists:
                raise
        existing = await client.get(SECRETS, name, namespace)
    data = _decode(existing)
    replacement = renewed(data)
    if replacement is None:
        return data
    try:
        await client.replace(SECRETS, name, {**existing, "data": _encode(replacement)}, namespace)
        return replacement
    except ApiError as exc:
        if not exc.conflict:
            raise
    return _decode(await client.get(SECRETS, name, namespace))


def _encode(data: SecretData) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


def _decode(secret: dict[str, Any]) -> SecretData:
    raw: dict[str, str] = secret.get("data") or {}
    return {str(key): base64.b64decode(value) for key, value in raw.items()}
