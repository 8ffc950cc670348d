"""The node's pod network for real: a "node" network namespace running
BridgeNetwork, and "pods" that are plain network namespaces (no Docker needed).

Every namespace is created here with a unique `t-<hex>` name and deleted in
teardown, which takes its links and iptables rules with it. Test traffic
only ever goes to addresses inside these namespaces; the node namespace has
no route out.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "iptables", "nsenter", "busybox")),
        reason="needs ip, iptables, nsenter and busybox",
    ),
]

pyroute2 = pytest.importorskip("pyroute2")

from agent.network.bridge import BridgeNetwork, host_veth_name  # noqa: E402
from agent.network.hostfw import FORWARD_CHAIN, NAT_CHAIN  # noqa: E402

CIDR = "10.244.7.0/24"
GATEWAY = "10.244.7.1"
BRIDGE = "orch0"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}{out.stdout}")
    return out


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, check=check)


def ping(ns: str, address: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def exists(path: str) -> bool:
    return os.path.exists(path)


def links(ns: str) -> set[str]:
    out = sh("ip", "-n", ns, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def hairpin(node: str, ifname: str) -> str:
    # `ip netns exec` remounts /sys for the namespace; plain nsenter would show
    # the root namespace's /sys/class/net.
    out = sh("ip", "netns", "exec", node, "cat", f"/sys/class/net/{ifname}/brport/hairpin_mode")
    return out.stdout.strip()


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        name = f"t-{secrets.token_hex(4)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        left = set(sh("ip", "netns", "list").stdout.split()) & set(made)
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def node(make_netns: Callable[[], str]) -> str:
    name = make_netns()
    in_ns(name, "ip", "link", "set", "lo", "up")
    return name


def pod_path(ns: str) -> str:
    return f"/var/run/netns/{ns}"


async def test_bridge_sysctls_and_rules(node: str, tmp_path: Path) -> None:
    net = BridgeNetwork(CIDR, tmp_path / "net", node_netns=node)
    await net.ensure_bridge()
    await net.ensure_bridge()  # idempotent

    addr = sh("ip", "-n", node, "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    assert f"{GATEWAY}/24" in addr
    assert ",UP" in sh("ip", "-n", node, "link", "show", BRIDGE).stdout
    assert in_ns(node, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    bridge_nf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    if exists(bridge_nf):
        assert in_ns(node, "cat", bridge_nf).stdout.strip() == "1"

    fwd = in_ns(node, "iptables", "-S", FORWARD_CHAIN).stdout.splitlines()
    assert [r for r in fwd if r.startswith("-A")] == [
        f'-A {FORWARD_CHAIN} -s {CIDR} -m comment --comment "orch pod network" -j ACCEPT',
        f'-A {FORWARD_CHAIN} -d {CIDR} -m comment --comment "orch pod network" -j ACCEPT',
    ]
    jumps = [r for r in in_ns(node, "iptables", "-S", "FORWARD").stdout.splitlines() if "-j" in r]
    assert jumps[0].endswith(f"-j {FORWARD_CHAIN}") and len(jumps) == 1
    nat = in_ns(node, "iptables", "-t", "nat", "-S", NAT_CHAIN).stdout.splitlines()
    assert [r for r in nat if r.startswith("-A")] == [
        f"-A {NAT_CHAIN} -s {CIDR} ! -d {CIDR} "
        '-m comment --comment "orch pod network" -j MASQUERADE'
    ]
    post = in_ns(node, "iptables", "-t", "nat", "-S", "POSTROUTING").stdout
    assert post.count(f"-j {NAT_CHAIN}") == 1

    # A node re-registered with another pod CIDR: the old range's rules and
    # gateway address go.
    other = BridgeNetwork("10.244.8.0/24", tmp_path / "net2", node_netns=node)
    await other.ensure_bridge()
    rules = in_ns(node, "iptables", "-S", FORWARD_CHAIN).stdout
    assert CIDR not in rules and "10.244.8.0/24" in rules
    addr = sh("ip", "-n", node, "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    assert "10.244.8.1/24" in addr and GATEWAY not in addr

    await other.remove()
    assert BRIDGE not in links(node)
    assert in_ns(node, "iptables", "-S", FORWARD_CHAIN, check=False).returncode != 0
    assert in_ns(node, "iptables", "-t", "nat", "-S", NAT_CHAIN, check=False).returncode != 0
    assert FORWARD_CHAIN not in in_ns(node, "iptables", "-S", "FORWARD").stdout


async def test_pods_reach_each_other_and_the_gateway(
    node: str, make_netns: Callable[[], str], tmp_path: Path
) -> None:
    net = BridgeNetwork(CIDR, tmp_path / "net", node_netns=node)
    await net.ensure_bridge()
    pod_a, pod_b = make_netns(), make_netns()

    a = await net.setup("uid-a", pod_path(pod_a))
    b = await net.setup("uid-b", pod_path(pod_b))
    assert (a.ip, a.gateway, a.prefix_len) == ("10.244.7.2", GATEWAY, 24)
    assert b.ip == "10.244.7.3"
    assert net.pod_ip("uid-a") == a.ip

    veth_a, veth_b = host_veth_name("uid-a"), host_veth_name("uid-b")
    index_before = sh("ip", "-n", node, "-o", "link", "show", veth_a).stdout.split(":")[0]
    again = await net.setup("uid-a", pod_path(pod_a))
    assert again == a
    index_after = sh("ip", "-n", node, "-o", "link", "show", veth_a).stdout.split(":")[0]
    assert index_before == index_after, "a repeated setup must not rewire the pod"

    # The bridge keeps its own MAC as ports come (not the lowest port's).
    assert "link/ether 0a:58:0a:f4:07:01" in sh("ip", "-n", node, "link", "show", BRIDGE).stdout
    for veth in (veth_a, veth_b):
        assert f"master {BRIDGE}" in sh("ip", "-n", node, "link", "show", veth).stdout
        assert hairpin(node, veth) == "1"
    eth0 = sh("ip", "-n", pod_a, "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert f"{a.ip}/24" in eth0
    assert f"default via {GATEWAY} dev eth0" in sh("ip", "-n", pod_a, "route").stdout
    assert "UP" in sh("ip", "-n", pod_a, "link", "show", "lo").stdout

    assert ping(pod_a, b.ip)
    assert ping(pod_b, a.ip)
    assert ping(pod_a, GATEWAY)
    assert ping(pod_a, a.ip)  # itself, over lo

    await net.teardown("uid-a", pod_path(pod_a))
    assert veth_a not in links(node)
    assert "eth0" not in links(pod_a)
    assert net.pod_ip("uid-a") is None
    assert not ping(pod_b, a.ip)
    await net.teardown("uid-a", None)  # idempotent

    # The pod's namespace is already gone: teardown still cleans up.
    sh("ip", "netns", "del", pod_b)
    await net.teardown("uid-b", None)
    assert veth_b not in links(node)
    assert net.allocations() == {}


async def test_deleted_bridge_is_recreated_on_next_setup(
    node: str, make_netns: Callable[[], str], tmp_path: Path
) -> None:
    net = BridgeNetwork(CIDR, tmp_path / "net", node_netns=node)
    await net.ensure_bridge()
    pod_a, pod_b = make_netns(), make_netns()
    a = await net.setup("uid-a", pod_path(pod_a))

    sh("ip", "-n", node, "link", "del", BRIDGE)
    in_ns(node, "iptables", "-F", FORWARD_CHAIN)

    await net.setup("uid-b", pod_path(pod_b))
    assert BRIDGE in links(node)
    # The running pod's veth is back on the new bridge, with hairpin.
    veth_a = host_veth_name("uid-a")
    assert f"master {BRIDGE}" in sh("ip", "-n", node, "link", "show", veth_a).stdout
    assert hairpin(node, veth_a) == "1"
    assert f"-s {CIDR}" in in_ns(node, "iptables", "-S", FORWARD_CHAIN).stdout
    assert ping(pod_b, a.ip)
    assert ping(pod_b, GATEWAY)


async def test_restart_keeps_addresses_and_sandbox_change_rewires(
    node: str, make_netns: Callable[[], str], tmp_path: Path
) -> None:
    state = tmp_path / "net"
    net = BridgeNetwork(CIDR, state, node_netns=node)
    pods = [make_netns() for _ in range(4)]
    # Concurrent setups on a node with no bridge yet: one bridge, distinct addresses.
    results = await asyncio.gather(
        *(net.setup(f"uid-{i}", pod_path(p)) for i, p in enumerate(pods))
    )
    assert len({r.ip for r in results}) == 4

    # A new agent process (same state dir) knows every pod's address.
    restarted = BridgeNetwork(CIDR, state, node_netns=node)
    assert restarted.pod_ip("uid-0") == results[0].ip

    # The pod's sandbox was re-created: same uid, a new namespace.
    replacement = make_netns()
    again = await restarted.setup("uid-0", pod_path(replacement))
    assert again.ip == results[0].ip
    assert "eth0" in links(replacement)
    assert ping(replacement, results[1].ip)
    assert ping(pods[1], again.ip)

    # A pod whose namespace vanished: setup fails cleanly and gives back a
    # freshly allocated address.
    ghost = f"/var/run/netns/t-{secrets.token_hex(4)}"
    with pytest.raises(Exception):  # noqa: B017 - whichever error pyroute2 raises
        await restarted.setup("uid-ghost", ghost)
    assert restarted.pod_ip("uid-ghost") is None
    assert not exists(ghost), "a missing pod namespace must not be created"


@pytest.fixture
def sandbox_process() -> Iterator[int]:
    """A process in a network namespace of its own, as a pod sandbox is: the
    kubelet hands over /proc/<pid>/ns/net."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        deadline = 50
        while deadline and os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink(
            "/proc/self/ns/net"
        ):
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=False)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


async def test_sandbox_by_proc_path_and_mtu(
    node: str, make_netns: Callable[[], str], sandbox_process: int, tmp_path: Path
) -> None:
    net = BridgeNetwork(CIDR, tmp_path / "net", node_netns=node, mtu=1450)
    await net.ensure_bridge()
    other = make_netns()
    sandbox = await net.setup("uid-proc", f"/proc/{sandbox_process}/ns/net")
    peer = await net.setup("uid-peer", pod_path(other))

    inside = sh("nsenter", f"--net=/proc/{sandbox_process}/ns/net", "ip", "-o", "link").stdout
    assert "eth0" in inside and "mtu 1450" in inside
    assert "mtu 1450" in sh("ip", "-n", node, "link", "show", BRIDGE).stdout
    assert ping(other, sandbox.ip)
    assert (
        sh(
            "nsenter",
            f"--net=/proc/{sandbox_process}/ns/net",
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            peer.ip,
            check=False,
        ).returncode
        == 0
    )
    await net.teardown("uid-proc", f"/proc/{sandbox_process}/ns/net")
    assert host_veth_name("uid-proc") not in links(node)
