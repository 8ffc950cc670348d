"""Joining a cluster: kubeadm's TLS bootstrap, over our gRPC API.

1. Fetch the apiserver's certificate chain without trusting it yet, and find
   the CA whose public-key hash the operator passed (`--ca-hash`): from here
   on the connection is pinned to that CA, so a man in the middle fails.
2. Make a private key locally (it never leaves the node) and a CSR for
   `CN=system:node:<name>, O=system:nodes`.
3. Authenticated by the bootstrap token, create a CertificateSigningRequest
   and wait until the control plane approves and signs it.
4. Write the key, the certificate, the CA and an orchctl-style config that
   the agent uses from then on.

Renewal is the same CSR round trip, authenticated by the current certificate.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs import csr as csrlib
from certs import pinning, pki, tokens
from orchestrator.api.kinds import kind_info
from orchestrator.client.client import Client, ForbiddenError, UnauthenticatedError
from orchestrator.client.config import ConfigFile, Connection

KUBELET_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODES_GROUP = "system:nodes"


class JoinError(Exception):
    pass


@dataclass(frozen=True)
class NodeCredentials:
    config_path: Path
    cert_path: Path
    key_path: Path
    ca_path: Path


def split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise JoinError(f'server "{server}" must be HOST:PORT, e.g. 192.0.2.10:6443')
    return host.strip("[]"), int(port)


def token_endpoint(server: str) -> tuple[str, int]:
    """Token-authenticated callers use the port after the main one."""
    host, port = split_server(server)
    return host, port + 1


def pinned_ca(host: str, port: int, ca_hash: str) -> bytes:
    if not pinning.ca_hash_format_ok(ca_hash):
        raise JoinError(f'--ca-hash "{ca_hash}" must look like sha256:<64 hex digits>')
    try:
        chain = pinning.fetch_server_chain(host, port)
    except OSError as exc:
        raise JoinError(f"cannot reach the apiserver at {host}:{port}: {exc}") from None
    try:
        ca = pinning.find_pinned_ca(chain, ca_hash)
    except pinning.PinningError as exc:
        raise JoinError(f"the apiserver's CA does not match --ca-hash: {exc}") from None
    return ca.public_bytes(serialization.Encoding.PEM)


async def request_certificate(
    client: Client, node_name: str, *, timeout: float = 60.0
) -> tuple[bytes, bytes]:
    """Create a node CSR through `client` and wait for it to be signed.
    Returns (certificate PEM, private key PEM)."""
    csr_pem, key_pem = csrlib.make_csr(f"system:node:{node_name}", [NODES_GROUP])
    csr = kind_info("CertificateSigningRequest").new()
    csr.metadata.name = f"node-csr-{node_name}-{secrets.token_hex(4)}"  # type: ignore[attr-defined]
    csr.spec.request = csr_pem  # type: ignore[attr-defined]
    csr.spec.signer_name = KUBELET_SIGNER  # type: ignore[attr-defined]
    csr.spec.usages.extend(["digital signature", "client auth"])  # type: ignore[attr-defined]
    try:
        created = await client.create(csr)
    except (UnauthenticatedError, ForbiddenError) as exc:
        raise JoinError(f"the control plane refused the join: {exc.message}") from None
    name = created.metadata.name  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await client.get("CertificateSigningRequest", name)
        for cond in current.status.conditions:
            if cond.type in ("Denied", "Failed"):
                raise JoinError(f"certificate request {name} was denied: {cond.message}")
        if current.status.certificate:
            return bytes(current.status.certificate), key_pem
        if asyncio.get_running_loop().time() > deadline:
            raise JoinError(f"certificate request {name} was not signed within {timeout:.0f}s")
        await asyncio.sleep(0.2)


def write_credentials(
    data_dir: Path, server: str, node_name: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes
) -> NodeCredentials:
    pki_dir = data_dir / "pki"
    creds = NodeCredentials(
        config_path=data_dir / "agent.conf",
        cert_path=pki_dir / "node.crt",
        key_path=pki_dir / "node.key",
        ca_path=pki_dir / "ca.crt",
    )
    pki.write_file(creds.key_path, key_pem, 0o600)
    pki.write_file(creds.cert_path, cert_pem, 0o644)
    pki.write_file(creds.ca_path, ca_pem, 0o644)
    conf = ConfigFile.load(creds.config_path, missing_ok=True)
    conf.add_context(
        name=f"system:node:{node_name}",
        cluster="cluster",
        server=server,
        ca_pem=ca_pem,
        user=f"system:node:{node_name}",
        cert_pem=cert_pem,
        key_pem=key_pem,
    )
    conf.save()
    return creds


async def join(
    server: str,
    token: str,
    ca_hash: str,
    *,
    node_name: str,
    data_dir: Path,
    timeout: float = 60.0,
) -> NodeCredentials:
    try:
        tokens.parse_token(token)
    except tokens.TokenFormatError as exc:
        raise JoinError(str(exc)) from None
    host, port = token_endpoint(server)
    ca_pem = await asyncio.to_thread(pinned_ca, host, port, ca_hash)
    conn = Connection(server=f"{host}:{port}", ca_pem=ca_pem, token=token)
    async with Client(conn, timeout=10.0) as client:
        cert_pem, key_pem = await request_certificate(client, node_name, timeout=timeout)
    return write_credentials(data_dir, server, node_name, cert_pem, key_pem, ca_pem)


def needs_renewal(cert_pem: bytes, *, fraction: float = 0.8) -> bool:
    """True once `fraction` of the certificate's lifetime has passed."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return datetime.now(UTC) >= start + (end - start) * fraction


async def renew(data_dir: Path, node_name: str, *, timeout: float = 60.0) -> NodeCredentials:
    """Ask for a fresh certificate with the current one, then swap files."""
    conf = ConfigFile.load(data_dir / "agent.conf")
    conn = conf.connection()
    async with Client(conn, timeout=10.0) as client:
        cert_pem, key_pem = await request_certificate(client, node_name, timeout=timeout)
    return write_credentials(data_dir, conn.server, node_name, cert_pem, key_pem, conn.ca_pem)


def default_node_name() -> str:
    return socket.gethostname().lower()
