"""The agent's own gRPC server: container logs, exec and resource usage
(Stats, from agent/stats.py) for the apiserver.

Mutual TLS both ways. The agent serves a certificate from the cluster CA
(signer kubernetes.io/kubelet-serving, for its node IP and name; see
certs/serving.py) and demands a client certificate from the same CA, and of
those accepts only the apiserver's agent-client identity
(CN orchestrator-apiserver-agent-client, O system:masters). Users and pods
never talk to an agent directly: they go through the apiserver, which
authorizes them (DESIGN.md section 1).

    server = AgentServer("unix:///run/docker.sock", ca_pem=..., cert_pem=..., key_pem=...)
    await server.start()          # server.port is the bound port
    server.update_certificate(cert_pem, key_pem)   # renewed: used from the next handshake
    await server.stop()

`start_agent_server(agent)` is the agent's way in: it obtains (or reuses)
the serving certificate, starts the server, and renews the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from agent.streaming import (
    ContainerStreams,
    DockerStreams,
    StreamError,
    aclose,
    bad_request,
    check_exec_start,
    check_logs_request,
    coalesce,
    pick_container,
    relay_exec,
    running,
)
from certs import pki, serving
from certs.bundle import APISERVER_AGENT_CLIENT_CN, MASTERS_GROUP
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import agent_pb2_grpc as apb_grpc
from orchestrator.client.client import ApiError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "0.0.0.0:10250"
# Sent as initial metadata once a call is accepted, so the apiserver can tell
# "the agent answered with an error" from "the agent could not be reached".
ANSWERED = (("orch-agent", "1"),)
# How long an exec caller has to send its `start` message.
START_TIMEOUT = 30.0
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 1000),
]


@functools.lru_cache(maxsize=64)
def _identity(pem: bytes) -> tuple[str, tuple[str, ...]]:
    cn, orgs = pki.identity_from_cert(x509.load_pem_x509_certificate(pem))
    return cn, tuple(orgs)


def apiserver_only(cn: str, groups: tuple[str, ...]) -> bool:
    return cn == APISERVER_AGENT_CLIENT_CN and MASTERS_GROUP in groups


class StatsProvider(Protocol):
    def snapshot(self) -> apb.StatsResponse: ...


class AgentService(apb_grpc.AgentServicer):
    def __init__(
        self,
        streams: ContainerStreams,
        *,
        allow: Callable[[str, tuple[str, ...]], bool] = apiserver_only,
        stats: StatsProvider | None = None,
    ) -> None:
        self.streams = streams
        self.allow = allow
        self.stats = stats

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        # TLS already checked the certificate against the cluster CA; here: whose.
        pems = context.auth_context().get("x509_pem_cert")
        cn, groups = _identity(pems[0]) if pems else ("", ())
        if not self.allow(cn, groups):
            who = f'"{cn}"' if cn else "an unauthenticated caller"
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{who} may not use the agent API: only the apiserver may (use orchctl logs/exec)",
            )
        await context.send_initial_metadata(ANSWERED)

    async def Logs(
        self, request: apb.LogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.LogChunk]:
        await self._authorize(context)
        try:
            target = check_logs_request(request)
            container = pick_container(
                target, await self.streams.find(target), previous=request.previous
            )
            chunks = self.streams.logs(
                container.id,
                follow=request.follow,
                tail=request.tail_lines if request.HasField("tail_lines") else None,
                since_seconds=request.since_seconds if request.HasField("since_seconds") else None,
                timestamps=request.timestamps,
            )
            pieces = coalesce(chunks)
            try:
                async for data in pieces:
                    yield apb.LogChunk(data=data)
            finally:
                await aclose(pieces)
        except StreamError as exc:
            await context.abort(exc.code, exc.message)

    async def Exec(
        self, request_iterator: AsyncIterator[apb.ExecInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.ExecOutput]:
        await self._authorize(context)
        try:
            try:
                first = await asyncio.wait_for(anext(request_iterator), START_TIMEOUT)
            except StopAsyncIteration:
                raise bad_request("the exec stream ended before its start message") from None
            except TimeoutError:
                raise bad_request(f"no start message within {START_TIMEOUT:.0f}s") from None
            if first.WhichOneof("input") != "start":
                raise bad_request("the first message of an exec stream must be start")
            start = first.start
            target = check_exec_start(start)
            container = running(target, await self.streams.find(target))
            process = await self.streams.exec(
                container.id,
                list(start.command),
                stdin=start.stdin,
                tty=start.tty,
                rows=start.rows,
                cols=start.cols,
            )
            relay = relay_exec(process, request_iterator, stdin=start.stdin)
            try:
                async for out in relay:
                    yield out
            finally:
                await aclose(relay)
        except StreamError as exc:
            await context.abort(exc.code, exc.message)

    async def Stats(
        self, request: apb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> apb.StatsResponse:
        await self._authorize(context)
        if self.stats is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "this agent does not collect resource usage"
            )
            raise AssertionError("unreachable")
        # Sampled in the background: answering costs nothing.
        return self.stats.snapshot()


class AgentServer:
    """The agent API on `listen`; `port` is the bound port after `start`."""

    def __init__(
        self,
        runtime_base_url: str,
        *,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        listen: str = DEFAULT_LISTEN,
        streams: ContainerStreams | None = None,
        allow: Callable[[str, tuple[str, ...]], bool] = apiserver_only,
        stats: StatsProvider | None = None,
    ) -> None:
        self.listen = listen
        self.streams: ContainerStreams = streams or DockerStreams(runtime_base_url)
        self.service = AgentService(self.streams, allow=allow, stats=stats)
        self._ca_pem = ca_pem
        self._pair = (cert_pem, key_pem)
        self._fresh = False
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def _config(self) -> Any:
        cert_pem, key_pem = self._pair
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=self._ca_pem
        )

    def _fetch(self) -> Any:
        # Asked by gRPC before every handshake: None keeps the current certificate.
        if not self._fresh:
            return None
        self._fresh = False
        return self._config()

    def update_certificate(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve this certificate from the next TLS handshake on."""
        self._pair = (cert_pem, key_pem)
        self._fresh = True

    async def start(self) -> None:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        apb_grpc.add_AgentServicer_to_server(self.service, server)
        creds = grpc.dynamic_ssl_server_credentials(
            self._config(), self._fetch, require_client_authentication=True
        )
        self.port = server.add_secure_port(self.listen, creds)
        if self.port == 0:
            raise OSError(f"the agent API could not listen on {self.listen}")
        await server.start()
        self._server = server
        log.info("agent API (logs, exec) listening on %s (port %d)", self.listen, self.port)

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.streams.close()


# -- the serving certificate ----------------------------------------------------------


@dataclass(frozen=True)
class ServingPaths:
    cert: Path
    key: Path

    @classmethod
    def under(cls, data_dir: Path) -> ServingPaths:
        return cls(data_dir / "pki" / "serving.crt", data_dir / "pki" / "serving.key")


def serving_cert_usable(
    cert_pem: bytes, ca_pem: bytes, ips: list[str], dns: list[str], *, fraction: float = 0.8
) -> bool:
    """Issued by this CA, naming every address wanted, before `fraction` of its life."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    if not {str(ipaddress.ip_address(i)) for i in ips} <= have_ips or not set(dns) <= have_dns:
        return False
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return datetime.now(UTC) < start + (end - start) * fraction


async def request_serving_certificate(
    client: Any, node_name: str, ips: list[str], dns: list[str], *, timeout: float = 60.0
) -> tuple[bytes, bytes]:
    """Ask the control plane (as the node) to sign a serving certificate.
    Returns (certificate PEM, private key PEM); the key never leaves the node."""
    csr_pem, key_pem = serving.make_serving_csr(node_name, ips, dns)
    csr = kind_info("CertificateSigningRequest").new()
    csr.metadata.name = f"node-serving-{node_name}-{secrets.token_hex(4)}"
    csr.spec.request = csr_pem
    csr.spec.signer_name = serving.KUBELET_SERVING_SIGNER
    csr.spec.usages.extend(serving.SERVING_USAGES)
    created = await client.create(csr)
    name = created.metadata.name
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = await client.get("CertificateSigningRequest", name)
        for cond in current.status.conditions:
            if cond.type in ("Denied", "Failed"):
                raise RuntimeError(f"serving certificate request {name} was denied: {cond.message}")
        if current.status.certificate:
            return bytes(current.status.certificate), key_pem
        if loop.time() > deadline:
            raise TimeoutError(
                f"serving certificate request {name} was not signed in {timeout:.0f}s"
            )
        await asyncio.sleep(0.2)


async def ensure_serving_certificate(
    client: Any,
    node_name: str,
    ips: list[str],
    dns: list[str],
    ca_pem: bytes,
    paths: ServingPaths,
    *,
    force: bool = False,
) -> tuple[bytes, bytes]:
    """The certificate on disk if still good, else a newly signed one (written)."""
    if not force and paths.cert.exists() and paths.key.exists():
        cert_pem, key_pem = paths.cert.read_bytes(), paths.key.read_bytes()
        if serving_cert_usable(cert_pem, ca_pem, ips, dns):
            return cert_pem, key_pem
    cert_pem, key_pem = await request_serving_certificate(client, node_name, ips, dns)
    pki.write_file(paths.key, key_pem, 0o600)
    pki.write_file(paths.cert, cert_pem, 0o644)
    return cert_pem, key_pem


class AgentServerRunner:
    """Gets the serving certificate (retrying until the control plane signs
    it), runs the AgentServer, and renews the certificate before it expires.
    Never blocks or fails the agent's start: logs and exec simply come up
    once the certificate is there."""

    def __init__(
        self,
        client: Any,
        node_name: str,
        node_ip: str,
        docker_host: str,
        ca_pem: bytes,
        data_dir: Path,
        *,
        port: int = 10250,
        listen_host: str = "0.0.0.0",
        check_interval: float = 3600.0,
        stats: StatsProvider | None = None,
    ) -> None:
        self.stats = stats
        self.client = client
        self.node_name = node_name
        self.ips = [node_ip]
        self.dns = [node_name]
        self.docker_host = docker_host
        self.ca_pem = ca_pem
        self.paths = ServingPaths.under(data_dir)
        self.listen = f"{listen_host}:{port}"
        self.check_interval = check_interval
        self.server: AgentServer | None = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agent-api")

    async def _certificate(self) -> tuple[bytes, bytes]:
        delay = 1.0
        while True:
            try:
                return await ensure_serving_certificate(
                    self.client, self.node_name, self.ips, self.dns, self.ca_pem, self.paths
                )
            except (ApiError, RuntimeError, TimeoutError, OSError) as exc:
                log.warning("no serving certificate for the agent API yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _run(self) -> None:
        cert_pem, key_pem = await self._certificate()
        server = AgentServer(
            self.docker_host,
            ca_pem=self.ca_pem,
            cert_pem=cert_pem,
            key_pem=key_pem,
            listen=self.listen,
            stats=self.stats,
        )
        delay = 1.0
        while True:
            try:
                await server.start()
                break
            except (OSError, RuntimeError) as exc:  # e.g. the port is still taken
                log.error("the agent API cannot start (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        self.server = server
        self.ready.set()
        while True:
            await asyncio.sleep(self.check_interval)
            if serving_cert_usable(cert_pem, self.ca_pem, self.ips, self.dns):
                continue
            cert_pem, key_pem = await self._certificate()
            server.update_certificate(cert_pem, key_pem)
            log.info("agent API serving certificate renewed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.server is not None:
            await self.server.stop()
            self.server = None


async def start_agent_server(agent: Any) -> AgentServerRunner:
    """For agent/agent.py: start the agent API in the background; `await
    runner.stop()` on shutdown. Reads agent.client, agent.node_name,
    agent.connection.ca_pem, agent.config (data_dir, node_ip, docker_host,
    listen_port) and agent.stats (the usage collector, if any)."""
    cfg = agent.config
    runner = AgentServerRunner(
        agent.client,
        agent.node_name,
        cfg.node_ip,
        cfg.docker_host,
        agent.connection.ca_pem,
        Path(cfg.data_dir),
        port=cfg.listen_port,
        stats=getattr(agent, "stats", None),
    )
    runner.start()
    return runner
