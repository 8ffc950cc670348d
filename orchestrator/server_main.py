"""`orchestrator`: initialise and run the control plane.

orchestrator init --data-dir DIR [--advertise-address A] [--port 6443]
                  [--store sqlite|etcd --etcd-endpoints URL,...]
orchestrator serve --data-dir DIR [--listen ADDR:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certs import bundle, tokens
from orchestrator import eventloop
from orchestrator.api import codec
from orchestrator.api.duration import parse_duration
from orchestrator.api.kinds import kind_info
from orchestrator.apiserver.allocators import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.errors import AlreadyExists, Invalid
from orchestrator.apiserver.registry import Registry, UserInfo
from orchestrator.apiserver.server import ApiServer, StoreConfig, open_store
from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile, Connection
from orchestrator.components import run_component

if TYPE_CHECKING:
    from orchestrator.controllers.manager import ControllerOptions

log = logging.getLogger("orchestrator")
CLUSTER_CONFIG = "cluster.json"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CLUSTER_DNS_IP = "10.96.0.10"
INIT_USER = UserInfo("system:orchestrator-init", ("system:masters",))


@dataclass
class ClusterConfig:
    """What `init` decided, read back by `serve`: DIR/cluster.json."""

    name: str = "orchestrator"
    advertise_address: str = "127.0.0.1"
    port: int = 6443
    store: str = "sqlite"
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_prefix: str = ""

    @property
    def server(self) -> str:
        return f"{self.advertise_address}:{self.port}"

    def store_config(self, data_dir: Path, pki: bundle.ClusterPKI) -> StoreConfig:
        if self.store == "sqlite":
            return StoreConfig(kind="sqlite", sqlite_path=data_dir / "store" / "state.db")
        return StoreConfig(
            kind="etcd",
            etcd_endpoints=self.etcd_endpoints,
            etcd_prefix=self.etcd_prefix,
            etcd_ca=pki.etcd_ca_crt if self.etcd_uses_tls else None,
            etcd_cert=pki.etcd_client_crt if self.etcd_uses_tls else None,
            etcd_key=pki.etcd_client_key if self.etcd_uses_tls else None,
        )

    @property
    def etcd_uses_tls(self) -> bool:
        return any(e.startswith("https://") for e in self.etcd_endpoints)

    @classmethod
    def load(cls, data_dir: Path) -> ClusterConfig:
        path = data_dir / CLUSTER_CONFIG
        if not path.exists():
            raise SystemExit(
                f"error: {path} not found: run `orchestrator init --data-dir {data_dir}` first"
            )
        return cls(**json.loads(path.read_text()))

    def save(self, data_dir: Path) -> None:
        (data_dir / CLUSTER_CONFIG).write_text(json.dumps(asdict(self), indent=2) + "\n")


def token_address(listen: str) -> str:
    """The token port is the main port + 1 (6444 by default)."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}"


def write_admin_conf(data_dir: Path, cfg: ClusterConfig, pki: bundle.ClusterPKI) -> Path:
    return _write_conf(data_dir / "admin.conf", "admin", cfg, pki, pki.admin())


def write_component_confs(data_dir: Path, cfg: ClusterConfig, pki: bundle.ClusterPKI) -> None:
    """scheduler.conf and controller-manager.conf, as kubeadm writes them, for
    running those two as processes of their own (on other hosts, or several)."""
    _write_conf(data_dir / "scheduler.conf", "system:kube-scheduler", cfg, pki, pki.scheduler())
    _write_conf(
        data_dir / "controller-manager.conf",
        "system:kube-controller-manager",
        cfg,
        pki,
        pki.controller_manager(),
    )


def _write_conf(
    path: Path, user: str, cfg: ClusterConfig, pki: bundle.ClusterPKI, keypair: Any
) -> Path:
    conf = ConfigFile.load(path, missing_ok=True)
    conf.add_context(
        name=f"{user}@{cfg.name}",
        cluster=cfg.name,
        server=cfg.server,
        ca_pem=pki.cluster_ca().cert_pem,
        user=f"{user}@{cfg.name}",
        cert_pem=keypair.cert_pem,
        key_pem=keypair.key_pem,
    )
    conf.save()
    path.chmod(0o600)
    return path


def admin_connection(
    data_dir: Path, cfg: ClusterConfig, pki: bundle.ClusterPKI, *, server: str | None = None
) -> Connection:
    """The controller manager's connection (its own identity, not the admin's)."""
    return component_connection(cfg, pki, pki.controller_manager(), server=server)


def component_connection(
    cfg: ClusterConfig, pki: bundle.ClusterPKI, keypair: Any, *, server: str | None = None
) -> Connection:
    return Connection(
        server=server or f"127.0.0.1:{cfg.port}",
        ca_pem=pki.cluster_ca().cert_pem,
        cert_pem=keypair.cert_pem,
        key_pem=keypair.key_pem,
    )


async def seed_cluster(registry: Registry, token: tokens.BootstrapToken | None) -> None:
    """System namespaces and the first bootstrap token: what kubeadm init writes."""
    ns_info = kind_info("Namespace")
    for name in SYSTEM_NAMESPACES:
        ns = ns_info.new()
        ns.metadata.name = name  # type: ignore[attr-defined]
        with contextlib.suppress(AlreadyExists):
            await registry.create(ns, INIT_USER)
    # The cluster DNS address is each node's own DNS server (NodeLocal DNSCache's
    # design): this Service only reserves 10.96.0.10 and names it; the label
    # tells the service proxy (as kube-proxy) to leave it to another proxy.
    dns = codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {
                    "k8s-app": "kube-dns",
                    "service.kubernetes.io/service-proxy-name": "orch-node-local-dns",
                },
            },
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }
    )
    if registry.cache.get(kind_info("Service"), "kube-system", "kube-dns") is None:
        try:
            await registry.create(dns, INIT_USER)
        except AlreadyExists:
            pass
        except Invalid as exc:  # someone else holds the address: pods' DNS will not work
            log.error("cannot reserve the cluster DNS address %s: %s", CLUSTER_DNS_IP, exc)
    if token is not None:
        secret = kind_info("Secret").new()
        secret.metadata.name = token.secret_name  # type: ignore[attr-defined]
        secret.metadata.namespace = "kube-system"  # type: ignore[attr-defined]
        secret.type = "bootstrap.kubernetes.io/token"  # type: ignore[attr-defined]
        for key, value in token.to_secret_data().items():
            secret.data[key] = value  # type: ignore[attr-defined]
        await registry.create(secret, INIT_USER)


async def _init_store(
    cfg: ClusterConfig, data_dir: Path, pki: bundle.ClusterPKI, token: tokens.BootstrapToken | None
) -> None:
    store = await open_store(cfg.store_config(data_dir, pki))
    cache = WatchCache(store)
    await cache.start()
    try:
        await seed_cluster(Registry(store, cache), token)
    finally:
        await cache.stop()
        await store.close()


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = ClusterConfig(
        name=args.cluster_name,
        advertise_address=args.advertise_address,
        port=args.port,
        store=args.store,
        etcd_endpoints=[e for e in (args.etcd_endpoints or "").split(",") if e],
        etcd_prefix=args.etcd_prefix,
    )
    if cfg.store == "etcd" and not cfg.etcd_endpoints:
        print("error: --store etcd needs --etcd-endpoints", file=sys.stderr)
        return 2
    pki = bundle.create_cluster_pki(
        data_dir, advertise_addresses=[cfg.advertise_address, *args.apiserver_cert_extra_sans]
    )
    cfg.save(data_dir)
    conf = write_admin_conf(data_dir, cfg, pki)
    write_component_confs(data_dir, cfg, pki)
    token = tokens.new_bootstrap_token(description="created by orchestrator init")
    asyncio.run(_init_store(cfg, data_dir, pki, token))
    print(f"Control plane initialised in {data_dir} (store: {cfg.store}).")
    print(f"Admin credentials: {conf}  (export ORCHCONFIG={conf})")
    print(f"Start it with: orchestrator serve --data-dir {data_dir}")
    print("Then join nodes with:")
    print(f"  orch-agent join {cfg.server} --token {token.token} --ca-hash {pki.ca_hash()}")
    return 0


class _WithOwnClient:
    """A client-driven component (the scheduler) that opens its own connection
    for each term, so a new leader starts from fresh caches."""

    def __init__(self, conn: Connection, make: Callable[[Client], Any]) -> None:
        self.conn = conn
        self.make = make
        self.client: Client | None = None
        self.inner: Any = None

    async def start(self) -> None:
        self.client = Client(self.conn)
        self.inner = self.make(self.client)
        await self.inner.start()

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
        if self.client is not None:
            await self.client.close()


def scheduler_component(conn: Connection, config_path: str = "") -> _WithOwnClient:
    from orchestrator.scheduler.profiles import load_config
    from orchestrator.scheduler.scheduler import Scheduler

    config = load_config(Path(config_path)) if config_path else None
    return _WithOwnClient(
        conn,
        lambda client: Scheduler.from_config(client, config) if config else Scheduler(client),
    )


async def serve(
    data_dir: Path,
    listen: str | None,
    *,
    bookmark_interval: float = 30.0,
    watch_cache_size: int = 100_000,
    controllers: tuple[str, ...] = ("*",),
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
    run_scheduler: bool = True,
    scheduler_config: str = "",
    leader_elect: bool = True,
    controller_options: ControllerOptions | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """The whole control plane in one process: apiserver, controller manager and
    scheduler. With leader election (the default) several such processes over
    one etcd serve the API together while one controller manager and one
    scheduler act."""
    from orchestrator.controllers.manager import ControllerManager, select_controllers

    cfg = ClusterConfig.load(data_dir)
    pki = bundle.load_cluster_pki(data_dir)
    store = await open_store(cfg.store_config(data_dir, pki))
    listen = listen or f"0.0.0.0:{cfg.port}"
    server = ApiServer(
        pki,
        store,
        listen=listen,
        token_listen=token_address(listen),
        store_name=cfg.store,
        bookmark_interval=bookmark_interval,
        watch_cache_size=watch_cache_size,
        service_cidr=service_cidr,
        node_port_range=node_port_range,
    )
    await server.start()
    await seed_cluster(server.registry, None)
    local = f"127.0.0.1:{server.port}"
    cm_conn = admin_connection(data_dir, cfg, pki, server=local)
    sched_conn = component_connection(cfg, pki, pki.scheduler(), server=local)
    stop = stop or asyncio.Event()
    clients: list[Client] = []

    def election_client(conn: Connection) -> Client | None:
        if not leader_elect:
            return None
        clients.append(Client(conn))
        return clients[-1]

    loops = []
    # With no controllers chosen this process must not take the controller
    # manager's Lease either: a standalone controller-manager acts instead.
    if select_controllers(controllers):
        loops.append(
            run_component(
                "controller-manager",
                lambda: ControllerManager(cm_conn, pki, controllers, controller_options),
                stop,
                client=election_client(cm_conn),
                lease_name="kube-controller-manager",
            )
        )
    if run_scheduler:
        loops.append(
            run_component(
                "scheduler",
                lambda: scheduler_component(sched_conn, scheduler_config),
                stop,
                client=election_client(sched_conn),
                lease_name="kube-scheduler",
            )
        )
    tasks = [asyncio.create_task(loop) for loop in loops]
    log.info("control plane serving on port %d with the %s store", server.port, cfg.store)
    if ready is not None:
        ready.set()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
        await server.stop()
        await store.close()


def cmd_serve(args: argparse.Namespace) -> int:
    from orchestrator.controllers.manager import UnknownControllerError, select_controllers

    try:
        select_controllers(args.controllers.split(","))
    except UnknownControllerError as exc:
        print(f"error: --controllers: {exc}", file=sys.stderr)
        return 2
    options = _controller_options(args)
    if options is None:
        return 2
    _setup_logging(args.verbose)
    eventloop.run(
        serve(
            Path(args.data_dir).resolve(),
            args.listen,
            bookmark_interval=args.bookmark_interval,
            watch_cache_size=args.watch_cache_size,
            controllers=tuple(args.controllers.split(",")),
            service_cidr=args.service_cluster_ip_range,
            node_port_range=args.service_node_port_range,
            run_scheduler=args.scheduler,
            scheduler_config=args.scheduler_config,
            leader_elect=args.leader_elect,
            controller_options=options,
        )
    )
    return 0


def _controller_options(args: argparse.Namespace) -> ControllerOptions | None:
    """ControllerOptions from the flags; None (after saying why) when invalid."""
    from orchestrator.controllers.manager import ControllerOptions

    try:
        return ControllerOptions(
            node_monitor_grace_period=args.node_monitor_grace_period,
            node_startup_grace_period=args.node_startup_grace_period,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _add_controller_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node-monitor-grace-period",
        type=_duration,
        default=50.0,
        metavar="DURATION",
        help="how long a node may be silent before it is marked Unknown and its pods "
        "are evicted after their tolerationSeconds (default 50s)",
    )
    p.add_argument(
        "--node-startup-grace-period",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="the same for a node that has never reported Ready (default 60s)",
    )


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def run_alone(
    name: str,
    make: Callable[[], Any],
    conn: Connection,
    *,
    lease_name: str,
    leader_elect: bool,
    stop: asyncio.Event | None = None,
) -> None:
    """One component as a process of its own, until SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    client = Client(conn) if leader_elect else None
    try:
        await run_component(name, make, stop, client=client, lease_name=lease_name)
    finally:
        if client is not None:
            await client.close()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if not verbose else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _component_conn(kubeconfig: str) -> Connection:
    return ConfigFile.load(Path(kubeconfig)).connection()


def cmd_scheduler(args: argparse.Namespace) -> int:
    from orchestrator.scheduler.profiles import load_config

    if args.config:
        try:
            load_config(Path(args.config))
        except Exception as exc:  # the file's own error names the field
            print(f"error: --config {args.config}: {exc}", file=sys.stderr)
            return 2
    _setup_logging(args.verbose)
    conn = _component_conn(args.kubeconfig)
    eventloop.run(
        run_alone(
            "scheduler",
            lambda: scheduler_component(conn, args.config),
            conn,
            lease_name="kube-scheduler",
            leader_elect=args.leader_elect,
        )
    )
    return 0


def cmd_controller_manager(args: argparse.Namespace) -> int:
    from orchestrator.controllers.manager import (
        ControllerManager,
        UnknownControllerError,
        select_controllers,
    )

    controllers = tuple(args.controllers.split(","))
    try:
        select_controllers(controllers)
    except UnknownControllerError as exc:
        print(f"error: --controllers: {exc}", file=sys.stderr)
        return 2
    options = _controller_options(args)
    if options is None:
        return 2
    _setup_logging(args.verbose)
    # The CSR signer needs the cluster CA's key: it lives in the data dir.
    pki = bundle.load_cluster_pki(Path(args.data_dir).resolve())
    conn = _component_conn(args.kubeconfig)
    eventloop.run(
        run_alone(
            "controller-manager",
            lambda: ControllerManager(conn, pki, controllers, options),
            conn,
            lease_name="kube-controller-manager",
            leader_elect=args.leader_elect,
        )
    )
    return 0


def _ipv4_network(text: str) -> str:
    try:
        net = ipaddress.ip_network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR: {exc}") from None
    if net.version != 4 or net.num_addresses < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an IPv4 range of /29 or wider")
    return str(net)


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        lo = hi = -1
    if not sep or not 0 < lo <= hi <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW-HIGH, e.g. 30000-32767")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create certificates, config and the store")
    init.add_argument("--data-dir", required=True)
    init.add_argument("--advertise-address", default="127.0.0.1")
    init.add_argument("--apiserver-cert-extra-sans", action="append", default=[])
    init.add_argument("--port", type=int, default=6443)
    init.add_argument("--cluster-name", default="orchestrator")
    init.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    init.add_argument("--etcd-endpoints", default="")
    init.add_argument("--etcd-prefix", default="")
    init.set_defaults(func=cmd_init)
    srv = sub.add_parser("serve", help="run the control plane")
    srv.add_argument("--data-dir", required=True)
    srv.add_argument("--listen", default=None, help="address:port (default 0.0.0.0:<port>)")
    srv.add_argument(
        "--bookmark-interval",
        type=float,
        default=30.0,
        help="seconds between watch bookmarks (default 30)",
    )
    srv.add_argument(
        "--watch-cache-size",
        type=int,
        default=100_000,
        help="events kept for watches that resume from a resourceVersion",
    )
    srv.add_argument(
        "--controllers",
        default="*",
        help="controllers to run: '*' for all, NAME to add one, -NAME to leave one out "
        "(e.g. '*,-deployment')",
    )
    srv.add_argument(
        "--service-cluster-ip-range",
        default=DEFAULT_SERVICE_CIDR,
        type=_ipv4_network,
        metavar="CIDR",
        help=f"where Service ClusterIPs come from (default {DEFAULT_SERVICE_CIDR})",
    )
    srv.add_argument(
        "--service-node-port-range",
        default=DEFAULT_NODE_PORT_RANGE,
        type=_port_range,
        metavar="LOW-HIGH",
        help="where NodePorts come from (default {}-{})".format(*DEFAULT_NODE_PORT_RANGE),
    )
    srv.add_argument(
        "--scheduler",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the scheduler in this process (default: yes)",
    )
    srv.add_argument(
        "--scheduler-config",
        default="",
        metavar="FILE",
        help="scheduler profiles (YAML, KubeSchedulerConfiguration-like)",
    )
    srv.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="act only while holding the kube-system Leases, so several control-plane "
        "processes can run over one etcd (default: yes)",
    )
    _add_controller_flags(srv)
    srv.add_argument("-v", "--verbose", action="store_true")
    srv.set_defaults(func=cmd_serve)

    sch = sub.add_parser(
        "scheduler",
        help="run the scheduler alone (serve --no-scheduler elsewhere)",
        description="The scheduler as a process of its own. With leader election (the "
        "default) several may run; the holder of kube-system/kube-scheduler acts.",
    )
    sch.add_argument("--kubeconfig", required=True, help="e.g. DATA_DIR/scheduler.conf")
    sch.add_argument("--config", default="", metavar="FILE", help="scheduler profiles (YAML)")
    sch.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    sch.add_argument("-v", "--verbose", action="store_true")
    sch.set_defaults(func=cmd_scheduler)

    cm = sub.add_parser(
        "controller-manager",
        help="run the controllers alone (serve --controllers '' elsewhere)",
        description="The controller manager as a process of its own. With leader "
        "election (the default) several may run; the holder of "
        "kube-system/kube-controller-manager acts.",
    )
    cm.add_argument("--kubeconfig", required=True, help="e.g. DATA_DIR/controller-manager.conf")
    cm.add_argument(
        "--data-dir", required=True, help="the control plane's data dir (CA key for signing)"
    )
    cm.add_argument("--controllers", default="*", help="as for serve")
    cm.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    _add_controller_flags(cm)
    cm.add_argument("-v", "--verbose", action="store_true")
    cm.set_defaults(func=cmd_controller_manager)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
