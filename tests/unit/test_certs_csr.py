"""CSR round trip, signing, and the node client CSR check."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import csr as csrmod
from certs import pki

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("test-ca")


def _csr(
    cn: str | None,
    orgs: list[str],
    sans: list[x509.GeneralName] | None = None,
    extra_cn: str | None = None,
) -> x509.CertificateSigningRequest:
    key = pki.new_private_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if extra_cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, extra_cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def _pem(c: x509.CertificateSigningRequest) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def test_make_and_parse_round_trip() -> None:
    csr_pem, key_pem = csrmod.make_csr("system:node:n1", ["system:nodes"])
    parsed = csrmod.parse_csr(csr_pem)
    assert parsed.is_signature_valid
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert parsed.public_key() == key.public_key()
    assert csrmod.node_client_csr_problem(parsed, "n1") is None


def test_parse_garbage() -> None:
    with pytest.raises(csrmod.CSRError, match="not a PEM certificate signing request"):
        csrmod.parse_csr(b"hello")
    with pytest.raises(ValueError):  # CSRError is a ValueError
        csrmod.parse_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )


def test_parse_bad_signature() -> None:
    csr_pem, _ = csrmod.make_csr("system:node:n1", ["system:nodes"])
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    # Flip a byte of the CN ("system:node:n1" -> "system:node:n2") so the signature no longer fits.
    i = der.index(b"system:node:n1") + len("system:node:n")
    der[i] = ord("2")
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(csrmod.CSRError, match="signature is invalid"):
        csrmod.parse_csr(tampered)
    assert "signature" in (csrmod.node_client_csr_problem(tampered, None) or "")


def test_sign_csr_copies_subject(ca: pki.KeyPair) -> None:
    csr_pem, key_pem = csrmod.make_csr("system:node:n1", ["system:nodes"])
    cert_pem = csrmod.sign_csr(ca, csr_pem, valid_seconds=3600, usages=("client auth",))
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert pki.identity_from_cert(cert) == ("system:node:n1", ["system:nodes"])
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life.total_seconds() == 3600
    # The node's own key pairs with what came back.
    pair = pki.KeyPair(cert_pem, key_pem)
    assert pair.private_key.public_key() == cert.public_key()


def test_sign_csr_server_usage_copies_sans(ca: pki.KeyPair) -> None:
    c = _csr(
        "system:node:n1",
        ["system:nodes"],
        [x509.DNSName("n1"), x509.IPAddress(ipaddress.ip_address("192.0.2.11"))],
    )
    cert_pem = csrmod.sign_csr(
        ca, _pem(c), valid_seconds=60, usages=("digital signature", "server auth")
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["n1"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.11"]


def test_sign_csr_rejects_bad_input(ca: pki.KeyPair) -> None:
    csr_pem, _ = csrmod.make_csr("u", [])
    with pytest.raises(csrmod.CSRError, match="unsupported usages"):
        csrmod.sign_csr(ca, csr_pem, valid_seconds=60, usages=("code signing",))
    with pytest.raises(csrmod.CSRError, match="client auth"):
        csrmod.sign_csr(ca, csr_pem, valid_seconds=60, usages=("digital signature",))
    with pytest.raises(csrmod.CSRError):
        csrmod.sign_csr(ca, b"garbage", valid_seconds=60)
    with pytest.raises(csrmod.CSRError, match="exactly one"):
        csrmod.sign_csr(ca, _pem(_csr(None, ["g"])), valid_seconds=60)
    uri = _csr("u", [], [x509.UniformResourceIdentifier("spiffe://x/y")])
    with pytest.raises(csrmod.CSRError, match="only DNS and IP"):
        csrmod.sign_csr(ca, _pem(uri), valid_seconds=60)


def test_node_client_csr_accepts_good() -> None:
    good = _csr("system:node:worker-1.lan", ["system:nodes"])
    assert csrmod.node_client_csr_problem(good, None) is None
    assert csrmod.node_client_csr_problem(good, "worker-1.lan") is None
    assert csrmod.node_client_csr_problem(_pem(good), "worker-1.lan") is None


@pytest.mark.parametrize(
    ("csr", "expected", "reason"),
    [
        pytest.param(
            lambda: _csr("system:node:n1", ["system:masters"]), None, "organization", id="wrong-O"
        ),
        pytest.param(
            lambda: _csr("system:node:n1", ["system:nodes", "system:masters"]),
            None,
            "organization",
            id="extra-O",
        ),
        pytest.param(lambda: _csr("system:node:n1", []), None, "organization", id="no-O"),
        pytest.param(
            lambda: _csr("system:nodes:n1", ["system:nodes"]), None, "does not start", id="prefix"
        ),
        pytest.param(lambda: _csr("admin", ["system:nodes"]), None, "does not start", id="admin"),
        pytest.param(
            lambda: _csr("system:node:Bad_Name", ["system:nodes"]), None, "DNS-1123", id="bad-name"
        ),
        pytest.param(lambda: _csr("system:node:", ["system:nodes"]), None, "DNS-1123", id="empty"),
        pytest.param(
            lambda: _csr("system:node:n1-", ["system:nodes"]),
            None,
            "DNS-1123",
            id="trailing-hyphen",
        ),
        pytest.param(
            lambda: _csr("system:node:n1", ["system:nodes"], [x509.DNSName("n1")]),
            None,
            "subject alternative names",
            id="dns-san",
        ),
        pytest.param(
            lambda: _csr(
                "system:node:n1",
                ["system:nodes"],
                [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
            ),
            None,
            "subject alternative names",
            id="ip-san",
        ),
        pytest.param(
            lambda: _csr("system:node:n1", ["system:nodes"]), "n2", "requester", id="other-node"
        ),
        pytest.param(
            lambda: _csr("system:node:n1", ["system:nodes"], extra_cn="system:node:n2"),
            None,
            "exactly one common name",
            id="two-CNs",
        ),
    ],
)
def test_node_client_csr_rejects(csr, expected: str | None, reason: str) -> None:  # type: ignore[no-untyped-def]
    problem = csrmod.node_client_csr_problem(csr(), expected)
    assert problem is not None
    assert reason in problem


def test_dns1123_subdomain() -> None:
    assert csrmod.is_dns1123_subdomain("a")
    assert csrmod.is_dns1123_subdomain("node-1.example")
    assert csrmod.is_dns1123_subdomain("a" * 253)
    # Longer than any CN allows, so only checkable here.
    assert not csrmod.is_dns1123_subdomain("a" * 254)
    for bad in ("", "-a", "a-", "A", "a..b", "a_b", ".a", "a."):
        assert not csrmod.is_dns1123_subdomain(bad), bad
