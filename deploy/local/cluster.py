"""`up`, `down`, `list` and `load_image` for a local cluster.

    up("dev", nodes=3)           # idempotent: a second call repairs what is missing
    down("dev")                  # removes exactly what up recorded, and sweeps oc-dev-*
    list_clusters()
    load_image("dev", "myapp:1.0")

Every step of `up` is an "ensure": it checks what exists and makes only what is
missing, recording each namespace, link, directory and process in the state
file before moving on. The control plane and the agents run as processes
(`orchestrator init|serve`, `orch-agent join|run`), exactly as on real hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from deploy.local import dockerd, images, netns, procs, registry
from deploy.local.layout import (
    DEFAULT_SUBNET,
    RUN_ROOT,
    STATE_ROOT,
    Layout,
    LayoutError,
    NodeLayout,
    check_name,
    check_nodes,
    check_subnet,
    choose_subnet,
    owns_netns,
)
from deploy.local.progress import Reporter
from deploy.local.state import (
    ClusterState,
    ProcessRecord,
    StateError,
    cluster_lock,
    list_states,
    load_state,
)

T = TypeVar("T")

DEFAULT_NAME = "local"
DEFAULT_NODES = 3
JOIN_TOKEN_TTL = timedelta(hours=1)
_REQUIRED_TOOLS = ("ip", "nsenter", "sysctl", "umount", "dockerd", "containerd")


class ClusterError(Exception):
    """Something a person must act on; the message says what."""


@dataclass
class NodeStatus:
    name: str
    ip: str
    registered: bool = False
    ready: bool = False
    error: str = ""
    log: str = ""


@dataclass
class UpResult:
    state: ClusterState
    created: bool
    changed: list[str] = field(default_factory=list)
    nodes: list[NodeStatus] = field(default_factory=list)
    config_path: str = ""

    @property
    def failed(self) -> list[NodeStatus]:
        return [n for n in self.nodes if n.error]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def layout(self) -> Layout:
        return self.state.layout


@dataclass
class ClusterSummary:
    name: str
    nodes: int
    status: str
    api_server: str
    subnet: str


# -- checks ------------------------------------------------------------------------------


def missing_prerequisites() -> list[str]:
    """What this host lacks for a local cluster, as messages (empty: all there)."""
    out = []
    if os.geteuid() != 0:
        out.append("a local cluster needs root (network namespaces, dockerd)")
    for tool in _REQUIRED_TOOLS:
        if shutil.which(tool, path=procs.clean_env()["PATH"]) is None:
            pkg = {
                "dockerd": "docker.io",
                "containerd": "containerd",
                "nsenter": "util-linux",
                "sysctl": "procps",
                "umount": "mount",
            }
            out.append(f"{tool} is not installed (Debian package {pkg.get(tool, 'iproute2')})")
    if not Path(registry.REGISTRY_BIN).exists():
        out.append(f"{registry.REGISTRY_BIN} is missing (Debian package docker-registry)")
    if not images.BUSYBOX.exists():
        out.append(f"{images.BUSYBOX} is missing (Debian package busybox-static)")
    return out


def _require_prerequisites() -> None:
    missing = missing_prerequisites()
    if missing:
        raise ClusterError("; ".join(missing))


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# -- the control plane's API, as a client ----------------------------------------------


def admin_connection(layout: Layout) -> Any:
    from orchestrator.client.config import ConfigFile

    conn = ConfigFile.load(layout.admin_conf).connection()
    return conn


async def _api_version(conn: Any) -> str:
    from orchestrator.client.client import Client

    async with Client(conn, timeout=3.0) as client:
        v = await client.version()
        return str(v.version)


async def _create_join_token(conn: Any, name: str) -> str:
    """A bootstrap token for the nodes, written as `orchctl token create` writes one."""
    from certs import tokens
    from orchestrator.api.kinds import kind_info
    from orchestrator.client.client import Client

    token = tokens.new_bootstrap_token(JOIN_TOKEN_TTL, f"orch-local {name}: node join")
    secret = kind_info("Secret").new()
    secret.metadata.name = token.secret_name  # type: ignore[attr-defined]
    secret.metadata.namespace = "kube-system"  # type: ignore[attr-defined]
    secret.type = tokens.SECRET_TYPE  # type: ignore[attr-defined]
    for key, value in token.to_secret_data().items():
        secret.data[key] = value  # type: ignore[attr-defined]
    async with Client(conn, timeout=10.0) as client:
        await client.create(secret)
    return token.token


def _ca_hash(ca_pem: bytes) -> str:
    from cryptography import x509

    from certs.pki import spki_sha256

    return spki_sha256(x509.load_pem_x509_certificate(ca_pem))


async def _node_conditions(conn: Any) -> dict[str, bool]:
    """Registered node names -> whether their Ready condition is True."""
    from orchestrator.client.client import Client

    async with Client(conn, timeout=5.0) as client:
        listing = await client.list("Node")
    out = {}
    for node in listing.items:
        ready = any(
            c.type == "Ready" and c.status == "True" for c in getattr(node.status, "conditions", [])
        )
        out[str(node.metadata.name)] = ready
    return out


# -- up ------------------------------------------------------------------------------------


class _Up:
    def __init__(
        self,
        state: ClusterState,
        *,
        created: bool,
        reporter: Reporter,
        config_path: Path,
        wait_for_nodes: bool,
        timeout: float,
    ) -> None:
        self.state = state
        self.layout = state.layout
        self.reporter = reporter
        self.config_path = config_path
        self.wait_for_nodes = wait_for_nodes
        self.timeout = timeout
        self.result = UpResult(state=state, created=created, config_path=str(config_path))
        self.fresh_netns: set[str] = set()
        self._lock = threading.RLock()

    def save(self) -> None:
        with self._lock:
            self.state.save()

    def record(self, attr: str, value: str) -> None:
        """Note something made, on disk before making it (nodes come up in threads)."""
        with self._lock:
            self.state.add_unique(attr, value)
            self.state.save()

    def changed(self, what: str) -> None:
        with self._lock:
            self.result.changed.append(what)

    # -- pieces ------------------------------------------------------------------------

    def ensure_dirs(self) -> None:
        lay = self.layout
        for d in (lay.state_dir, lay.run_dir):
            self.record("dirs", str(d))
            self.record("mount_roots", str(d))
        paths = [lay.state_dir, lay.run_dir, lay.registry_dir / "storage"]
        for node in lay.all_nodes():
            paths += [node.dir, node.run_dir]
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
        lay.state_dir.chmod(0o700)

    def ensure_netns(self, name: str) -> bool:
        self.record("namespaces", name)
        if netns.add(name):
            self.fresh_netns.add(name)
            self.changed(f"namespace {name}")
            return True
        return False

    def ensure_lan(self) -> None:
        lay = self.layout
        self.ensure_netns(lay.lan_netns)
        netns.add_bridge(lay.bridge, lay.lan_netns)
        netns.ensure_addr(lay.cidr(lay.lan_ip), lay.bridge, lay.lan_netns)
        netns.set_up(lay.bridge, lay.lan_netns)
        # The host's way in: a veth from the root namespace onto the LAN bridge, so
        # orchctl on the host reaches the apiserver without any forwarding or rule here.
        self.record("links", lay.host_link)
        if not netns.link_exists(lay.host_link):
            if netns.link_exists("host", lay.lan_netns):
                netns.delete_link("host", lay.lan_netns)
            netns.add_veth(lay.host_link, None, "host", lay.lan_netns)
            self.changed(f"link {lay.host_link}")
        netns.set_master("host", lay.bridge, lay.lan_netns)
        netns.set_up("host", lay.lan_netns)
        netns.ensure_addr(lay.cidr(lay.host_ip), lay.host_link)
        netns.set_up(lay.host_link)

    def attach(self, ns: str, lan_port: str, ip: str) -> None:
        """A namespace on the LAN: eth0 inside, lan_port on the bridge."""
        lay = self.layout
        self.ensure_netns(ns)
        if not netns.link_exists("eth0", ns):
            if netns.link_exists(lan_port, lay.lan_netns):
                netns.delete_link(lan_port, lay.lan_netns)
            netns.add_veth("eth0", ns, lan_port, lay.lan_netns)
        netns.set_master(lan_port, lay.bridge, lay.lan_netns)
        netns.set_up(lan_port, lay.lan_netns)
        netns.ensure_addr(lay.cidr(ip), "eth0", ns)
        netns.set_up("eth0", ns)

    def ensure_process(
        self,
        role: str,
        argv: list[str],
        log: Path,
        ns: str,
        *,
        healthy: Callable[[], bool] | None = None,
        record_argv: list[str] | None = None,
    ) -> ProcessRecord:
        """Start role's process unless the recorded one still runs (in a namespace that
        was not just recreated, and healthy if a check is given)."""
        rec = self.state.processes.get(role)
        if rec is not None and procs.is_alive(rec):
            if ns not in self.fresh_netns and (healthy is None or healthy()):
                return rec
            procs.stop(rec)
        rec = procs.start(role, argv, log, netns_path=netns.path(ns), netns=ns, shown=record_argv)
        with self._lock:
            self.state.record_process(rec)
            self.state.save()
        self.changed(f"process {role}")
        return rec

    def ensure_registry(self) -> None:
        lay = self.layout
        lay.registry_config.write_text(
            registry.render_config(lay.registry_dir / "storage", lay.registry)
        )
        rec = self.ensure_process(
            "registry",
            registry.argv(lay.registry_config),
            lay.registry_log,
            lay.lan_netns,
            healthy=lambda: registry.answers(lay.registry),
        )
        if not registry.wait_ready(lay.registry, 20.0, alive=lambda: procs.is_alive(rec)):
            raise ClusterError(
                f"the registry at {lay.registry} did not come up; see {lay.registry_log}:\n"
                + procs.log_tail(lay.registry_log)
            )

    def ensure_control_plane(self) -> None:
        lay = self.layout
        self.attach(lay.cp_netns, "cp", lay.cp_ip)
        if not (lay.cp_dir / "cluster.json").exists():
            argv = [
                *procs.python_module("orchestrator.server_main"),
                "init",
                "--data-dir",
                str(lay.cp_dir),
                "--advertise-address",
                lay.cp_ip,
                "--cluster-name",
                lay.name,
            ]
            with lay.cp_log.open("ab") as log:
                out = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=procs.clean_env(),
                    timeout=120,
                    check=False,
                )
            if out.returncode != 0:
                raise ClusterError(
                    f"orchestrator init failed; see {lay.cp_log}:\n" + procs.log_tail(lay.cp_log)
                )
            self.changed("control plane initialised")
        conn = admin_connection(lay)
        # As kubeadm lays it out: the apiserver, the controller manager and the
        # scheduler as processes of their own (the last two elect a leader, so
        # more replicas can be added; see add_controller_manager).
        rec = self.ensure_process(
            "apiserver",
            [
                *procs.python_module("orchestrator.server_main"),
                "serve",
                "--data-dir",
                str(lay.cp_dir),
                "--controllers",
                "",
                "--no-scheduler",
            ],
            lay.cp_log,
            lay.cp_netns,
        )
        deadline = time.monotonic() + 60.0
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not procs.is_alive(rec):
                raise ClusterError(
                    f"orchestrator serve exited; see {lay.cp_log}:\n" + procs.log_tail(lay.cp_log)
                )
            try:
                _run_async(lambda: _api_version(conn))
                break
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        else:
            raise ClusterError(
                f"the apiserver at {lay.api_server} did not answer in 60s ({last}); "
                f"see {lay.cp_log}"
            )
        for role in CONTROL_PLANE_COMPONENTS:
            self.ensure_process(
                role, component_argv(lay, role), component_log(lay, role), lay.cp_netns
            )

    def write_context(self) -> None:
        from orchestrator.client.config import ConfigFile

        lay = self.layout
        conn = admin_connection(lay)
        conf = ConfigFile.load(self.config_path, missing_ok=True)
        conf.add_context(
            name=lay.context,
            cluster=lay.config_cluster,
            server=lay.api_server,
            ca_pem=conn.ca_pem,
            user=lay.config_user,
            cert_pem=conn.cert_pem,
            key_pem=conn.key_pem,
        )
        conf.save()
        self.state.config_path = str(self.config_path)
        self.save()

    def ensure_node_runtime(self, node: NodeLayout) -> None:
        lay = self.layout
        self.attach(node.netns, node.lan_port, node.ip)
        # A real host reaches the service range by its default route; nodes here
        # have none (nothing may leave the machine), so Service traffic the proxy
        # does not rewrite (a Service without endpoints, to be refused) needs this
        # route to reach the rules at all. The LAN has no way out.
        netns.replace_route(node.netns, SERVICE_CIDR, "eth0")
        netns.sysctl(node.netns, "net.ipv4.ip_forward", "1")
        # Pod-to-Service hairpin needs bridged traffic through iptables (br_netfilter);
        # a kernel without the module simply lacks the key.
        netns.sysctl(node.netns, "net.bridge.bridge-nf-call-iptables", "1", check=False)
        old = self.state.processes.get(f"dockerd:n{node.index}")
        if old is None or not procs.is_alive(old):
            # A dockerd that died leaves pidfiles (and maybe its containerd) that
            # would stop a new one from starting.
            if old is not None:
                procs.reap(old.pid)
            try:
                dockerd.clear_leftovers(node)
            except dockerd.RuntimeBusyError as exc:
                raise ClusterError(str(exc)) from None
        rec = self.ensure_process(
            f"dockerd:n{node.index}",
            dockerd.argv(node, lay.registry),
            node.dockerd_log,
            node.netns,
            healthy=lambda: dockerd.ping(node.docker_host),
        )
        if not dockerd.wait_ready(node.docker_host, 60.0, alive=lambda: procs.is_alive(rec)):
            raise ClusterError(
                f"dockerd of node {node.name} did not come up; see {node.dockerd_log}:\n"
                + procs.log_tail(node.dockerd_log)
            )

    def ensure_images(self) -> None:
        lay = self.layout
        wanted = [*images.BUSYBOX_TAGS, images.PAUSE_IMAGE]
        refs = [images.parse_reference(i) for i in wanted]
        if all(registry.has_manifest(lay.registry, r.path, r.tag) for r in refs):
            return
        pushed = images.build_base_images(lay.node(1).docker_host, lay.registry)
        for name in pushed:
            self.record("images", name)
        self.changed("base images")

    def agent_argv(self, node: NodeLayout, token: str, ca_hash: str) -> tuple[list[str], list[str]]:
        """The node's agent: join (unless it already has credentials), then run.
        One process per node, so a slow join never holds up `up`. Returns the argv
        and the argv to record (without the token)."""
        lay = self.layout
        agent = procs.python_module("agent.main", optimize=True)
        run = [
            *agent,
            "run",
            "--data-dir",
            str(node.agent_dir),
            "--docker-host",
            node.docker_host,
            "--node-ip",
            node.ip,
            # Nodes here have no way off the machine: the cluster DNS answers its own
            # names and refuses the rest rather than forwarding.
            "--dns-upstream-resolv",
            "none",
        ]
        # The sandbox image: the agent's own default (busybox:1.36) is served by the
        # registry, so no --pause-image is passed.

        def join(tok: str) -> list[str]:
            return [
                *agent,
                "join",
                lay.api_server,
                "--token",
                tok,
                "--ca-hash",
                ca_hash,
                "--node-name",
                node.name,
                "--data-dir",
                str(node.agent_dir),
            ]

        def script(tok: str) -> str:
            conf = shlex.quote(str(node.agent_dir / "agent.conf"))
            return (
                f"if [ ! -f {conf} ]; then {shlex.join(join(tok))} || exit $?; fi\n"
                f"exec {shlex.join(run)}\n"
            )

        return ["/bin/sh", "-c", script(token)], ["/bin/sh", "-c", script("<token>")]

    def ensure_agents(self) -> None:
        lay = self.layout
        nodes = lay.all_nodes()
        need = [
            n
            for n in nodes
            if not (
                (rec := self.state.processes.get(f"agent:n{n.index}")) is not None
                and procs.is_alive(rec)
                and n.netns not in self.fresh_netns
            )
        ]
        if not need:
            return
        conn = admin_connection(lay)
        token = ""
        if any(not (n.agent_dir / "agent.conf").exists() for n in need):
            token = _run_async(lambda: _create_join_token(conn, lay.name))
        ca_hash = _ca_hash(conn.ca_pem)
        for node in need:
            node.agent_dir.mkdir(parents=True, exist_ok=True)
            argv, shown = self.agent_argv(node, token, ca_hash)
            self.ensure_process(
                f"agent:n{node.index}", argv, node.agent_log, node.netns, record_argv=shown
            )

    def wait_nodes(self) -> None:
        lay = self.layout
        statuses = {n.name: NodeStatus(n.name, n.ip, log=str(n.agent_log)) for n in lay.all_nodes()}
        self.result.nodes = list(statuses.values())
        conn = admin_connection(lay)
        deadline = time.monotonic() + self.timeout
        ready_deadline: float | None = None
        while True:
            with contextlib.suppress(Exception):
                for name, ready in _run_async(lambda: _node_conditions(conn)).items():
                    if name in statuses:
                        statuses[name].registered = True
                        statuses[name].ready = ready
            for node in lay.all_nodes():
                st = statuses[node.name]
                rec = self.state.processes.get(f"agent:n{node.index}")
                if not st.registered and not st.error and (rec is None or not procs.is_alive(rec)):
                    st.error = "the agent exited before the node registered"
            pending = [s for s in statuses.values() if not s.registered and not s.error]
            if not pending:
                if ready_deadline is None:
                    # Registered; give Ready a little longer, but only as information.
                    ready_deadline = min(deadline, time.monotonic() + 30.0)
                if all(s.ready or s.error for s in statuses.values()):
                    break
                if time.monotonic() > ready_deadline:
                    break
            elif time.monotonic() > deadline:
                for s in pending:
                    s.error = f"not registered after {self.timeout:.0f}s"
                break
            time.sleep(0.5)

    # -- the whole ---------------------------------------------------------------------

    def run(self) -> UpResult:
        lay = self.layout
        rep = self.reporter
        self.ensure_dirs()
        with rep.step(f"Network: LAN {lay.subnet} in namespace {lay.lan_netns}"):
            self.ensure_lan()
        with rep.step(f"Registry at {lay.registry}"):
            self.ensure_registry()
        with rep.step(f"Control plane at {lay.api_server}"):
            self.ensure_control_plane()
            self.write_context()
        with rep.step(f"{lay.nodes} node(s): namespaces and dockerd"):
            with ThreadPoolExecutor(max_workers=min(8, lay.nodes)) as pool:
                for f in [pool.submit(self.ensure_node_runtime, n) for n in lay.all_nodes()]:
                    f.result()
        with rep.step("Images: busybox:1.36, orchestrator/pause:1.0"):
            self.ensure_images()
        with rep.step("Agents: orch-agent join, orch-agent run"):
            self.ensure_agents()
        if self.wait_for_nodes:
            with rep.step(f"Waiting for {lay.nodes} node(s) to register"):
                self.wait_nodes()
                for s in self.result.nodes:
                    if s.error:
                        rep.warn(f"{s.name}: {s.error}; see {s.log}")
                    elif not s.ready:
                        rep.note(f"{s.name}: registered, not Ready yet")
        return self.result


def up(
    name: str = DEFAULT_NAME,
    nodes: int | None = None,
    *,
    subnet: str | None = None,
    config_path: Path | str | None = None,
    wait_for_nodes: bool = True,
    timeout: float = 120.0,
    reporter: Reporter | None = None,
    state_root: Path = STATE_ROOT,
    run_root: Path = RUN_ROOT,
) -> UpResult:
    """Bring up (or repair) the local cluster `name` with `nodes` nodes.

    Writes a context named `name` into config_path (default: $ORCHCONFIG, else
    ~/.orch/config). With wait_for_nodes, waits up to `timeout` seconds for every
    node to register; the result lists nodes whose agents failed, with their logs."""
    from orchestrator.client.config import resolve_path

    check_name(name)
    if nodes is not None:
        check_nodes(nodes)
    _require_prerequisites()
    reporter = reporter or Reporter()
    cfg = Path(config_path) if config_path else resolve_path(None)
    lay0 = Layout.make(name, DEFAULT_SUBNET, 1, state_root=state_root, run_root=run_root)
    existing = load_state(name, state_root)
    if existing is not None and nodes is not None and nodes < existing.nodes:
        # Fewer nodes: retire the highest-numbered ones, as an operator drains hosts.
        for _ in range(existing.nodes - nodes):
            with reporter.step("Removing a node"):
                remove_node(name, state_root=state_root)
    with cluster_lock(lay0.lock_file):
        state = load_state(name, state_root)
        created = state is None
        if state is not None:
            if subnet and check_subnet(subnet) != ipaddress.IPv4Network(state.subnet):
                raise ClusterError(
                    f'cluster "{name}" exists on {state.subnet}; `orchctl cluster down '
                    f"--name {name}` first to move it to {subnet}"
                )
            if nodes is not None and nodes > state.nodes:
                state.nodes = nodes
        else:
            # Two clusters coming up at once must not both take the first free subnet:
            # choosing and recording it is one step for all clusters.
            with cluster_lock(run_root / ".subnets.lock"):
                net = _pick_subnet(name, subnet, state_root)
                state = ClusterState(
                    name=name,
                    subnet=str(net),
                    nodes=nodes or DEFAULT_NODES,
                    state_root=str(state_root),
                    run_root=str(run_root),
                )
                state.save()
        state.save()
        job = _Up(
            state,
            created=created,
            reporter=reporter,
            config_path=cfg,
            wait_for_nodes=wait_for_nodes,
            timeout=timeout,
        )
        try:
            return job.run()
        except (netns.NetError, images.ImageError, OSError) as exc:
            raise ClusterError(str(exc)) from exc


def _pick_subnet(name: str, subnet: str | None, state_root: Path) -> ipaddress.IPv4Network:
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(netns.routed_networks())
    for other in list_states(state_root):
        if isinstance(other, ClusterState) and other.name != name:
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(other.subnet))
    if subnet:
        net = check_subnet(subnet)
        clash = [str(t) for t in taken if t.version == 4 and net.overlaps(t)]
        if clash:
            raise ClusterError(
                f"subnet {net} overlaps {', '.join(clash)}, already routed on this host or "
                "used by another local cluster; choose another --subnet"
            )
        return net
    try:
        return choose_subnet(taken)
    except LayoutError as exc:
        raise ClusterError(str(exc)) from None


# -- down ----------------------------------------------------------------------------------


def _mounts_under(roots: list[str]) -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        target = parts[4].encode().decode("unicode_escape")
        for root in roots:
            r = root.rstrip("/")
            if target == r or target.startswith(r + "/"):
                out.append(target)
                break
    return sorted(set(out), key=lambda p: (-p.count("/"), p))


def unmount_all(roots: list[str]) -> list[str]:
    """Unmount every mount at or below roots, deepest first (lazily if busy)."""
    done = []
    for _ in range(3):
        targets = _mounts_under(roots)
        if not targets:
            break
        for target in targets:
            out = subprocess.run(["umount", target], capture_output=True, check=False)
            if out.returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            done.append(target)
    return done


def _remove_context(config_path: str, lay: Layout) -> None:
    from orchestrator.client.config import ConfigError, ConfigFile

    if not config_path or not Path(config_path).exists():
        return
    try:
        conf = ConfigFile.load(Path(config_path))
    except ConfigError:
        return
    ctx = next((c for c in conf.data["contexts"] if c.get("name") == lay.context), None)
    if ctx is not None and (ctx.get("context") or {}).get("cluster") != lay.config_cluster:
        return  # a context of that name that someone else made: not ours to remove
    conf.data["contexts"] = [c for c in conf.data["contexts"] if c.get("name") != lay.context]
    conf.data["clusters"] = [
        c for c in conf.data["clusters"] if c.get("name") != lay.config_cluster
    ]
    conf.data["users"] = [u for u in conf.data["users"] if u.get("name") != lay.config_user]
    if conf.current_context == lay.context:
        conf.data["current-context"] = ""
    conf.save()


def down(
    name: str = DEFAULT_NAME,
    *,
    reporter: Reporter | None = None,
    config_path: Path | str | None = None,
    state_root: Path = STATE_ROOT,
    run_root: Path = RUN_ROOT,
) -> bool:
    """Remove the cluster: every recorded process, mount, link, namespace and directory,
    plus any oc-NAME-{lan,cp,n<i>} namespace a crash left unrecorded. Safe to repeat.
    Returns whether there was anything to remove."""
    check_name(name)
    rep = reporter or Reporter()
    lay0 = Layout.make(name, DEFAULT_SUBNET, 1, state_root=state_root, run_root=run_root)
    with cluster_lock(lay0.lock_file):
        try:
            state = load_state(name, state_root)
        except StateError as exc:
            rep.warn(f"unreadable state ({exc}); sweeping by name")
            state = None
        lay = state.layout if state is not None else lay0
        namespaces = sorted(
            set(state.namespaces if state else [])
            | {ns for ns in netns.list_all() if owns_netns(name, ns)}
        )
        found = state is not None or bool(namespaces) or lay.state_dir.exists()
        found = found or netns.link_exists(lay.host_link)
        recs = dict(state.processes) if state else {}

        with rep.step("Stopping agents"):
            procs.stop_many([r for role, r in recs.items() if role.startswith("agent:")])
        with rep.step("Stopping containers and dockerd"):
            node_dirs = sorted(lay.run_dir.glob("n*")) if lay.run_dir.exists() else []
            for d in node_dirs:
                sock = d / "docker.sock"
                if sock.exists():
                    dockerd.remove_all_containers(f"unix://{sock}")
            dockerds = [r for role, r in recs.items() if role.startswith("dockerd:")]
            procs.stop_many(dockerds, grace=20.0)
        with rep.step("Stopping the control plane and the registry"):
            procs.stop_many(
                [r for role, r in recs.items() if not role.startswith(("agent:", "dockerd:"))]
            )
            # Whatever still runs inside our namespaces (containerd and its shims after
            # a crash, an agent started by hand) goes too.
            stragglers = sorted({p for ns in namespaces for p in netns.pids_in(ns)})
            if stragglers:
                procs.terminate_pids(stragglers, grace=5.0)
        with rep.step("Removing mounts, links, namespaces and directories"):
            roots = sorted(
                set(state.mount_roots if state else []) | {str(lay.state_dir), str(lay.run_dir)}
            )
            unmount_all(roots)
            links = set(state.links if state else []) | {lay.host_link}
            for link in sorted(links):
                if netns.link_exists(link) and netns.link_kind(link) == "veth":
                    netns.delete_link(link)
            for ns in namespaces:
                netns.delete(ns)
            if state is not None:
                _remove_context(state.config_path, lay)
            if config_path:
                _remove_context(str(config_path), lay)
            dirs = set(state.dirs if state else []) | {str(lay.state_dir), str(lay.run_dir)}
            for dirname in sorted(dirs, key=len, reverse=True):
                if Path(dirname).exists():
                    unmount_all([dirname])
                    shutil.rmtree(dirname, ignore_errors=True)
        with contextlib.suppress(OSError):
            lay0.lock_file.unlink()
        return found


# -- list ----------------------------------------------------------------------------------


def cluster_status(state: ClusterState) -> str:
    lay = state.layout
    missing_ns = [ns for ns in lay.netns_names() if not netns.exists(ns)]
    recs = list(state.processes.values())
    alive = sum(1 for r in recs if procs.is_alive(r))
    if not recs or alive == 0:
        return "Stopped"
    if missing_ns or alive < len(recs):
        return f"Degraded ({alive}/{len(recs)} processes)"
    return "Running"


def list_clusters(state_root: Path = STATE_ROOT) -> list[ClusterSummary]:
    out = []
    known = set()
    for entry in list_states(state_root):
        if isinstance(entry, tuple):
            nm, err = entry
            known.add(nm)
            out.append(ClusterSummary(nm, 0, f"Unreadable ({err})", "", ""))
            continue
        known.add(entry.name)
        lay = entry.layout
        out.append(
            ClusterSummary(
                entry.name,
                entry.nodes,
                cluster_status(entry),
                lay.api_server,
                lay.subnet.with_prefixlen,
            )
        )
    # LAN namespaces with no record: what a crash (or a lost state dir) leaves.
    for ns in netns.list_all():
        if ns.startswith("oc-") and ns.endswith("-lan"):
            nm = ns[3:-4]
            if nm and nm not in known:
                known.add(nm)
                out.append(ClusterSummary(nm, 0, "Orphaned (run down)", "", ""))
    return sorted(out, key=lambda s: s.name)


def find_cluster(name: str | None, state_root: Path = STATE_ROOT) -> ClusterState:
    """The named cluster, or the only one there is."""
    if name:
        state = load_state(check_name(name), state_root)
        if state is None:
            raise ClusterError(f'no local cluster named "{name}": see `orchctl cluster list`')
        return state
    states = [s for s in list_states(state_root) if isinstance(s, ClusterState)]
    if len(states) == 1:
        return states[0]
    if not states:
        raise ClusterError("no local cluster exists: `orchctl cluster up` makes one")
    names = ", ".join(s.name for s in states)
    raise ClusterError(f"several local clusters exist ({names}): pass --cluster NAME")


# -- images --------------------------------------------------------------------------------


def default_host_docker() -> str:
    env = os.environ.get("DOCKER_HOST", "")
    return env or "unix:///var/run/docker.sock"


def load_image(
    name: str | None,
    image: str,
    *,
    from_tar: Path | str | None = None,
    source_docker_host: str | None = None,
    reporter: Reporter | None = None,
    state_root: Path = STATE_ROOT,
) -> list[str]:
    """Push an image into the cluster's registry, from the host's dockerd or from a
    `docker save` tarball. Returns the registry names pushed.

    Docker Hub names (`myapp:1`, `me/myapp:1`) are then pulled by every node through
    its registry mirror. Other names (`ghcr.io/x/y:1`) cannot go through a mirror,
    so the image is also loaded into every node's dockerd directly."""
    rep = reporter or Reporter()
    ref = images.parse_reference(image)
    state = find_cluster(name, state_root)
    lay = state.layout
    with cluster_lock(lay.lock_file):
        builder = lay.node(1)
        if not dockerd.ping(builder.docker_host):
            raise ClusterError(
                f'the dockerd of node {builder.name} does not answer: is cluster "{lay.name}" '
                f"up? (`orchctl cluster up --name {lay.name}`)"
            )
        with tempfile.TemporaryDirectory(prefix="image-", dir=lay.state_dir) as tmp:
            if from_tar:
                tar = Path(from_tar)
                if not tar.is_file():
                    raise ClusterError(f"{tar}: no such file")
            else:
                source = source_docker_host or default_host_docker()
                if not dockerd.ping(source):
                    raise ClusterError(
                        f"no dockerd answers at {source} to take {image} from; "
                        "pass --from-tar FILE (made by `docker save`)"
                    )
                try:
                    present = images.has_image(source, image)
                except Exception as exc:
                    raise ClusterError(f"asking {source} for {image}: {exc}") from None
                if not present:
                    raise ClusterError(f"the dockerd at {source} has no image {image}")
                tar = Path(tmp) / "image.tar"
                with rep.step(f"Saving {image} from {source}"):
                    images.save_image(source, image, tar)
            with rep.step(f"Loading {image} into node {builder.name}"):
                with tar.open("rb") as f:
                    loaded = images.load_tar(builder.docker_host, f)
                source_name = _pick_loaded(image, ref, loaded)
            target = ref.in_registry(lay.registry)
            with rep.step(f"Pushing {target}"):
                images.tag_image(builder.docker_host, source_name, target)
                if source_name != image:
                    images.tag_image(builder.docker_host, source_name, image)
                images.push_image(builder.docker_host, target)
            if not ref.on_docker_hub and lay.nodes > 1:
                with rep.step(f"Loading {image} into the other nodes (not a Docker Hub name)"):
                    for node in lay.all_nodes()[1:]:
                        with tar.open("rb") as f:
                            images.load_tar(node.docker_host, f)
                        if source_name != image:
                            images.tag_image(node.docker_host, source_name, image)
        state.add_unique("images", target)
        state.save()
        return [target]


def _pick_loaded(image: str, ref: images.ImageRef, loaded: list[str]) -> str:
    """Which of the names a tarball loaded is `image`; with one image loaded, that one."""
    for name in loaded:
        try:
            if images.parse_reference(name) == ref:
                return name
        except images.ImageError:
            continue
    if len(loaded) == 1:
        return loaded[0]
    if not loaded:
        raise ClusterError("the tarball held no image")
    raise ClusterError(f"the tarball holds {', '.join(loaded)} but not {image}; name one of them")


CONTROL_PLANE_COMPONENTS = ("controller-manager", "scheduler")
SERVICE_CIDR = "10.96.0.0/12"  # the apiserver's default --service-cluster-ip-range


def component_argv(lay: Layout, role: str) -> list[str]:
    """argv of a control-plane component (role: controller-manager or scheduler)."""
    base = role.partition(":")[0]
    argv = [
        *procs.python_module("orchestrator.server_main"),
        base,
        "--kubeconfig",
        str(lay.cp_dir / f"{base}.conf"),
    ]
    if base == "controller-manager":
        argv += ["--data-dir", str(lay.cp_dir)]
    return argv


def component_log(lay: Layout, role: str) -> Path:
    return lay.state_dir / f"{role.replace(':', '-')}.log"


def component_pid(name: str, role: str, state_root: Path = STATE_ROOT) -> int:
    """PID of a control-plane process: apiserver, controller-manager, scheduler
    (or an added replica such as controller-manager:2)."""
    state = find_cluster(name, state_root)
    rec = state.processes.get(role)
    if rec is None or not procs.is_alive(rec):
        raise ClusterError(f'cluster "{name}" has no running {role}')
    return rec.pid


def add_controller_manager(name: str, replica: int = 2, state_root: Path = STATE_ROOT) -> int:
    """Start another controller-manager replica (a standby while the first holds
    the Lease); `down` stops it with the rest. Returns its PID."""
    state = find_cluster(name, state_root)
    lay = state.layout
    role = f"controller-manager:{replica}"
    rec = state.processes.get(role)
    if rec is not None and procs.is_alive(rec):
        return rec.pid
    rec = procs.start(
        role,
        component_argv(lay, role),
        component_log(lay, role),
        netns_path=netns.path(lay.cp_netns),
        netns=lay.cp_netns,
    )
    state.record_process(rec)
    state.save()
    return rec.pid


def agent_pid(name: str, index: int, state_root: Path = STATE_ROOT) -> int:
    """PID of node `index`'s agent (for benchmarks and fault tests)."""
    state = find_cluster(name, state_root)
    rec = state.processes.get(f"agent:n{index}")
    if rec is None or not procs.is_alive(rec):
        raise ClusterError(f'node {index} of cluster "{name}" has no running agent')
    return rec.pid


def restart_agent(
    name: str,
    index: int,
    *,
    config_path: Path | str | None = None,
    state_root: Path = STATE_ROOT,
) -> None:
    """Stop node `index`'s agent (SIGTERM, as systemd would) and let `up` start it
    again: what an operator does after upgrading or reconfiguring the agent."""
    state = find_cluster(name, state_root)
    rec = state.processes.get(f"agent:n{index}")
    if rec is not None:
        procs.stop(rec)
    up(name, config_path=config_path, state_root=state_root, run_root=Path(state.run_root))


def remove_node(name: str, *, state_root: Path = STATE_ROOT) -> str:
    """Take the cluster's last node away, as an operator retires a host: its agent,
    containers and dockerd stop, its namespace, link, mounts and directories go,
    and its Node object is deleted. Returns the node's name."""
    check_name(name)
    lay0 = Layout.make(name, DEFAULT_SUBNET, 1, state_root=state_root)
    with cluster_lock(lay0.lock_file):
        state = find_cluster(name, state_root)
        if state.nodes <= 1:
            raise ClusterError(f'cluster "{name}" has one node left; use `cluster down`')
        lay = state.layout
        node = lay.node(state.nodes)
        for role in (f"agent:n{node.index}", f"dockerd:n{node.index}"):
            rec = state.processes.pop(role, None)
            if rec is not None:
                if role.startswith("dockerd:") and node.docker_socket.exists():
                    dockerd.remove_all_containers(node.docker_host)
                procs.stop_many([rec], grace=20.0)
        stragglers = netns.pids_in(node.netns) if node.netns in netns.list_all() else []
        if stragglers:
            procs.terminate_pids(sorted(stragglers), grace=5.0)
        unmount_all([str(node.dir), str(node.run_dir)])
        if netns.link_exists(node.lan_port, lay.lan_netns):
            netns.delete_link(node.lan_port, lay.lan_netns)
        if node.netns in netns.list_all():
            netns.delete(node.netns)
        for path in (node.dir, node.run_dir):
            shutil.rmtree(path, ignore_errors=True)
        if node.netns in state.namespaces:
            state.namespaces.remove(node.netns)
        state.nodes -= 1
        state.save()
    with contextlib.suppress(Exception):  # the API may have forgotten it already
        conn = admin_connection(lay)
        _run_async(lambda: _delete_node(conn, node.name))
    return node.name


async def _delete_node(conn: Any, node_name: str) -> None:
    from orchestrator.client.client import Client, NotFoundError

    async with Client(conn, timeout=30) as client:
        with contextlib.suppress(NotFoundError):
            await client.delete("Node", node_name)


# -- a node's container runtime, for fault tests -------------------------------------------


def dockerd_pid(name: str, index: int, state_root: Path = STATE_ROOT) -> int:
    """PID of node `index`'s dockerd (a fault test kills it to take the runtime away)."""
    state = find_cluster(name, state_root)
    rec = state.processes.get(f"dockerd:n{index}")
    if rec is None or not procs.is_alive(rec):
        raise ClusterError(f'node {index} of cluster "{name}" has no running dockerd')
    return rec.pid


def stop_node_runtime(
    name: str, index: int, *, kill: bool = False, state_root: Path = STATE_ROOT
) -> list[int]:
    """Take node `index`'s Docker away: its dockerd and the containerd it owns.

    kill=True is a crash (SIGKILL, containers keep running under their shims until
    dockerd comes back); otherwise SIGTERM as an operator's stop would, with dockerd
    stopping its containers first. The agent is left running: it is what must cope.
    Returns the PIDs stopped."""
    state = find_cluster(name, state_root)
    lay = state.layout
    if not 1 <= index <= lay.nodes:
        raise ClusterError(f'cluster "{name}" has no node {index}')
    node = lay.node(index)
    with cluster_lock(lay.lock_file):
        pids: list[int] = []
        rec = state.processes.get(f"dockerd:n{index}")
        if rec is not None and procs.is_alive(rec):
            pids.append(rec.pid)
        live = dockerd.running_dockerd(node)
        if live is not None and live not in pids:
            pids.append(live)
        if kill:
            procs.kill_pids(pids)
        else:
            procs.terminate_pids(pids, grace=30.0)
        # dockerd's containerd dies with it, unless the kernel's parent-death signal
        # missed it; then it would hold the node's containerd socket and pidfile.
        leftover = dockerd.node_containerds(node)
        if leftover:
            procs.terminate_pids(leftover, grace=10.0)
        return pids + leftover


def start_node_runtime(
    name: str, index: int, *, timeout: float = 60.0, state_root: Path = STATE_ROOT
) -> ProcessRecord:
    """Bring node `index`'s Docker back after a crash or a stop: the same dockerd flags,
    data root and exec root, so its containers (restart policy none: the agent decides
    what runs) are visible again. Clears what the dead dockerd left first (an orphaned
    containerd, stale pidfiles) and records the new process, so `down` stops it.
    A dockerd that already runs and answers is left as it is."""
    state = find_cluster(name, state_root)
    lay = state.layout
    if not 1 <= index <= lay.nodes:
        raise ClusterError(f'cluster "{name}" has no node {index}')
    node = lay.node(index)
    role = f"dockerd:n{index}"
    with cluster_lock(lay.lock_file):
        state = find_cluster(name, state_root)  # fresh, under the lock
        old = state.processes.get(role)
        if old is not None and procs.is_alive(old):
            still = old
            if dockerd.wait_ready(node.docker_host, 15.0, alive=lambda: procs.is_alive(still)):
                return old
        if old is not None:
            procs.stop(old, grace=30.0)  # alive but not answering: a hung dockerd
            procs.reap(old.pid)  # a killed child of ours is a zombie until reaped
        stray = dockerd.running_dockerd(node)
        if stray is not None:
            procs.terminate_pids([stray], grace=30.0)
        try:
            dockerd.clear_leftovers(node)
        except dockerd.RuntimeBusyError as exc:
            raise ClusterError(str(exc)) from None
        rec = procs.start(
            role,
            dockerd.argv(node, lay.registry),
            node.dockerd_log,
            netns_path=netns.path(node.netns),
            netns=node.netns,
        )
        state.record_process(rec)
        state.save()
    if not dockerd.wait_ready(node.docker_host, timeout, alive=lambda: procs.is_alive(rec)):
        raise ClusterError(
            f"dockerd of node {node.name} did not come back in {timeout:.0f}s; see "
            f"{node.dockerd_log}:\n" + procs.log_tail(node.dockerd_log)
        )
    return rec
