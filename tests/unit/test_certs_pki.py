"""CA creation, leaf issuing and the chains real verifiers accept."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs import pki

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("test-ca")


def _server_verify(ca: pki.KeyPair, leaf: pki.KeyPair, name: str, when: datetime | None = None):
    builder = PolicyBuilder().store(Store([ca.cert]))
    if when is not None:
        builder = builder.time(when)
    verifier = builder.build_server_verifier(x509.DNSName(name))
    return verifier.verify(leaf.cert, [])


def test_create_ca_is_self_signed_ca(ca: pki.KeyPair) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca.private_key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=3600)


def test_issue_server_certificate_verifies_against_ca(ca: pki.KeyPair) -> None:
    leaf = pki.issue_certificate(
        ca,
        common_name="apiserver",
        dns_names=["localhost", "orchestrator.default.svc"],
        ip_addresses=["127.0.0.1", "::1"],
        server=True,
    )
    leaf.cert.verify_directly_issued_by(ca.cert)
    chain = _server_verify(ca, leaf, "orchestrator.default.svc")
    assert chain[-1] == ca.cert
    # The key in the pair belongs to the certificate.
    assert leaf.private_key.public_key() == leaf.cert.public_key()

    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_sans_present(ca: pki.KeyPair) -> None:
    leaf = pki.issue_certificate(
        ca,
        common_name="x",
        dns_names=["a.example", "b.example", "a.example"],
        ip_addresses=["10.96.0.1", "::1"],
        server=True,
    )
    sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.96.0.1"),
        ipaddress.ip_address("::1"),
    ]
    with pytest.raises(VerificationError):
        _server_verify(ca, leaf, "c.example")


def test_client_certificate_identity_and_usage(ca: pki.KeyPair) -> None:
    leaf = pki.issue_certificate(
        ca, common_name="system:node:n1", organizations=["system:nodes"], client=True
    )
    assert pki.identity_from_cert(leaf.cert) == ("system:node:n1", ["system:nodes"])
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # cryptography's client verifier insists on a SAN, which Kubernetes client
    # certificates do not carry; OpenSSL accepts them (see the mTLS test in
    # test_certs_pinning.py), so check the signature directly here.
    leaf.cert.verify_directly_issued_by(ca.cert)
    # A client-only certificate must not pass as a server.
    with pytest.raises(VerificationError):
        _server_verify(ca, leaf, "localhost")


def test_both_usages(ca: pki.KeyPair) -> None:
    leaf = pki.issue_certificate(ca, common_name="etcd", server=True, client=True)
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_no_usage_rejected(ca: pki.KeyPair) -> None:
    with pytest.raises(ValueError, match="usage"):
        pki.issue_certificate(ca, common_name="x")


def test_bad_ip_rejected(ca: pki.KeyPair) -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        pki.issue_certificate(ca, common_name="x", ip_addresses=["not-an-ip"], server=True)


def test_expired_certificate(ca: pki.KeyPair) -> None:
    start = datetime.now(UTC) - timedelta(days=2)
    leaf = pki.issue_certificate(
        ca, common_name="old", dns_names=["old"], server=True, valid_seconds=3600, not_before=start
    )
    assert leaf.cert.not_valid_after_utc < datetime.now(UTC)
    with pytest.raises(VerificationError):
        _server_verify(ca, leaf, "old")
    # It was well formed and signed: only the clock makes it fail.
    assert leaf.cert.not_valid_before_utc == start.replace(microsecond=0)
    leaf.cert.verify_directly_issued_by(ca.cert)


def test_issue_for_foreign_public_key_has_no_key(ca: pki.KeyPair) -> None:
    key = pki.new_private_key()
    leaf = pki.issue_certificate(ca, common_name="n", client=True, public_key=key.public_key())
    assert leaf.key_pem == b""
    assert leaf.cert.public_key() == key.public_key()
    with pytest.raises(ValueError, match="no private key"):
        leaf.private_key  # noqa: B018


def test_other_ca_does_not_verify(ca: pki.KeyPair) -> None:
    other = pki.create_ca("test-ca")  # same name, different key
    leaf = pki.issue_certificate(other, common_name="x", dns_names=["x"], server=True)
    with pytest.raises(VerificationError):
        _server_verify(ca, leaf, "x")


def test_spki_sha256_format(ca: pki.KeyPair) -> None:
    h = pki.spki_sha256(ca.cert)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", h)
    assert h == pki.spki_sha256(ca.cert)
    # Depends on the key only: a re-signed certificate for the same key hashes the same.
    leaf = pki.issue_certificate(ca, common_name="a", client=True)
    again = pki.issue_certificate(
        ca, common_name="b", client=True, public_key=leaf.cert.public_key()
    )
    assert pki.spki_sha256(leaf.cert) == pki.spki_sha256(again.cert) != h


def test_write_and_load_pair(tmp_path: Path, ca: pki.KeyPair) -> None:
    old = os.umask(0)  # the key must be 0600 even under a permissive umask
    try:
        pki.write_pair(ca, tmp_path / "d" / "ca.crt", tmp_path / "d" / "ca.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d" / "ca.crt").stat().st_mode) == 0o644
    loaded = pki.load_pair(tmp_path / "d" / "ca.crt", tmp_path / "d" / "ca.key")
    assert loaded == ca
    assert [p.name for p in (tmp_path / "d").iterdir() if ".tmp" in p.name] == []


def test_load_pair_rejects_mismatched_key(tmp_path: Path, ca: pki.KeyPair) -> None:
    other = pki.create_ca("other")
    (tmp_path / "c.crt").write_bytes(ca.cert_pem)
    (tmp_path / "c.key").write_bytes(other.key_pem)
    with pytest.raises(ValueError, match="not the private key"):
        pki.load_pair(tmp_path / "c.crt", tmp_path / "c.key")


def test_load_pair_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "c.crt").write_bytes(b"nope")
    (tmp_path / "c.key").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"c\.crt"):
        pki.load_pair(tmp_path / "c.crt", tmp_path / "c.key")
