"""hostPort with real nftables in network namespaces made here: a pod's port
answers on the node's address from the LAN, from the node itself and from
the pod (hairpin); a hostIP mapping answers only there; a restarted agent
keeps the mappings it finds; teardown unpublishes. The namespaces fixture
deletes every namespace at teardown, the node's nftables table with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "nft", "nsenter")),
        reason="needs ip, nft (Debian package nftables) and nsenter",
    ),
]

pytest.importorskip("pyroute2")

from agent.network.bridge import BridgeNetwork  # noqa: E402
from agent.network.hostports import TABLE, HostPorts, PortMapping  # noqa: E402
from agent.network.proxy.nftables import NftCommands  # noqa: E402
from tests.node.test_proxy_iptables import (  # noqa: E402
    CIDR,
    CLUSTER,
    LAN_IP,
    NODE_LAN_IP,
    client,
    in_ns,
    namespaces,
    sh,
    start_server,
)

__all__ = ["namespaces"]  # a fixture, imported to be found by pytest

WEB, DNS, PINNED = 31080, 31053, 31081


@dataclass
class Node:
    node: str
    lan: str
    net: BridgeNetwork
    tmp: Path
    namespaces: Callable[[], str]
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    async def pod(self, name: str, mappings: list[PortMapping]) -> tuple[str, str]:
        """A pod answering its name on 8080 (TCP and UDP), with these host ports."""
        ns = self.namespaces()
        status = await self.net.setup(f"uid-{name}", f"/var/run/netns/{ns}", mappings)
        proc = start_server(ns, name)
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return ns, status.ip


def network(node: str, tmp: Path) -> BridgeNetwork:
    """The agent's pod network, as a (re)started agent builds it."""
    hostports = HostPorts(NftCommands(netns=node))
    return BridgeNetwork(CIDR, tmp, node_netns=node, cluster_cidr=CLUSTER, hostports=hostports)


@pytest.fixture
async def node(namespaces: Callable[[], str], tmp_path: Path) -> AsyncIterator[Node]:
    node_ns, lan = namespaces(), namespaces()
    net = network(node_ns, tmp_path / "net")
    await net.ensure_bridge()
    sh("ip", "link", "add", "lan0", "netns", node_ns, "type", "veth", "peer", "eth0", "netns", lan)
    in_ns(node_ns, "ip", "addr", "add", f"{NODE_LAN_IP}/24", "dev", "lan0")
    in_ns(lan, "ip", "addr", "add", f"{LAN_IP}/24", "dev", "eth0")
    in_ns(node_ns, "ip", "link", "set", "lan0", "up")
    in_ns(lan, "ip", "link", "set", "eth0", "up")
    n = Node(node_ns, lan, net, tmp_path / "net", namespaces)
    try:
        yield n
    finally:
        for proc in n.servers:
            proc.kill()
            proc.wait()


async def test_host_ports_answer_from_the_lan_the_node_and_the_pod(node: Node) -> None:
    gateway = node.net.gateway
    web_ns, _ = await node.pod(
        "web",
        [
            PortMapping("tcp", WEB, 8080),
            PortMapping("udp", DNS, 8080),
            PortMapping("tcp", PINNED, 8080, host_ip=gateway),
        ],
    )
    assert client(node.lan, NODE_LAN_IP, WEB, 2) == ["web", "web"]
    assert client(node.lan, NODE_LAN_IP, DNS, proto="udp") == ["web"]
    assert client(node.node, NODE_LAN_IP, WEB) == ["web"], "from the node itself"
    assert client(web_ns, NODE_LAN_IP, WEB) == ["web"], "hairpin: the pod to its own host port"
    # A hostIP mapping answers on that address only.
    assert client(node.node, gateway, PINNED) == ["web"]
    (refused,) = client(node.lan, NODE_LAN_IP, PINNED)
    assert refused.startswith("ConnectionRefusedError"), refused

    # Unpublished on teardown.
    await node.net.teardown("uid-web", None)
    (gone,) = client(node.lan, NODE_LAN_IP, WEB)
    assert gone.startswith("ConnectionRefusedError"), gone
    assert "dport" not in in_ns(node.node, "nft", "list", "table", "ip", TABLE).stdout


async def test_a_restarted_agent_keeps_the_published_ports(node: Node) -> None:
    await node.pod("first", [PortMapping("tcp", WEB, 8080)])
    # The agent restarts: a new pod network, knowing nothing yet.
    node.net = network(node.node, node.tmp)
    await node.pod("second", [PortMapping("tcp", PINNED, 8080)])
    assert client(node.lan, NODE_LAN_IP, WEB) == ["first"]
    assert client(node.lan, NODE_LAN_IP, PINNED) == ["second"]
