"""The on-disk cluster PKI written by `orchestrator init`."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from certs import bundle, pinning, pki, satoken

pytestmark = pytest.mark.unit

ADVERTISE = ["192.0.2.10"]


@pytest.fixture
def created(tmp_path: Path) -> bundle.ClusterPKI:
    return bundle.create_cluster_pki(
        tmp_path, advertise_addresses=ADVERTISE, extra_sans=["api.example", "198.51.100.7"],
        hostname="CP-1",
    )  # fmt: skip


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(i) for i in ext.get_values_for_type(x509.IPAddress)
    }


def _all_files(p: bundle.ClusterPKI) -> dict[str, bytes]:
    return {
        str(f.relative_to(p.pki_dir)): f.read_bytes() for f in p.pki_dir.rglob("*") if f.is_file()
    }


def test_layout(created: bundle.ClusterPKI, tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    expected = {
        "ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "etcd/server.crt", "etcd/server.key",
        "etcd/client.crt", "etcd/client.key", "apiserver.crt", "apiserver.key",
        "apiserver-chain.crt", "admin.crt", "admin.key", "sa.key", "sa.pub",
    }  # fmt: skip
    present = {str(f.relative_to(pki_dir)) for f in pki_dir.rglob("*") if f.is_file()}
    assert expected <= present
    assert not [f for f in present if ".tmp" in f]


def test_key_files_are_private(created: bundle.ClusterPKI) -> None:
    keys = list(created.pki_dir.rglob("*.key"))
    assert len(keys) >= 8
    for f in keys:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(created.ca_crt.stat().st_mode) == 0o644


def test_cas(created: bundle.ClusterPKI) -> None:
    ca, etcd_ca = created.cluster_ca(), created.etcd_ca()
    assert pki.spki_sha256(ca.cert) != pki.spki_sha256(etcd_ca.cert)
    for c in (ca.cert, etcd_ca.cert):
        assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert created.ca_hash() == pki.spki_sha256(ca.cert)


def test_apiserver_cert(created: bundle.ClusterPKI) -> None:
    cert = created.apiserver().cert
    dns, ips = _sans(cert)
    assert {
        "localhost", "orchestrator", "orchestrator.default.svc",
        "orchestrator.default.svc.cluster.local", "cp-1", "api.example",
    } <= dns  # fmt: skip
    assert {"127.0.0.1", "::1", "10.96.0.1", "192.0.2.10", "198.51.100.7"} <= ips
    verifier = (
        PolicyBuilder()
        .store(Store([created.cluster_ca().cert]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("192.0.2.10")))
    )
    verifier.verify(cert, [])


def test_apiserver_chain_supports_pinning(created: bundle.ClusterPKI) -> None:
    chain = x509.load_pem_x509_certificates(created.apiserver_chain_pem())
    assert chain == [created.apiserver().cert, created.cluster_ca().cert]
    assert pinning.find_pinned_ca(chain, created.ca_hash()) == created.cluster_ca().cert


def test_client_identities(created: bundle.ClusterPKI) -> None:
    assert pki.identity_from_cert(created.admin().cert) == ("admin", ["system:masters"])
    admin_eku = created.admin().cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(admin_eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    created.admin().cert.verify_directly_issued_by(created.cluster_ca().cert)
    etcd_client = created.etcd_client().cert
    etcd_client.verify_directly_issued_by(created.etcd_ca().cert)
    created.etcd_server().cert.verify_directly_issued_by(created.etcd_ca().cert)
    assert "127.0.0.1" in _sans(created.etcd_server().cert)[1]
    assert pki.identity_from_cert(created.apiserver_agent_client().cert)[1] == ["system:masters"]
    assert pki.identity_from_cert(created.scheduler().cert)[0] == "system:kube-scheduler"
    cm = created.controller_manager().cert
    assert pki.identity_from_cert(cm)[0] == "system:kube-controller-manager"


def test_sa_keys(created: bundle.ClusterPKI) -> None:
    token = satoken.issue_sa_token(created.sa_private_pem(), namespace="a", name="b", uid="c")
    assert satoken.verify_sa_token(created.sa_public_pem(), token).username == (
        "system:serviceaccount:a:b"
    )


def test_idempotent(created: bundle.ClusterPKI, tmp_path: Path) -> None:
    before = _all_files(created)
    again = bundle.create_cluster_pki(
        tmp_path, advertise_addresses=ADVERTISE, extra_sans=["api.example", "198.51.100.7"],
        hostname="CP-1",
    )  # fmt: skip
    assert _all_files(again) == before


def test_new_address_reissues_leaf_but_keeps_ca_and_keys(
    created: bundle.ClusterPKI, tmp_path: Path
) -> None:
    before = _all_files(created)
    bundle.create_cluster_pki(tmp_path, advertise_addresses=["192.0.2.99"], hostname="cp-1")
    after = _all_files(created)
    for name in ("ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub",
                 "apiserver.key", "admin.crt", "admin.key"):  # fmt: skip
        assert after[name] == before[name], name
    assert after["apiserver.crt"] != before["apiserver.crt"]
    assert "192.0.2.99" in _sans(created.apiserver().cert)[1]
    assert x509.load_pem_x509_certificates(after["apiserver-chain.crt"])[0] == (
        created.apiserver().cert
    )


def test_missing_leaf_is_recreated_from_existing_ca(
    created: bundle.ClusterPKI, tmp_path: Path
) -> None:
    ca_before = created.ca_crt.read_bytes()
    created.admin_crt.unlink()
    created.admin_key.unlink()
    bundle.create_cluster_pki(tmp_path, advertise_addresses=ADVERTISE, hostname="cp-1")
    assert created.ca_crt.read_bytes() == ca_before
    created.admin().cert.verify_directly_issued_by(created.cluster_ca().cert)


def test_half_a_ca_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(pki.create_ca("x").cert_pem)
    with pytest.raises(FileNotFoundError, match="refusing to create a new CA"):
        bundle.create_cluster_pki(tmp_path, advertise_addresses=[])
    # The lone certificate is left alone for the operator to look at.
    assert (tmp_path / "pki" / "ca.crt").exists() and not (tmp_path / "pki" / "ca.key").exists()


def test_load_cluster_pki(created: bundle.ClusterPKI, tmp_path: Path) -> None:
    loaded = bundle.load_cluster_pki(tmp_path)
    assert loaded.cluster_ca() == created.cluster_ca()
    with pytest.raises(FileNotFoundError, match="orchestrator init"):
        bundle.load_cluster_pki(tmp_path / "nowhere")
