"""The overlay for real: two "node" network namespaces joined by a veth pair
(their underlay, 198.51.100.0/24), each with a BridgeNetwork and a "pod"
namespace behind it, and pods pinging each other across the nodes through
VXLAN, then through host-gw routes.

Every namespace is created here with a unique `tovl-<hex>-` prefix and
deleted in teardown, failures included, which takes the devices and routes
with it. Traffic only goes to addresses inside these namespaces: no node
namespace has a default route or any link out of the test's namespaces.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "bridge", "iptables", "nsenter", "busybox")),
        reason="needs ip, bridge, iptables, nsenter and busybox",
    ),
]

pyroute2 = pytest.importorskip("pyroute2")

from agent.network.bridge import BridgeNetwork  # noqa: E402
from agent.network.overlay import (  # noqa: E402
    ANNOTATION_BACKEND,
    ANNOTATION_UNDERLAY_IP,
    HostGwOverlay,
    VxlanOverlay,
)
from agent.network.overlay_types import RTPROT_ORCH  # noqa: E402
from orchestrator.api.kinds import kind_info  # noqa: E402

DEV = "orch.vxlan"
UNDERLAY_DEV = "und0"
CLUSTER_CIDR = "10.244.0.0/16"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}{out.stdout}")
    return out


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, check=check)


def ping(ns: str, address: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def netns_path(ns: str) -> str:
    return f"/var/run/netns/{ns}"


@dataclass
class SimNode:
    name: str  # the Node's name
    ns: str  # its network namespace
    pod_cidr: str
    underlay_ip: str
    pod_ns: str
    state_dir: Path
    pod_ip: str = ""
    overlay: Any = None
    annotations: dict[str, str] = field(default_factory=dict)

    def node_object(self) -> Any:
        return node_object(self.name, self.pod_cidr, self.annotations)


def node_object(name: str, pod_cidr: str, annotations: dict[str, str]) -> Any:
    node = kind_info("Node").new()
    node.metadata.name = name
    node.spec.pod_cidr = pod_cidr
    node.metadata.annotations.update(annotations)
    return node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[SimNode]]:
    """node-a and node-b: namespaces, underlay, each with one pod namespace."""
    prefix = f"tovl-{secrets.token_hex(3)}"
    made: list[str] = []

    def netns(suffix: str) -> str:
        name = f"{prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        made.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    try:
        a, b = netns("a"), netns("b")
        sh("ip", "-n", a, "link", "add", UNDERLAY_DEV, "type", "veth", "peer", "name",
           UNDERLAY_DEV, "netns", b)  # fmt: skip
        result = []
        for octet, ns in ((1, a), (2, b)):
            ip = f"198.51.100.{octet}"
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", UNDERLAY_DEV)
            sh("ip", "-n", ns, "link", "set", UNDERLAY_DEV, "up")
            result.append(
                SimNode(
                    name=f"node-{ns[-1]}",
                    ns=ns,
                    pod_cidr=f"10.244.{octet}.0/24",
                    underlay_ip=ip,
                    pod_ns=netns(f"p{ns[-1]}"),
                    state_dir=tmp_path / ns,
                )
            )
        yield result
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        left = set(sh("ip", "netns", "list").stdout.split()) & set(made)
        assert not left, f"namespaces left behind: {left}"


async def start(node: SimNode, overlay: Any) -> None:
    """What the agent does: overlay first (it sets the pod MTU), then the pod
    network with that MTU, a pod, and the annotations on the Node."""
    await overlay.setup()
    network = BridgeNetwork(
        node.pod_cidr,
        node.state_dir,
        mtu=overlay.pod_mtu,
        node_netns=node.ns,
        cluster_cidr=CLUSTER_CIDR,
        untracked_udp_port=overlay.encapsulation_udp_port,
    )
    await network.ensure_bridge()
    status = await network.setup(f"uid-{node.name}", netns_path(node.pod_ns))
    node.pod_ip = status.ip
    node.overlay = overlay
    node.annotations = overlay.node_annotations()


async def sync_all(nodes: list[SimNode]) -> list[Any]:
    """Every node syncs with the full Node list, as each agent's informer sees it."""
    objects = [n.node_object() for n in nodes]
    return [await n.overlay.sync(objects) for n in nodes]


def lines(ns: str, *cmd: str) -> list[str]:
    return [line.strip() for line in sh(*cmd[:1], "-n", ns, *cmd[1:]).stdout.splitlines()]


async def test_vxlan_pods_reach_each_other_across_nodes(nodes: list[SimNode]) -> None:
    a, b = nodes
    for n in nodes:
        overlay = VxlanOverlay(n.name, n.pod_cidr, n.underlay_ip, node_netns=netns_path(n.ns))
        await start(n, overlay)
    assert a.overlay.pod_mtu == 1450
    assert "mtu 1450" in sh("ip", "-n", a.pod_ns, "link", "show", "eth0").stdout

    details = sh("ip", "-n", a.ns, "-d", "link", "show", DEV).stdout
    for fact in ("vxlan id 1 ", "local 198.51.100.1 ", f"dev {UNDERLAY_DEV} ", "dstport 8472"):
        assert fact in details, details
    assert "nolearning" in details and "link/ether 0a:58:0a:f4:01:00" in details
    assert "inet 10.244.1.0/32" in sh("ip", "-n", a.ns, "-4", "addr", "show", DEV).stdout
    assert not ping(a.pod_ns, b.pod_ip), "no peer entries yet"

    reports = await sync_all(nodes)
    assert [r.peers for r in reports] == [["node-b"], ["node-a"]]
    assert lines(a.ns, "ip", "neigh", "show", "dev", DEV) == [
        "10.244.2.0 lladdr 0a:58:0a:f4:02:00 PERMANENT"
    ]
    assert lines(a.ns, "bridge", "fdb", "show", "dev", DEV) == [
        "0a:58:0a:f4:02:00 dst 198.51.100.2 self permanent"
    ]
    assert lines(a.ns, "ip", "route", "show", "proto", str(RTPROT_ORCH)) == [
        f"10.244.2.0/24 via 10.244.2.0 dev {DEV} onlink"
    ]
    assert ping(a.pod_ns, b.pod_ip)
    assert ping(b.pod_ns, a.pod_ip)
    # The pods' own packets are tracked as they are forwarded (Service NAT needs
    # that); the VXLAN packets carrying them are not.
    if shutil.which("conntrack"):
        pods_flow = in_ns(a.ns, "conntrack", "-L", "-p", "icmp", "-d", b.pod_ip, check=False)
        assert b.pod_ip in pods_flow.stdout, pods_flow.stderr
        outer = in_ns(a.ns, "conntrack", "-L", "-p", "udp", "--dport", "8472", check=False)
        assert "dport=8472" not in outer.stdout, outer.stdout
    raw = in_ns(a.ns, "iptables", "-t", "raw", "-S", "ORCH-NOTRACK").stdout
    assert "-p udp -m udp --dport 8472" in raw and "-j NOTRACK" in raw, raw
    again = await sync_all(nodes)
    assert [r.applied for r in again] == [[], []]

    # Someone deletes the device: the next (periodic) sync brings it back, and
    # the same VTEP MAC keeps the peer's entries valid.
    sh("ip", "-n", a.ns, "link", "del", DEV)
    assert not ping(b.pod_ns, a.pod_ip)
    reports = await sync_all(nodes)
    assert reports[0].created_device and not reports[1].applied
    assert ping(b.pod_ns, a.pod_ip)
    assert ping(a.pod_ns, b.pod_ip)

    # node-b's Node goes: node-a forgets it everywhere.
    report = await a.overlay.sync([a.node_object()])
    assert [(op.action, type(op.entry).__name__) for op in report.applied] == [
        ("remove", "Route"),
        ("remove", "Fdb"),
        ("remove", "Neigh"),
    ]
    assert lines(a.ns, "ip", "neigh", "show", "dev", DEV) == []
    assert lines(a.ns, "bridge", "fdb", "show", "dev", DEV) == []
    assert lines(a.ns, "ip", "route", "show", "proto", str(RTPROT_ORCH)) == []
    assert not ping(a.pod_ns, b.pod_ip)

    await a.overlay.teardown()
    assert sh("ip", "-n", a.ns, "link", "show", DEV, check=False).returncode != 0


async def test_host_gw_pods_reach_each_other_and_far_peers_are_refused(
    nodes: list[SimNode],
) -> None:
    a, b = nodes
    for n in nodes:
        overlay = HostGwOverlay(n.name, n.pod_cidr, n.underlay_ip, node_netns=netns_path(n.ns))
        await start(n, overlay)
    assert a.overlay.pod_mtu == 1500
    far = node_object(
        "node-far",
        "10.244.3.0/24",
        {ANNOTATION_BACKEND: "host-gw", ANNOTATION_UNDERLAY_IP: "203.0.113.3"},
    )
    everyone = [a.node_object(), b.node_object(), far]
    reports = [await n.overlay.sync(everyone) for n in nodes]
    assert reports[0].peers == ["node-b"]
    assert "not on this node's underlay subnet 198.51.100.0/24" in reports[0].skipped["node-far"]
    assert lines(a.ns, "ip", "route", "show", "proto", str(RTPROT_ORCH)) == [
        f"10.244.2.0/24 via 198.51.100.2 dev {UNDERLAY_DEV}"
    ]
    assert ping(a.pod_ns, b.pod_ip)
    assert ping(b.pod_ns, a.pod_ip)

    # A route flushed by hand comes back; a vanished node's route goes.
    sh("ip", "-n", a.ns, "route", "del", "10.244.2.0/24")
    assert not ping(a.pod_ns, b.pod_ip)
    await a.overlay.sync([a.node_object(), b.node_object()])
    assert ping(a.pod_ns, b.pod_ip)
    await a.overlay.sync([a.node_object()])
    assert lines(a.ns, "ip", "route", "show", "proto", str(RTPROT_ORCH)) == []

    await b.overlay.teardown()
    assert lines(b.ns, "ip", "route", "show", "proto", str(RTPROT_ORCH)) == []
