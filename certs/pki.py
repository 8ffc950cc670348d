"""Certificate authorities and leaf certificates.

ECDSA P-256 everywhere: key generation is near-instant, which keeps tests and
`orchestrator init` fast, and every TLS stack we talk to (grpcio's BoringSSL,
Python's OpenSSL) accepts it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdate certificates slightly so a node whose clock lags the CA's by a
# little does not reject a freshly issued certificate as "not yet valid".
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key (b"" when the key lives elsewhere)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        if not self.key_pem:
            raise ValueError("this key pair has no private key (it was issued for a CSR)")
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            # Other key types would work for signing, but we only ever make EC keys;
            # anything else means the file was swapped by hand.
            raise ValueError(f"unsupported private key type {type(key).__name__}")
        return key


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    # Organizations first, CN last: the order openssl and Kubernetes print.
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def create_ca(common_name: str, *, valid_days: int = 3650) -> KeyPair:
    """Create a self-signed certificate authority."""
    key = new_private_key()
    now = datetime.now(UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=valid_days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key))


def _subject_alt_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for raw in ip_addresses:
        ip = ipaddress.ip_address(raw)  # raises ValueError naming the bad address
        if ip not in seen:
            seen.add(ip)
            sans.append(x509.IPAddress(ip))
    return sans


def issue_certificate(
    ca: KeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    valid_seconds: int = 365 * 86400,
    not_before: datetime | None = None,
    public_key: CertificatePublicKeyTypes | None = None,
) -> KeyPair:
    """Issue a leaf certificate signed by `ca`.

    Without `public_key` a fresh key is generated and returned; with it (the
    CSR path) the key stays with its owner and `key_pem` is b"".
    """
    if not (server or client):
        raise ValueError("a leaf certificate needs server and/or client usage")
    ca_cert = ca.cert
    ca_key = ca.private_key
    key_pem = b""
    if public_key is None:
        key = new_private_key()
        public_key = key.public_key()
        key_pem = private_key_pem(key)
    start = not_before if not_before is not None else datetime.now(UTC) - CLOCK_SKEW
    if start.tzinfo is None:
        raise ValueError("not_before must be timezone-aware")
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(seconds=valid_seconds))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # Only meaningful for RSA key transport; harmless and expected by some clients.
                key_encipherment=not isinstance(public_key, ec.EllipticCurvePublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    sans = _subject_alt_names(dns_names, ip_addresses)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(cert: x509.Certificate) -> str:
    """Hash of the DER SubjectPublicKeyInfo, as kubeadm's --discovery-token-ca-cert-hash."""
    return "sha256:" + hashlib.sha256(_spki(cert.public_key())).hexdigest()


def identity_from_cert(cert: x509.Certificate) -> tuple[str, list[str]]:
    """(user, groups) the way Kubernetes reads a client certificate: CN and O."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cn, orgs


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp file created with the final mode, then rename: a key is
    # never readable by others, not even for a moment, and a crash never
    # leaves a half-written file behind.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_pair(pair: KeyPair, cert_path: Path | str, key_path: Path | str) -> None:
    """Write the certificate (0644) and, if present, the key (0600)."""
    write_file(Path(cert_path), pair.cert_pem, 0o644)
    if pair.key_pem:
        write_file(Path(key_path), pair.key_pem, 0o600)


def load_pair(cert_path: Path | str, key_path: Path | str) -> KeyPair:
    pair = KeyPair(Path(cert_path).read_bytes(), Path(key_path).read_bytes())
    # Parse now so a corrupt file fails here, naming the file, not at first use.
    try:
        pair.cert  # noqa: B018
        pair.private_key  # noqa: B018
    except ValueError as e:
        raise ValueError(f"cannot load {cert_path} / {key_path}: {e}") from e
    if _spki(pair.cert.public_key()) != _spki(pair.private_key.public_key()):
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    return pair
