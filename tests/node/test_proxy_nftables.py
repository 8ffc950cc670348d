"""The Service proxy's nftables mode for real: the scenarios of
test_proxy_iptables.py (its namespaces, bridge, "pods" and LAN host, imported
from there) against `ip orch-proxy` rules applied with `nft -f`.

Every namespace is created with a unique `tpx-<hex>` name and deleted in
teardown (the namespaces fixture), which takes its nftables table with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator

import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ip", "nft", "nsenter", "iptables")),
        reason="needs ip, nft (Debian package nftables), nsenter and iptables",
    ),
]

pytest.importorskip("pyroute2")

from agent.network.proxy.conntrack import ConntrackTool  # noqa: E402
from agent.network.proxy.nft_rules import SERVICES, NftRuleset  # noqa: E402
from agent.network.proxy.proxier import ServiceProxy  # noqa: E402
from tests.node.test_proxy_iptables import (  # noqa: E402
    CLUSTER,
    NODE_LAN_IP,
    Cluster,
    NoInformer,
    client,
    cluster,
    endpoints,
    in_ns,
    ip_of,
    namespaces,
    service,
)

__all__ = ["cluster", "namespaces"]  # fixtures, imported to be found by pytest


def ruleset(c: Cluster) -> str:
    return in_ns(c.node, "nft", "list", "table", "ip", "orch-proxy").stdout


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[ServiceProxy]:
    p = ServiceProxy(
        None,
        "node-t",
        cluster_cidr=CLUSTER,
        mode="nftables",
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

    # an endpoint goes: no more traffic to it, and only its Service's chain
    # was rewritten
    proxy.on_endpoints("MODIFIED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    assert proxy.last_sync is not None and not proxy.last_sync.full
    assert proxy.last_sync.chains_written == 1
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

    # endpoints arrive: the reject goes, the Service answers
    proxy.on_endpoints("ADDED", endpoints("empty", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    assert client(cluster.pods["client"][0], "10.96.5.4", 80) == ["pod-a"]
    assert client(cluster.lan, NODE_LAN_IP, 30081) == ["pod-a"]


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
    # a full resync keeps the affinity sets, and with them the choice
    first = client(cluster.pods["client"][0], "10.96.5.5", 80)
    assert await proxy.sync(full=True)
    assert client(cluster.pods["client"][0], "10.96.5.5", 80, n=5) == first * 5


async def test_failed_apply_keeps_previous_rules_and_logs_the_line(
    cluster: Cluster, proxy: ServiceProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.on_service("ADDED", service("web", "10.96.5.6"))
    proxy.on_endpoints("ADDED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    before = ruleset(cluster)
    bad = "tcp dport 1 no-such-statement"

    def inject(rs: NftRuleset) -> None:
        rs.fixed[SERVICES].insert(0, bad)

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
    assert "line " in caplog.text
    assert ruleset(cluster) == before
    assert client(cluster.pods["client"][0], "10.96.5.6", 80) == ["pod-a"]

    proxy.render_hook = None
    proxy.on_endpoints("MODIFIED", endpoints("web", [ip_of(cluster, "pod-b")]))
    await proxy.wait_applied()
    assert client(cluster.pods["client"][0], "10.96.5.6", 80) == ["pod-b"]


async def test_stale_chains_removed_on_full_sync(cluster: Cluster, proxy: ServiceProxy) -> None:
    proxy.on_service("ADDED", service("web", "10.96.5.7", node_port=30082))
    proxy.on_endpoints("ADDED", endpoints("web", [ip_of(cluster, "pod-a")]))
    await proxy.wait_applied()
    in_ns(cluster.node, "nft", "add", "chain", "ip", "orch-proxy", "svc-STALESTALESTALE")
    in_ns(cluster.node, "nft", "add", "table", "ip", "other")
    in_ns(cluster.node, "nft", "add", "chain", "ip", "other", "svc-NOTOURS")
    proxy.on_service("DELETED", service("web", "10.96.5.7"))
    await proxy.wait_applied()  # the loop's own sync first: two at once would race
    assert await proxy.sync(full=True)
    rules = ruleset(cluster)
    assert "svc-" not in rules and "ext-" not in rules and "10.96.5.7" not in rules
    assert "chain svc-NOTOURS" in in_ns(cluster.node, "nft", "list", "table", "ip", "other").stdout
    # the pod network's iptables chains are left alone
    assert ":ORCH-POSTROUTING" in in_ns(cluster.node, "iptables-save", "-t", "nat").stdout


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
