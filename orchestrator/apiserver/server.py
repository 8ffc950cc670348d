"""Run the apiserver: a store, the watch cache, and the gRPC service over mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from certs.bundle import ClusterPKI
from orchestrator.api.pb import apiservice_pb2_grpc as pb_grpc
from orchestrator.apiserver.allocators import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDR,
    ServiceAllocator,
)
from orchestrator.apiserver.authn import Authenticator
from orchestrator.apiserver.authz import default_authorizer
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.registry import Registry
from orchestrator.apiserver.service import ApiService
from orchestrator.store.base import Store

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_concurrent_streams", 100_000),
]


@dataclass
class StoreConfig:
    kind: str = "sqlite"  # or "etcd"
    sqlite_path: Path | None = None
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_prefix: str = ""
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None


async def open_store(cfg: StoreConfig) -> Store:
    if cfg.kind == "sqlite":
        from orchestrator.store.sqlite import SqliteStore

        assert cfg.sqlite_path is not None
        return await SqliteStore.open(cfg.sqlite_path)
    if cfg.kind == "etcd":
        from orchestrator.store.etcd import EtcdStore

        return await EtcdStore.open(
            cfg.etcd_endpoints,
            prefix=cfg.etcd_prefix,
            ca_file=str(cfg.etcd_ca) if cfg.etcd_ca else None,
            cert_file=str(cfg.etcd_cert) if cfg.etcd_cert else None,
            key_file=str(cfg.etcd_key) if cfg.etcd_key else None,
        )
    raise ValueError(f'unknown store "{cfg.kind}": expected sqlite or etcd')


class ApiServer:
    """One apiserver. `start` binds and serves; `port` is the bound port."""

    def __init__(
        self,
        pki: ClusterPKI,
        store: Store,
        *,
        listen: str = "127.0.0.1:6443",
        token_listen: str | None = None,
        store_name: str = "sqlite",
        bookmark_interval: float = 30.0,
        watch_cache_size: int = 100_000,
        compact_every: float = 300.0,
        keep_revisions: int = 100_000,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
    ) -> None:
        self.pki = pki
        self.store = store
        self.listen = listen
        self.token_listen = token_listen
        self.cache = WatchCache(store, history=watch_cache_size)
        self.allocator = ServiceAllocator(
            store, self.cache, service_cidr=service_cidr, node_port_range=node_port_range
        )
        self.registry = Registry(store, self.cache, self.allocator)
        self.service = ApiService(
            self.registry,
            Authenticator(self.cache, pki.sa_public_pem()),
            default_authorizer(self.cache),
            store_name=store_name,
            bookmark_interval=bookmark_interval,
            pki=pki,
        )
        self._compact_every = compact_every
        self._keep_revisions = keep_revisions
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.token_port = 0

    def _credentials(self, *, client_certs: bool) -> grpc.ServerCredentials:
        serving = self.pki.apiserver()
        # Present leaf + CA so a joining node can pin the CA by its hash.
        return grpc.ssl_server_credentials(
            [(serving.key_pem, self.pki.apiserver_chain_pem())],
            root_certificates=self.pki.cluster_ca().cert_pem if client_certs else None,
            require_client_auth=client_certs,
        )

    async def start(self) -> None:
        await self.cache.start()
        await self.allocator.start()
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_ApiServicer_to_server(self.service, server)
        # The main port demands a certificate from the cluster CA: no
        # certificate, a foreign one or an expired one fails the handshake.
        # gRPC cannot make client certificates optional on one port, so callers
        # with only a bearer token (joining nodes, service accounts) use a
        # second, server-authenticated port where a token is mandatory.
        self.port = server.add_secure_port(self.listen, self._credentials(client_certs=True))
        if self.port == 0:
            raise OSError(f"could not listen on {self.listen}")
        if self.token_listen is not None:
            self.token_port = server.add_secure_port(
                self.token_listen, self._credentials(client_certs=False)
            )
            if self.token_port == 0:
                raise OSError(f"could not listen on {self.token_listen}")
        await server.start()
        self._server = server
        self._tasks.append(asyncio.create_task(self.service.run_bookmarks()))
        self._tasks.append(asyncio.create_task(self._compact_loop()))
        log.info(
            "apiserver listening on %s (port %d; token port %d)",
            self.listen,
            self.port,
            self.token_port,
        )

    async def _compact_loop(self) -> None:
        """Keep store history bounded, as kube-apiserver asks etcd to."""
        while True:
            await asyncio.sleep(self._compact_every)
            try:
                rev = await self.store.current_revision()
                if rev > self._keep_revisions:
                    await self.store.compact(rev - self._keep_revisions)
            except Exception:
                log.exception("compaction failed")

    async def stop(self, grace: float = 1.0) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.stop(grace)
        await self.service.proxy.close()
        await self.allocator.stop()
        await self.cache.stop()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
