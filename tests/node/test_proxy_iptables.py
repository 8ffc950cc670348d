"""The Service proxy for real: iptables in a private "node" network namespace
running BridgeNetwork, "pods" that are plain namespaces on its bridge running
a tiny Python TCP/UDP server that answers with its own name, and a "lan"
namespace standing for another host (NodePort from outside).

Every namespace is created here with a unique `tpx-<hex>` name and deleted in
teardown, which takes its links and every iptables rule and chain with it.
Test traffic only goes to addresses inside these namespaces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "iptables-restore", "nsenter")),
        reason="needs ip, iptables-restore and nsenter",
    ),
]

pytest.importorskip("pyroute2")

from agent.network.bridge import BridgeNetwork  # noqa: E402
from agent.network.proxy.conntrack import ConntrackTool  # noqa: E402
from agent.network.proxy.ipvs import kernel_has_ipvs  # noqa: E402
from agent.network.proxy.proxier import ServiceProxy  # noqa: E402
from agent.network.proxy.rules import NAT, SERVICES, Ruleset  # noqa: E402
from orchestrator.api.pb import core_v1_pb2 as core  # noqa: E402

CIDR = "10.244.9.0/24"
CLUSTER = "10.244.0.0/16"
NODE_LAN_IP, LAN_IP = "192.0.2.10", "192.0.2.20"

SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
def udp():
    while True:
        _, peer = u.recvfrom(100); u.sendto(name.encode(), peer)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(name.encode()); c.close()
"""

CLIENT = r"""
import json, socket, sys, time
host, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = []
for _ in range(n):
    t = time.monotonic()
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=2); out.append(s.recv(100).decode())
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
            s.bind(("0.0.0.0", 40000)); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.sendto(b"x", (host, port)); out.append(s.recv(100).decode())
        s.close()
    except OSError as e:
        out.append(f"{type(e).__name__}:{time.monotonic() - t:.2f}")
print(json.dumps(out))
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}{out.stdout}")
    return out


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, check=check)


def client(ns: str, host: str, port: int, n: int = 1, proto: str = "tcp") -> list[str]:
    import json

    out = in_ns(ns, sys.executable, "-c", CLIENT, host, str(port), str(n), proto)
    return list(json.loads(out.stdout))


def start_server(ns: str, name: str) -> subprocess.Popen[str]:
    """The echo server in a pod, answering on 8080 (TCP and UDP) with its name."""
    cmd = ["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-c", SERVER, name, "8080"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


@dataclass
class Cluster:
    node: str
    lan: str
    net: BridgeNetwork
    pods: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (netns, ip)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)


@pytest.fixture
def namespaces() -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        name = f"tpx-{secrets.token_hex(4)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        left = set(sh("ip", "netns", "list").stdout.split()) & set(made)
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
async def cluster(namespaces: Callable[[], str], tmp_path: Path) -> AsyncIterator[Cluster]:
    node, lan = namespaces(), namespaces()
    net = BridgeNetwork(CIDR, tmp_path / "net", node_netns=node, cluster_cidr=CLUSTER)
    await net.ensure_bridge()
    # the "LAN": another host that reaches NodePorts on the node's address; the
    # Service range is routed to it so REJECT (in FORWARD) gets to answer
    sh("ip", "link", "add", "lan0", "netns", node, "type", "veth", "peer", "eth0", "netns", lan)
    in_ns(node, "ip", "addr", "add", f"{NODE_LAN_IP}/24", "dev", "lan0")
    in_ns(lan, "ip", "addr", "add", f"{LAN_IP}/24", "dev", "eth0")
    in_ns(node, "ip", "link", "set", "lan0", "up")
    in_ns(lan, "ip", "link", "set", "eth0", "up")
    in_ns(lan, "ip", "route", "add", CIDR, "via", NODE_LAN_IP)
    in_ns(node, "ip", "route", "add", "10.96.0.0/12", "via", LAN_IP)
    c = Cluster(node, lan, net)
    try:
        for name in ("pod-a", "pod-b", "pod-c", "client"):
            ns = namespaces()
            status = await net.setup(f"uid-{name}", f"/var/run/netns/{ns}")
            c.pods[name] = (ns, status.ip)
            if name != "client":
                proc = start_server(ns, name)
                c.servers.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield c
    finally:
        for proc in c.servers:
            proc.kill()
            proc.wait()


def service(name: str, ip: str, *, node_port: int = 0, proto: str = "TCP", **spec: Any) -> Any:
    return core.Service(
        metadata={"namespace": "default", "name": name},
        spec={
            "cluster_ip": ip,
            "type": "NodePort" if node_port else "ClusterIP",
            "ports": [{"name": "p", "port": 80, "protocol": proto, "node_port": node_port}],
            **spec,
        },
    )


def endpoints(name: str, ips: list[str], proto: str = "TCP") -> Any:
    return core.Endpoints(
        metadata={"namespace": "default", "name": name},
        subsets=[
            {
                "addresses": [{"ip": ip} for ip in ips],
                "ports": [{"name": "p", "port": 8080, "protocol": proto}],
            }
        ],
    )


class NoInformer:
    """Events are fed straight to the proxy's handlers."""

    def __init__(self, _client: Any, _kind: str) -> None:
        self.synced = asyncio.Event()
        self.synced.set()

    def add_handler(self, _h: Any) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[ServiceProxy]:
    p = ServiceProxy(
        None,
        "node-t",
        cluster_cidr=CLUSTER,
        node_netns=cluster.node,
        informer_factory=NoInformer,
        min_sync_interval=0.05,
    )
    await p.start()
    await p.wait_applied()
    try:
        yield p
    finally:
        await p.stop()


def ip_of(c: Cluster, pod: str) -> str:
    return c.pods[pod][1]


async def test_cluster_ip_balances_across_ready_endpoints(
    cluster: Cluster, proxy: ServiceProxy
) -> None:
    proxy.on_service("ADDED", service("web", "10.96.5.1"))
    proxy.on_endpoints(
        "ADDED", endpoints("web", [ip_of(cluster, p) for p in ("pod-a", "pod-b", "pod-c")])
    )
    await proxy.wait_applied()
    got = Counter(client(cluster.pods["client"][0], "10.96.5.1", 80, n=150))
    assert set(got) == {"pod-a", "pod-b", "pod-c"}, got
    assert min(got.values()) >= 25, f"uneven: {got}"  # 50 expected each

    # an endpoint goes: no more traffic to it
    proxy.on_endpoints("MODIFIED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    assert set(client(cluster.pods["client"][0], "10.96.5.1", 80, n=20)) == {"pod-a"}


async def test_pod_reaches_itself_through_its_service(
    cluster: Cluster, proxy: ServiceProxy
) -> None:
    proxy.on_service("ADDED", service("self", "10.96.5.2"))
    proxy.on_endpoints("ADDED", endpoints("self", [ip_of(cluster, "pod-b")]))
    await proxy.wait_applied()
    assert client(cluster.pods["pod-b"][0], "10.96.5.2", 80, n=3) == ["pod-b"] * 3


async def test_node_port_answers_on_node_addresses(cluster: Cluster, proxy: ServiceProxy) -> None:
    proxy.on_service("ADDED", service("np", "10.96.5.3", node_port=30080))
    proxy.on_endpoints("ADDED", endpoints("np", [ip_of(cluster, "pod-c")]))
    await proxy.wait_applied()
    assert client(cluster.lan, NODE_LAN_IP, 30080) == ["pod-c"]  # from another host
    assert client(cluster.node, NODE_LAN_IP, 30080) == ["pod-c"]  # from the node itself
    gateway = cluster.net.gateway  # another address of the node
    assert client(cluster.pods["client"][0], gateway, 30080) == ["pod-c"]


async def test_service_without_endpoints_refuses_at_once(
    cluster: Cluster, proxy: ServiceProxy
) -> None:
    proxy.on_service("ADDED", service("empty", "10.96.5.4", node_port=30081))
    await proxy.wait_applied()
    for ns, host, port in (
        (cluster.pods["client"][0], "10.96.5.4", 80),
        (cluster.node, "10.96.5.4", 80),
        (cluster.lan, NODE_LAN_IP, 30081),
    ):
        [result] = client(ns, host, port)
        name, seconds = result.split(":")
        assert name == "ConnectionRefusedError" and float(seconds) < 1.0, (host, port, result)


async def test_session_affinity_sticks_to_one_endpoint(
    cluster: Cluster, proxy: ServiceProxy
) -> None:
    proxy.on_service(
        "ADDED",
        service(
            "sticky",
            "10.96.5.5",
            session_affinity="ClientIP",
            session_affinity_config={"client_ip": {"timeout_seconds": 60}},
        ),
    )
    ips = [ip_of(cluster, p) for p in ("pod-a", "pod-b", "pod-c")]
    proxy.on_endpoints("ADDED", endpoints("sticky", ips))
    await proxy.wait_applied()
    assert len(set(client(cluster.pods["client"][0], "10.96.5.5", 80, n=20))) == 1


async def test_failed_restore_keeps_previous_rules_and_logs_the_line(
    cluster: Cluster, proxy: ServiceProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.on_service("ADDED", service("web", "10.96.5.6"))
    proxy.on_endpoints("ADDED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    before = in_ns(cluster.node, "iptables-save", "-t", "nat").stdout
    bad = f"-A {SERVICES} -p tcp --no-such-option 1 -j ACCEPT"

    def inject(rs: Ruleset) -> None:
        rs.tables[NAT][SERVICES].insert(0, bad)

    proxy.render_hook = inject
    failures = proxy.failures
    with caplog.at_level(logging.ERROR):
        proxy.on_endpoints("MODIFIED", endpoints("web", [ip_of(cluster, "pod-b")]))
        for _ in range(100):
            if proxy.failures > failures:
                break
            await asyncio.sleep(0.05)
    assert proxy.failures > failures
    assert bad in caplog.text and "previous rules kept" in caplog.text
    after = in_ns(cluster.node, "iptables-save", "-t", "nat").stdout
    strip = lambda s: [x for x in s.splitlines() if not x.startswith("#")]  # noqa: E731
    assert strip(after) == strip(before)
    assert client(cluster.pods["client"][0], "10.96.5.6", 80) == ["pod-a"]

    proxy.render_hook = None
    proxy.on_endpoints("MODIFIED", endpoints("web", [ip_of(cluster, "pod-b")]))
    await proxy.wait_applied()
    assert client(cluster.pods["client"][0], "10.96.5.6", 80) == ["pod-b"]


async def test_stale_chains_removed_on_full_sync(cluster: Cluster, proxy: ServiceProxy) -> None:
    proxy.on_service("ADDED", service("web", "10.96.5.7"))
    proxy.on_endpoints("ADDED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    in_ns(cluster.node, "iptables", "-t", "nat", "-N", "ORCH-SVC-STALESTALESTALE")
    proxy.on_service("DELETED", service("web", "10.96.5.7"))
    await proxy.sync(full=True)
    chains = in_ns(cluster.node, "iptables-save", "-t", "nat").stdout
    assert "ORCH-SVC-STALESTALESTALE" not in chains
    assert "ORCH-SVC-" not in chains and "ORCH-SEP-" not in chains
    assert ":ORCH-POSTROUTING" in chains  # the pod network's own chain is left alone


@pytest.mark.skipif(
    not ConntrackTool.available(),
    reason="conntrack(8) is not installed (Debian package conntrack; add it to scripts/setup.sh)",
)
async def test_udp_flow_moves_when_its_endpoint_goes(cluster: Cluster, proxy: ServiceProxy) -> None:
    proxy.on_service("ADDED", service("dns", "10.96.5.8", proto="UDP"))
    proxy.on_endpoints("ADDED", endpoints("dns", [ip_of(cluster, "pod-a")], proto="UDP"))
    await proxy.wait_applied()
    client_ns = cluster.pods["client"][0]
    assert client(client_ns, "10.96.5.8", 80, proto="udp") == ["pod-a"]  # fixed source port
    proxy.on_endpoints("MODIFIED", endpoints("dns", [ip_of(cluster, "pod-b")], proto="UDP"))
    await proxy.wait_applied()
    # the same 5-tuple: without the flush its conntrack entry would still say pod-a
    assert client(client_ns, "10.96.5.8", 80, proto="udp") == ["pod-b"]


@pytest.mark.skipif(
    not kernel_has_ipvs(),
    reason="IPVS mode needs the ip_vs kernel module, which this kernel lacks (CONFIG_IP_VS unset)",
)
async def test_ipvs_mode_is_refused_clearly_even_with_ipvs() -> None:
    from agent.network.proxy.ipvs import ProxyModeUnavailable

    p = ServiceProxy(None, "n", cluster_cidr=CLUSTER, mode="ipvs", informer_factory=NoInformer)
    with pytest.raises(ProxyModeUnavailable, match="iptables"):
        await p.start()
