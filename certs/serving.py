"""The agent's serving certificate, as Kubernetes' kubelet-serving CSRs.

The agent serves logs and exec over TLS with a certificate from the cluster
CA, so the apiserver can verify it like any other cluster member. The node
makes the key locally and sends a CSR for signer `kubernetes.io/kubelet-serving`:
subject `CN=system:node:<name>, O=system:nodes` (the same identity as its
client certificate) and subject alternative names for its addresses (IPs) and
its name (DNS). The control plane signs it for "server auth" only, when the
requester is that same node (`node_serving_csr_problem`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certs.csr import NODE_USER_PREFIX, NODES_GROUP, CSRError, is_dns1123_subdomain, parse_csr
from certs.pki import new_private_key, private_key_pem

KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
SERVING_USAGES = ("digital signature", "server auth")
# What a serving CSR may ask for ("key encipherment" is what kubelets send for RSA keys).
_ALLOWED_USAGES = frozenset({"digital signature", "key encipherment", "server auth"})
# A node has a handful of addresses; more means something is wrong.
MAX_SANS = 32


def make_serving_csr(
    node_name: str, ips: Sequence[str], dns_names: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """Return (csr_pem, key_pem) for a fresh local key, naming the node's addresses."""
    if not ips and not dns_names:
        raise CSRError("a serving certificate needs at least one IP address or DNS name")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    seen: set[str] = set()
    for raw in ips:
        ip = ipaddress.ip_address(raw)  # ValueError names the bad address
        if str(ip) not in seen:
            seen.add(str(ip))
            sans.append(x509.IPAddress(ip))
    key = new_private_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{NODE_USER_PREFIX}{node_name}"),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), private_key_pem(key)


def node_serving_csr_problem(
    csr: x509.CertificateSigningRequest | bytes,
    requester: str,
    requester_groups: Sequence[str],
    usages: Sequence[str] = SERVING_USAGES,
) -> str | None:
    """None if `csr` is an acceptable serving CSR from user `requester`, else why not.

    Mirrors Kubernetes' kubelet-serving rules: CN "system:node:<name>" equal to
    the requesting node, O exactly ["system:nodes"], at least one DNS or IP
    SAN and nothing else (no e-mail, no URI), usages within server auth.
    """
    if not requester.startswith(NODE_USER_PREFIX) or NODES_GROUP not in requester_groups:
        return f'user "{requester}" may not request node serving certificates (only nodes may)'
    if isinstance(csr, bytes):
        try:
            csr = parse_csr(csr)
        except CSRError as e:
            return str(e)
    cns = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if len(cns) != 1:
        return f"subject must have exactly one common name, got {cns}"
    if cns[0] != requester:
        return f"CSR is for {cns[0]!r} but was requested by {requester!r}"
    name = requester.removeprefix(NODE_USER_PREFIX)
    if not is_dns1123_subdomain(name):
        return f"node name {name!r} is not a valid DNS-1123 subdomain"
    if orgs != [NODES_GROUP]:
        return f'organization must be exactly ["{NODES_GROUP}"], got {orgs}'
    extra = sorted(set(usages) - _ALLOWED_USAGES)
    if extra:
        return f"usages {extra} are not allowed for a serving certificate"
    if "server auth" not in usages:
        return 'usages must include "server auth"'
    try:
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    if not sans:
        return "a serving CSR must name at least one IP address or DNS name"
    if len(sans) > MAX_SANS:
        return f"a serving CSR may name at most {MAX_SANS} addresses, got {len(sans)}"
    other = [s for s in sans if not isinstance(s, (x509.DNSName, x509.IPAddress))]
    if other:
        return f"only DNS and IP subject alternative names are allowed, got {other}"
    return None
