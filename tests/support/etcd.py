"""Run a real, throwaway, single-member etcd for tests and benchmarks.

`EtcdProcess` starts `/usr/bin/etcd` on 127.0.0.1 with free ports and its own
temporary directory, waits until it reports healthy, and on stop terminates
exactly the process it started and removes the directory. It does not depend
on pytest, so benchmarks can use it too:

    with EtcdProcess() as etcd:
        store = await EtcdStore.open([etcd.endpoint])

    async with EtcdProcess() as etcd:   # waits for health without blocking the loop
        ...

Health is probed on a separate plain-HTTP metrics listener (`metrics_url`), so
it works the same with and without TLS on the client port. `make_test_pki`
writes a throwaway CA plus server and client certificates for TLS tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

ETCD_BINARY = "/usr/bin/etcd"

# etcd's default --max-request-bytes is exactly 1.5 MiB, which rejects a
# 1.5 MiB value once the key and the request framing are added. The
# orchestrator stores objects up to 1.5 MiB, so test etcds accept more.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


class EtcdStartError(RuntimeError):
    """etcd did not start or did not become healthy in time."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    # etcd reads its flags from ETCD_* variables too; do not let the caller's
    # environment reconfigure the test instance behind our back.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


# Every started instance, so a test run that dies without calling stop() does
# not leave etcd processes behind.
_live: weakref.WeakSet[EtcdProcess] = weakref.WeakSet()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for proc in leftovers:
        with contextlib.suppress(Exception):
            proc.stop()


class EtcdProcess:
    """One etcd member on 127.0.0.1, in its own temporary directory.

    TLS: pass `ca_file`, `cert_file` and `key_file` (PEM paths). The client
    port then serves HTTPS with the server certificate and requires client
    certificates signed by the CA (`--client-cert-auth`).
    """

    def __init__(
        self,
        *,
        binary: str = ETCD_BINARY,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        quota_backend_bytes: int | None = None,
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        extra_args: Sequence[str] = (),
        base_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        name: str = "test",
    ) -> None:
        tls = (ca_file, cert_file, key_file)
        if any(f is not None for f in tls) and not all(f is not None for f in tls):
            raise ValueError("TLS needs all of ca_file, cert_file and key_file")
        self.binary = binary
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self.cert_file = Path(cert_file) if cert_file is not None else None
        self.key_file = Path(key_file) if key_file is not None else None
        self.quota_backend_bytes = quota_backend_bytes
        self.max_request_bytes = max_request_bytes
        self.extra_args = list(extra_args)
        self.base_dir = base_dir
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.name = name

        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._log: IO[bytes] | None = None
        self.client_port = 0
        self.peer_port = 0
        self.metrics_port = 0

    # -- addresses ---------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    @property
    def endpoint(self) -> str:
        """host:port of the client API (what EtcdStore.open takes)."""
        self._require_started()
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.endpoint}"

    @property
    def metrics_url(self) -> str:
        """Plain-HTTP listener serving /health and /metrics (no TLS, no auth)."""
        self._require_started()
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int:
        self._require_started()
        assert self._proc is not None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        self._require_started()
        assert self._dir is not None
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        self._require_started()
        assert self._dir is not None
        return self._dir / "etcd.log"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _require_started(self) -> None:
        if self._proc is None:
            raise RuntimeError("etcd has not been started")

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> EtcdProcess:
        """Start etcd and block until it is healthy."""
        # Free ports are found by binding to port 0 and releasing it, so another
        # process can grab one before etcd does; retry with fresh ports then.
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_healthy_blocking()
                return self
            except EtcdStartError:
                retry = self._port_clash() and attempt < 2
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    async def astart(self) -> EtcdProcess:
        """Start etcd and wait until healthy without blocking the event loop."""
        for attempt in range(3):
            self._spawn()
            try:
                await self._wait_healthy_async()
                return self
            except EtcdStartError:
                retry = self._port_clash() and attempt < 2
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _port_clash(self) -> bool:
        return "address already in use" in self.log_tail(50)

    def restart(self) -> EtcdProcess:
        """Stop etcd (SIGTERM) and start it again on the same ports and data."""
        self._require_started()
        self._terminate()
        self._spawn(fresh=False)
        try:
            self._wait_healthy_blocking()
        except EtcdStartError:
            self.stop()
            raise
        return self

    async def arestart(self) -> EtcdProcess:
        self._require_started()
        await asyncio.to_thread(self._terminate)
        self._spawn(fresh=False)
        try:
            await self._wait_healthy_async()
        except EtcdStartError:
            await self.astop()
            raise
        return self

    def _spawn(self, fresh: bool = True) -> None:
        if self._proc is not None:
            raise RuntimeError("etcd is already started")
        if not os.path.exists(self.binary):
            raise EtcdStartError(f"{self.binary} not found: install Debian's etcd-server package")
        if fresh:
            self._dir = Path(tempfile.mkdtemp(prefix="etcd-test-", dir=self.base_dir))
            self.client_port, self.peer_port, self.metrics_port = (
                _free_port(),
                _free_port(),
                _free_port(),
            )
            while len({self.client_port, self.peer_port, self.metrics_port}) < 3:
                self.peer_port, self.metrics_port = _free_port(), _free_port()
        assert self._dir is not None

        scheme = "https" if self.tls else "http"
        client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self._dir / "data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"test-{os.getpid()}-{self.client_port}",
            "--listen-metrics-urls", f"http://127.0.0.1:{self.metrics_port}",
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        if self.tls:
            args += [
                "--cert-file", str(self.cert_file),
                "--key-file", str(self.key_file),
                "--trusted-ca-file", str(self.ca_file),
                "--client-cert-auth",
            ]  # fmt: skip
        if self.quota_backend_bytes is not None:
            args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.max_request_bytes is not None:
            args += ["--max-request-bytes", str(self.max_request_bytes)]
        args += self.extra_args

        log = open(self._dir / "etcd.log", "ab")  # closed in _terminate()
        self._log = log
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                cwd=self._dir,
            )
        except BaseException:
            self.stop()
            raise
        with _live_lock:
            _live.add(self)

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.metrics_url}/health", timeout=1.0) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return body.get("health") in ("true", True)

    def _check_alive(self) -> None:
        assert self._proc is not None
        rc = self._proc.poll()
        if rc is not None:
            raise EtcdStartError(
                f"etcd exited with status {rc} during startup; log tail:\n{self.log_tail()}"
            )

    def _timed_out(self) -> EtcdStartError:
        return EtcdStartError(
            f"etcd (pid {self.pid}) not healthy after {self.startup_timeout:.0f}s on "
            f"{self.client_url}; log tail:\n{self.log_tail()}"
        )

    def _wait_healthy_blocking(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._check_alive()
            if self._probe():
                return
            if time.monotonic() > deadline:
                raise self._timed_out()
            time.sleep(0.05)

    async def _wait_healthy_async(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._check_alive()
            if await asyncio.to_thread(self._probe):
                return
            if time.monotonic() > deadline:
                raise self._timed_out()
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the etcd we started (SIGKILL after stop_timeout); remove its dir."""
        self._terminate()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with _live_lock:
                _live.discard(self)
            if proc.poll() is None:
                # Popen.send_signal targets exactly proc.pid, and only while it
                # has not been reaped, so this can never hit a recycled PID.
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EtcdProcess:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- diagnostics -------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "etcd.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5.0) as resp:
            return resp.read().decode()

    def metric(self, name: str) -> float:
        """The value of an unlabelled Prometheus metric, e.g. etcd_debugging_mvcc_watcher_total."""
        for line in self.metrics_text().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


# -- throwaway PKI for TLS tests ---------------------------------------------


@dataclass(frozen=True)
class TestPKI:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path


def make_test_pki(directory: str | os.PathLike[str]) -> TestPKI:
    """Write a fresh CA and server/client certificates (ECDSA P-256) into directory."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=2)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("etcd-test-ca"))
        .issuer_name(name("etcd-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
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
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    server_cert, server_key = leaf("etcd-test-server", ExtendedKeyUsageOID.SERVER_AUTH, True)
    client_cert, client_key = leaf("etcd-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    files = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.pem": server_cert,
        "server-key.pem": server_key,
        "client.pem": client_cert,
        "client-key.pem": client_key,
    }
    for filename, data in files.items():
        path = out / filename
        path.write_bytes(data)
        path.chmod(0o600)
    return TestPKI(
        ca_file=out / "ca.pem",
        server_cert_file=out / "server.pem",
        server_key_file=out / "server-key.pem",
        client_cert_file=out / "client.pem",
        client_key_file=out / "client-key.pem",
    )
