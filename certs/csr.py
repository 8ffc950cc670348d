"""Certificate signing requests: how a node gets its client certificate.

The node makes its key locally and sends only a CSR; the control plane checks
the requested identity (`node_client_csr_problem`) and signs (`sign_csr`). The
private key never leaves the node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certs.pki import KeyPair, issue_certificate, new_private_key, private_key_pem

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# Node names are DNS-1123 subdomains, as in Kubernetes.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_DNS1123_SUBDOMAIN_MAX = 253

# Kubernetes' CertificateSigningRequest usage names. Digital signature and key
# encipherment are implied by every leaf we issue, so they only need accepting.
_IMPLIED_USAGES = frozenset({"digital signature", "key encipherment"})
_EXTENDED_USAGES = frozenset({"client auth", "server auth"})


class CSRError(ValueError):
    """A CSR is malformed, badly signed, or asks for something we do not sign."""


def is_dns1123_subdomain(name: str) -> bool:
    return len(name) <= _DNS1123_SUBDOMAIN_MAX and bool(_DNS1123_SUBDOMAIN_RE.match(name))


def make_csr(common_name: str, organizations: Sequence[str]) -> tuple[bytes, bytes]:
    """Return (csr_pem, key_pem) for a fresh local key."""
    key = new_private_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), private_key_pem(key)


def parse_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR and check its self-signature (proof the requester holds the key)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise CSRError(f"not a PEM certificate signing request: {e}") from e
    try:
        valid = csr.is_signature_valid
    except Exception as e:  # unsupported algorithms surface as various errors
        raise CSRError(f"cannot check the CSR signature: {e}") from e
    if not valid:
        raise CSRError("the CSR signature is invalid (it was not signed by its own key)")
    return csr


def _subject(csr: x509.CertificateSigningRequest) -> tuple[list[str], list[str]]:
    cns = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cns, orgs


def _sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def sign_csr(
    ca: KeyPair,
    csr_pem: bytes | str,
    *,
    valid_seconds: int,
    usages: Sequence[str] = ("digital signature", "client auth"),
) -> bytes:
    """Sign a CSR with `ca`; returns the certificate PEM.

    Subject CN and O are copied from the CSR. DNS and IP SANs are copied too
    (a serving certificate needs them); deciding whether the request may have
    them is the approver's job (see `node_client_csr_problem`).
    """
    csr = parse_csr(csr_pem)
    unknown = sorted(set(usages) - _IMPLIED_USAGES - _EXTENDED_USAGES)
    if unknown:
        raise CSRError(
            f"unsupported usages {unknown}; allowed: {sorted(_IMPLIED_USAGES | _EXTENDED_USAGES)}"
        )
    server = "server auth" in usages
    client = "client auth" in usages
    if not (server or client):
        raise CSRError('usages must include "client auth" and/or "server auth"')
    cns, orgs = _subject(csr)
    if len(cns) != 1 or not cns[0]:
        raise CSRError(f"the CSR subject must have exactly one non-empty CN, got {cns}")
    sans = _sans(csr)
    unsupported = [s for s in sans if not isinstance(s, (x509.DNSName, x509.IPAddress))]
    if unsupported:
        raise CSRError(f"only DNS and IP subject alternative names are signed, got {unsupported}")
    pair = issue_certificate(
        ca,
        common_name=cns[0],
        organizations=orgs,
        dns_names=[s.value for s in sans if isinstance(s, x509.DNSName)],
        ip_addresses=[str(s.value) for s in sans if isinstance(s, x509.IPAddress)],
        server=server,
        client=client,
        valid_seconds=valid_seconds,
        public_key=csr.public_key(),
    )
    return pair.cert_pem


def node_client_csr_problem(
    csr: x509.CertificateSigningRequest | bytes, node_name_expected: str | None
) -> str | None:
    """None if `csr` is an acceptable node client CSR, else why it is not.

    Mirrors Kubernetes' node client check: CN "system:node:<name>", O exactly
    ["system:nodes"], no subject alternative names.
    """
    if isinstance(csr, bytes):
        try:
            csr = parse_csr(csr)
        except CSRError as e:
            return str(e)
    cns, orgs = _subject(csr)
    if len(cns) != 1:
        return f"subject must have exactly one common name, got {cns}"
    cn = cns[0]
    if not cn.startswith(NODE_USER_PREFIX):
        return f'common name {cn!r} does not start with "{NODE_USER_PREFIX}"'
    name = cn.removeprefix(NODE_USER_PREFIX)
    if not is_dns1123_subdomain(name):
        return (
            f"node name {name!r} is not a valid DNS-1123 subdomain "
            "(lowercase letters, digits, '-' and '.', at most 253 characters)"
        )
    if node_name_expected is not None and name != node_name_expected:
        return f"CSR is for node {name!r} but the requester is node {node_name_expected!r}"
    if orgs != [NODES_GROUP]:
        return f'organization must be exactly ["{NODES_GROUP}"], got {orgs}'
    sans = _sans(csr)
    if sans:
        return f"a node client CSR must have no subject alternative names, got {sans}"
    return None
