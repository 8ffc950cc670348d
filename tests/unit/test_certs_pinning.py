"""CA pinning: hash checks, and reading the chain from a real local TLS server."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs import pinning, pki

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("cluster-ca")


@pytest.fixture(scope="module")
def server_pair(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.issue_certificate(
        ca,
        common_name="apiserver",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )


class TLSServer:
    """A one-thread TLS server on 127.0.0.1 that handshakes and closes each connection."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._ctx = ctx
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self.peer_certs: list[dict | None] = []  # type: ignore[type-arg]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as tls:
                    self.peer_certs.append(tls.getpeercert())
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as e:
                self.errors.append(e)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _server_ctx(tmp_path: Path, ca: pki.KeyPair, pair: pki.KeyPair, chain: bytes) -> ssl.SSLContext:
    (tmp_path / "chain.crt").write_bytes(chain)
    (tmp_path / "server.key").write_bytes(pair.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "chain.crt", tmp_path / "server.key")
    ctx.set_alpn_protocols(["h2"])
    return ctx


@pytest.fixture
def server(tmp_path: Path, ca: pki.KeyPair, server_pair: pki.KeyPair) -> Iterator[TLSServer]:
    srv = TLSServer(_server_ctx(tmp_path, ca, server_pair, server_pair.cert_pem + ca.cert_pem))
    yield srv
    srv.close()


def test_ca_hash_format() -> None:
    assert pinning.ca_hash_format_ok("sha256:" + "0" * 64)
    assert pinning.ca_hash_format_ok("sha256:" + "ab" * 32)
    for bad in ("", "0" * 64, "sha256:" + "0" * 63, "sha256:" + "0" * 65, "sha256:" + "G" * 64,
                "sha1:" + "0" * 64, "SHA256:" + "0" * 64):  # fmt: skip
        assert not pinning.ca_hash_format_ok(bad), bad


def test_spki_hash_is_accepted_format(ca: pki.KeyPair) -> None:
    assert pinning.ca_hash_format_ok(pki.spki_sha256(ca.cert))


def test_find_pinned_ca_good(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    chain = [server_pair.cert, ca.cert]
    assert pinning.find_pinned_ca(chain, pki.spki_sha256(ca.cert)) == ca.cert


def test_find_pinned_ca_wrong_hash(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    chain = [server_pair.cert, ca.cert]
    wrong = "sha256:" + "0" * 64
    with pytest.raises(pinning.PinningError) as info:
        pinning.find_pinned_ca(chain, wrong)
    msg = str(info.value)
    assert wrong in msg
    assert pki.spki_sha256(ca.cert) in msg and pki.spki_sha256(server_pair.cert) in msg


def test_find_pinned_ca_malformed_hash(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    with pytest.raises(pinning.PinningError, match="sha256:<64"):
        pinning.find_pinned_ca([server_pair.cert, ca.cert], "deadbeef")


def test_find_pinned_ca_not_issuer(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    # An attacker serving their own leaf next to the real CA must not pass.
    rogue_ca = pki.create_ca("cluster-ca")
    rogue_leaf = pki.issue_certificate(rogue_ca, common_name="apiserver", server=True)
    with pytest.raises(pinning.PinningError, match="did not issue"):
        pinning.find_pinned_ca([rogue_leaf.cert, ca.cert], pki.spki_sha256(ca.cert))


def test_find_pinned_ca_not_a_ca(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    with pytest.raises(pinning.PinningError, match="not a CA"):
        pinning.find_pinned_ca([server_pair.cert, ca.cert], pki.spki_sha256(server_pair.cert))


def test_find_pinned_ca_empty_chain() -> None:
    with pytest.raises(pinning.PinningError):
        pinning.find_pinned_ca([], "sha256:" + "0" * 64)


def test_fetch_server_chain(server: TLSServer, ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    chain = pinning.fetch_server_chain("127.0.0.1", server.port)
    assert chain == [server_pair.cert, ca.cert]
    assert all(isinstance(c, x509.Certificate) for c in chain)
    assert pinning.find_pinned_ca(chain, pki.spki_sha256(ca.cert)) == ca.cert


def test_fetch_server_chain_leaf_only(
    tmp_path: Path, ca: pki.KeyPair, server_pair: pki.KeyPair
) -> None:
    srv = TLSServer(_server_ctx(tmp_path, ca, server_pair, server_pair.cert_pem))
    try:
        chain = pinning.fetch_server_chain("127.0.0.1", srv.port)
    finally:
        srv.close()
    assert chain == [server_pair.cert]
    with pytest.raises(pinning.PinningError, match="server presented"):
        pinning.find_pinned_ca(chain, pki.spki_sha256(ca.cert))


def test_fetch_server_chain_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        pinning.fetch_server_chain("127.0.0.1", port, timeout=2)


def test_pinned_ca_then_verified_mtls(
    tmp_path: Path, ca: pki.KeyPair, server_pair: pki.KeyPair
) -> None:
    """After pinning, a verifying mTLS connection with a node client cert succeeds in OpenSSL."""
    ctx = _server_ctx(tmp_path, ca, server_pair, server_pair.cert_pem + ca.cert_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    ctx.load_verify_locations(tmp_path / "ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = TLSServer(ctx)
    try:
        pinned = pinning.find_pinned_ca(
            pinning.fetch_server_chain("127.0.0.1", srv.port), pki.spki_sha256(ca.cert)
        )
        client = pki.issue_certificate(
            ca, common_name="system:node:n1", organizations=["system:nodes"], client=True
        )
        pki.write_pair(client, tmp_path / "n1.crt", tmp_path / "n1.key")
        cctx = ssl.create_default_context(
            cadata=pinned.public_bytes(serialization.Encoding.PEM).decode()
        )
        cctx.load_cert_chain(tmp_path / "n1.crt", tmp_path / "n1.key")
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(2) == b"ok"
    finally:
        srv.close()
    subject = dict(x[0] for x in srv.peer_certs[-1]["subject"])  # type: ignore[index]
    assert subject["commonName"] == "system:node:n1"
    assert subject["organizationName"] == "system:nodes"


def test_fetch_server_chain_from_grpc_server(ca: pki.KeyPair, server_pair: pki.KeyPair) -> None:
    """The real use: a gRPC server with the apiserver chain; it insists on ALPN h2."""
    grpc = pytest.importorskip("grpc")
    from concurrent.futures import ThreadPoolExecutor

    creds = grpc.ssl_server_credentials([(server_pair.key_pem, server_pair.cert_pem + ca.cert_pem)])
    srv = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        chain = pinning.fetch_server_chain("127.0.0.1", port)
    finally:
        srv.stop(None)
    assert chain == [server_pair.cert, ca.cert]
    assert pinning.find_pinned_ca(chain, pki.spki_sha256(ca.cert)) == ca.cert
