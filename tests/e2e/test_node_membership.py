"""Nodes joining and leaving a running cluster: a DaemonSet follows them, and
every peer's overlay tables (route, FDB entry, neighbour) follow them too."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, NotFoundError
from tests.e2e.conftest import LocalCluster, wait_for

pytestmark = pytest.mark.e2e

VXLAN_DEV = "orch.vxlan"


def overlay_tables(netns: str) -> str:
    """What a node's kernel knows about its peers: routes, FDB and neighbours."""
    out = []
    for cmd in (
        ["ip", "-n", netns, "route", "show"],
        ["bridge", "-n", netns, "fdb", "show", "dev", VXLAN_DEV],
        ["ip", "-n", netns, "neigh", "show", "dev", VXLAN_DEV],
    ):
        out.append(subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout)
    return "\n".join(out)


def daemonset(name: str, ns: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}
                        ],
                    },
                },
            },
        }
    )


async def daemon_nodes(client: Client, ns: str, name: str) -> set[str]:
    pods = (await client.list("Pod", ns, label_selector=f"app={name}")).items
    return {
        p.spec.node_name
        for p in pods
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    }


async def test_a_joining_node_gets_daemon_pods_and_peers_and_a_deleted_one_leaves(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    from deploy.local import cluster

    lay = local_cluster.layout
    count = lay.nodes
    names = [local_cluster.node_name(i) for i in range(1, count + 1)]
    await client.create(daemonset("agentish", namespace))
    await wait_for(
        lambda: _equal(daemon_nodes(client, namespace, "agentish"), set(names)),
        timeout=90,
        what="a daemon pod on every node",
    )

    # A node joins: the same `up`, one node more.
    new_index = count + 1
    newcomer = lay.node(new_index)
    up = cluster.up(local_cluster.name, new_index, config_path=local_cluster.config_path)
    assert up.ok, [n.error for n in up.failed]
    removed = False
    try:
        await wait_for(
            lambda: _equal(daemon_nodes(client, namespace, "agentish"), {*names, newcomer.name}),
            timeout=90,
            what="the DaemonSet to reach the new node",
        )
        joined = await client.get("Node", newcomer.name)
        cidr = joined.spec.pod_cidr
        vtep = joined.metadata.annotations["orchestrator.io/vtep-mac"]
        peer = lay.node(1).netns

        async def peer_knows() -> bool:
            tables = overlay_tables(peer)
            return cidr in tables and vtep in tables and newcomer.ip in tables

        await wait_for(peer_knows, timeout=30, what=f"node 1 to learn the route to {cidr}")

        # The node leaves: the host is retired and its Node object deleted.
        assert cluster.remove_node(local_cluster.name) == newcomer.name
        removed = True

        async def node_gone() -> bool:
            try:
                await client.get("Node", newcomer.name)
                return False
            except NotFoundError:
                return True

        await wait_for(node_gone, timeout=30, what="the Node object to go")

        async def peers_forgot() -> bool:
            for i in range(1, count + 1):
                tables = overlay_tables(lay.node(i).netns)
                if cidr in tables or vtep in tables or newcomer.ip + " " in tables:
                    return False
            return True

        await wait_for(peers_forgot, timeout=30, what="every peer to drop the node's entries")
        await wait_for(
            lambda: _equal(daemon_nodes(client, namespace, "agentish"), set(names)),
            timeout=60,
            what="the DaemonSet back to the remaining nodes",
        )
    finally:
        if not removed:  # the cluster goes back to its size for the tests after this one
            cluster.remove_node(local_cluster.name)


async def _equal(got: Any, want: set[str]) -> bool:
    return set(await got) == want
