"""The PKI written by `orchestrator init --data-dir DIR`, under DIR/pki/.

Laid out like kubeadm's /etc/kubernetes/pki. Creation is idempotent: CAs
and keys that exist are reused (a CA is never overwritten, or every issued
certificate and every join command's CA hash would break); leaf
certificates are re-issued only when missing, not from the current CA,
close to expiry, or no longer matching what is asked for (e.g. a new
advertise address).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs import pki, satoken

CLUSTER_CA_NAME = "orchestrator-ca"
ETCD_CA_NAME = "etcd-ca"
APISERVER_CN = "orchestrator-apiserver"
APISERVER_ETCD_CLIENT_CN = "orchestrator-apiserver-etcd-client"
APISERVER_AGENT_CLIENT_CN = "orchestrator-apiserver-agent-client"
ADMIN_CN = "admin"
MASTERS_GROUP = "system:masters"
SCHEDULER_CN = "system:kube-scheduler"
CONTROLLER_MANAGER_CN = "system:kube-controller-manager"
# First address of the service CIDR 10.96.0.0/12: the in-cluster apiserver Service.
APISERVER_SERVICE_IP = "10.96.0.1"
APISERVER_DNS_NAMES = (
    "localhost",
    "orchestrator",
    "orchestrator.default",
    "orchestrator.default.svc",
    "orchestrator.default.svc.cluster.local",
)
LOOPBACK_IPS = ("127.0.0.1", "::1")
LEAF_VALIDITY = timedelta(days=365)
# Re-running init renews leaves this close to expiry.
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class _LeafSpec:
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass
class ClusterPKI:
    data_dir: Path

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    # Paths, named after kubeadm's files.
    @property
    def ca_crt(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki_dir / "ca.key"

    @property
    def etcd_ca_crt(self) -> Path:
        return self.pki_dir / "etcd" / "ca.crt"

    @property
    def etcd_ca_key(self) -> Path:
        return self.pki_dir / "etcd" / "ca.key"

    @property
    def etcd_server_crt(self) -> Path:
        return self.pki_dir / "etcd" / "server.crt"

    @property
    def etcd_server_key(self) -> Path:
        return self.pki_dir / "etcd" / "server.key"

    @property
    def etcd_client_crt(self) -> Path:
        return self.pki_dir / "etcd" / "client.crt"

    @property
    def etcd_client_key(self) -> Path:
        return self.pki_dir / "etcd" / "client.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.pki_dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.pki_dir / "apiserver.key"

    @property
    def apiserver_chain_crt(self) -> Path:
        return self.pki_dir / "apiserver-chain.crt"

    @property
    def apiserver_agent_client_crt(self) -> Path:
        return self.pki_dir / "apiserver-agent-client.crt"

    @property
    def apiserver_agent_client_key(self) -> Path:
        return self.pki_dir / "apiserver-agent-client.key"

    @property
    def admin_crt(self) -> Path:
        return self.pki_dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.pki_dir / "admin.key"

    @property
    def scheduler_crt(self) -> Path:
        return self.pki_dir / "scheduler.crt"

    @property
    def scheduler_key(self) -> Path:
        return self.pki_dir / "scheduler.key"

    @property
    def controller_manager_crt(self) -> Path:
        return self.pki_dir / "controller-manager.crt"

    @property
    def controller_manager_key(self) -> Path:
        return self.pki_dir / "controller-manager.key"

    @property
    def sa_key(self) -> Path:
        return self.pki_dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.pki_dir / "sa.pub"

    # Loaded material.
    def cluster_ca(self) -> pki.KeyPair:
        return pki.load_pair(self.ca_crt, self.ca_key)

    def etcd_ca(self) -> pki.KeyPair:
        return pki.load_pair(self.etcd_ca_crt, self.etcd_ca_key)

    def etcd_server(self) -> pki.KeyPair:
        return pki.load_pair(self.etcd_server_crt, self.etcd_server_key)

    def etcd_client(self) -> pki.KeyPair:
        return pki.load_pair(self.etcd_client_crt, self.etcd_client_key)

    def apiserver(self) -> pki.KeyPair:
        return pki.load_pair(self.apiserver_crt, self.apiserver_key)

    def apiserver_chain_pem(self) -> bytes:
        """Apiserver certificate then the CA: what the apiserver serves, so joiners can pin."""
        return self.apiserver_chain_crt.read_bytes()

    def apiserver_agent_client(self) -> pki.KeyPair:
        return pki.load_pair(self.apiserver_agent_client_crt, self.apiserver_agent_client_key)

    def admin(self) -> pki.KeyPair:
        return pki.load_pair(self.admin_crt, self.admin_key)

    def scheduler(self) -> pki.KeyPair:
        return pki.load_pair(self.scheduler_crt, self.scheduler_key)

    def controller_manager(self) -> pki.KeyPair:
        return pki.load_pair(self.controller_manager_crt, self.controller_manager_key)

    def sa_private_pem(self) -> bytes:
        return self.sa_key.read_bytes()

    def sa_public_pem(self) -> bytes:
        return self.sa_pub.read_bytes()

    def ca_hash(self) -> str:
        """The value for `join --discovery-token-ca-cert-hash`."""
        return pki.spki_sha256(pki.KeyPair(self.ca_crt.read_bytes(), b"").cert)


def _ensure_ca(cert_path: Path, key_path: Path, common_name: str) -> pki.KeyPair:
    if cert_path.exists() != key_path.exists():
        # Half a CA is an operator problem to look at, not something to paper over.
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise FileNotFoundError(
            f"{present} exists but {missing} does not; refusing to create a new CA over it"
        )
    if cert_path.exists():
        return pki.load_pair(cert_path, key_path)
    ca = pki.create_ca(common_name)
    pki.write_pair(ca, cert_path, key_path)
    return ca


def _split_sans(values: Sequence[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for v in values:
        try:
            ips.append(str(ipaddress.ip_address(v)))
        except ValueError:
            dns.append(v.lower())
    return dns, ips


def _leaf_matches(cert: x509.Certificate, ca: pki.KeyPair, spec: _LeafSpec, now: datetime) -> bool:
    if cert.issuer != ca.cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):  # another CA's key: not ours
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    if pki.identity_from_cert(cert) != (spec.common_name, list(spec.organizations)):
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_dns = set(sans.get_values_for_type(x509.DNSName))
        have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        have_dns, have_ips = set(), set()
    if have_dns != set(spec.dns_names) or have_ips != set(spec.ip_addresses):
        return False
    try:
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = set()
    want = set()
    if spec.server:
        want.add(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        want.add(ExtendedKeyUsageOID.CLIENT_AUTH)
    return eku == want


def _ensure_leaf(ca: pki.KeyPair, cert_path: Path, key_path: Path, spec: _LeafSpec) -> pki.KeyPair:
    now = datetime.now(UTC)
    key_pem = key_path.read_bytes() if key_path.exists() else b""
    if key_pem and cert_path.exists():
        try:
            existing = pki.load_pair(cert_path, key_path)
        except ValueError:
            existing = None  # e.g. the key no longer matches the cert: re-issue below
        if existing is not None and _leaf_matches(existing.cert, ca, spec, now):
            return existing
    public_key = None
    if key_pem:
        # Keep the existing key so anything pinned to it keeps working.
        public_key = pki.KeyPair(b"", key_pem).private_key.public_key()
    issued = pki.issue_certificate(
        ca,
        common_name=spec.common_name,
        organizations=spec.organizations,
        dns_names=spec.dns_names,
        ip_addresses=spec.ip_addresses,
        server=spec.server,
        client=spec.client,
        valid_seconds=int(LEAF_VALIDITY.total_seconds()),
        public_key=public_key,
    )
    pair = pki.KeyPair(issued.cert_pem, key_pem or issued.key_pem)
    pki.write_pair(pair, cert_path, key_path)
    return pair


def _ensure_sa_keys(private_path: Path, public_path: Path) -> None:
    if private_path.exists():
        private_pem = private_path.read_bytes()
        # Fail loudly on a corrupt key rather than minting tokens nobody can verify.
        serialization.load_pem_private_key(private_pem, password=None)
    else:
        private_pem = satoken.generate_signing_key()
        pki.write_file(private_path, private_pem, 0o600)
    public = satoken.public_pem(private_pem)
    if not public_path.exists() or public_path.read_bytes() != public:
        pki.write_file(public_path, public, 0o644)


def create_cluster_pki(
    data_dir: Path,
    *,
    advertise_addresses: Sequence[str],
    extra_sans: Sequence[str] = (),
    hostname: str | None = None,
) -> ClusterPKI:
    """Create (or complete) the cluster PKI under data_dir/pki and return it."""
    paths = ClusterPKI(Path(data_dir))
    paths.pki_dir.mkdir(parents=True, exist_ok=True)
    host = (hostname or socket.gethostname()).lower()
    extra_dns, extra_ips = _split_sans([*advertise_addresses, *extra_sans])

    ca = _ensure_ca(paths.ca_crt, paths.ca_key, CLUSTER_CA_NAME)
    etcd_ca = _ensure_ca(paths.etcd_ca_crt, paths.etcd_ca_key, ETCD_CA_NAME)

    def uniq(*groups: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for g in groups for v in g))

    apiserver = _ensure_leaf(
        ca,
        paths.apiserver_crt,
        paths.apiserver_key,
        _LeafSpec(
            APISERVER_CN,
            dns_names=uniq(APISERVER_DNS_NAMES, [host], extra_dns),
            ip_addresses=uniq(LOOPBACK_IPS, [APISERVER_SERVICE_IP], extra_ips),
            server=True,
        ),
    )
    chain = apiserver.cert_pem + ca.cert_pem
    if not paths.apiserver_chain_crt.exists() or paths.apiserver_chain_crt.read_bytes() != chain:
        pki.write_file(paths.apiserver_chain_crt, chain, 0o644)

    clients = [
        (paths.apiserver_agent_client_crt, paths.apiserver_agent_client_key,
         APISERVER_AGENT_CLIENT_CN, (MASTERS_GROUP,)),
        (paths.admin_crt, paths.admin_key, ADMIN_CN, (MASTERS_GROUP,)),
        (paths.scheduler_crt, paths.scheduler_key, SCHEDULER_CN, ()),
        (paths.controller_manager_crt, paths.controller_manager_key, CONTROLLER_MANAGER_CN, ()),
    ]  # fmt: skip
    for cert_path, key_path, cn, orgs in clients:
        _ensure_leaf(ca, cert_path, key_path, _LeafSpec(cn, orgs, client=True))

    # etcd members use one certificate for serving and for talking to peers.
    _ensure_leaf(
        etcd_ca,
        paths.etcd_server_crt,
        paths.etcd_server_key,
        _LeafSpec(
            host,
            dns_names=uniq(["localhost", host], extra_dns),
            ip_addresses=uniq(LOOPBACK_IPS, extra_ips),
            server=True,
            client=True,
        ),
    )
    _ensure_leaf(
        etcd_ca,
        paths.etcd_client_crt,
        paths.etcd_client_key,
        _LeafSpec(APISERVER_ETCD_CLIENT_CN, client=True),
    )
    _ensure_sa_keys(paths.sa_key, paths.sa_pub)
    return paths


def load_cluster_pki(data_dir: Path) -> ClusterPKI:
    """Open an existing PKI; raises FileNotFoundError naming what is missing."""
    paths = ClusterPKI(Path(data_dir))
    required = [paths.ca_crt, paths.ca_key, paths.apiserver_crt, paths.apiserver_key, paths.sa_pub]
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"cluster PKI incomplete ({', '.join(missing)} missing); "
            f"run `orchestrator init --data-dir {data_dir}` first"
        )
    return paths
