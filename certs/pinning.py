"""CA pinning for node join (kubeadm's --discovery-token-ca-cert-hash).

A joining node does not yet trust the cluster CA. It connects without
verification, takes the chain the server presents, and trusts the CA only if
its public-key hash equals the one the operator passed on the command line and
it really issued the server's certificate. After that every connection is
verified against the pinned CA.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.pki import spki_sha256

_CA_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class PinningError(Exception):
    """The server did not present a CA matching the pinned hash."""


def ca_hash_format_ok(s: str) -> bool:
    return bool(_CA_HASH_RE.match(s))


def _der(cert: Any) -> bytes:
    # 3.13's public API returns DER bytes; 3.10-3.12's private one returns
    # _ssl.Certificate objects.
    if isinstance(cert, bytes):
        return cert
    return bytes(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]


def _unverified_chain(sock: ssl.SSLSocket) -> list[Any]:
    public = getattr(sock, "get_unverified_chain", None)
    if public is not None:
        return list(public() or [])
    sslobj = sock._sslobj  # type: ignore[attr-defined]
    return list(sslobj.get_unverified_chain() or [])


def fetch_server_chain(host: str, port: int, timeout: float = 5.0) -> list[x509.Certificate]:
    """Handshake WITHOUT verification and return the chain the server sent, leaf first.

    Only safe because the caller then pins the CA by hash (`find_pinned_ca`);
    nothing learned here is trusted on its own.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # gRPC servers refuse TLS connections that do not offer h2.
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        chain = _unverified_chain(tls)
    if not chain:
        raise PinningError(f"{host}:{port} presented no certificates")
    return [x509.load_der_x509_certificate(_der(c)) for c in chain]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def _issued(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        # ValueError: issuer name differs; InvalidSignature: another key; TypeError: odd key type.
        return False
    return True


def find_pinned_ca(chain: Sequence[x509.Certificate], ca_hash: str) -> x509.Certificate:
    """Return the CA in `chain` whose key hash is `ca_hash` and that issued chain[0]."""
    if not ca_hash_format_ok(ca_hash):
        raise PinningError(f"CA hash {ca_hash!r} is not of the form sha256:<64 lowercase hex>")
    if not chain:
        raise PinningError("the server presented no certificates")
    leaf = chain[0]
    presented = [spki_sha256(c) for c in chain]
    for cert, digest in zip(chain, presented, strict=True):
        if digest != ca_hash:
            continue
        if not _is_ca(cert):
            raise PinningError(f"the certificate with hash {ca_hash} is not a CA")
        if not _issued(leaf, cert):
            raise PinningError(
                f"the CA with hash {ca_hash} did not issue the server's certificate "
                f"({leaf.subject.rfc4514_string()})"
            )
        return cert
    raise PinningError(
        f"no certificate presented by the server matches the pinned CA hash {ca_hash}; "
        f"the server presented: {', '.join(presented)}"
    )
