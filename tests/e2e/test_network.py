"""Pod networking across nodes on a real local cluster: the VXLAN overlay."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.client.client import Client
from tests.e2e.conftest import LocalCluster, wait_for
from tests.e2e.test_pods import orchctl, pod, running

pytestmark = pytest.mark.e2e

WEB = [
    {
        "name": "web",
        "image": "busybox:1.36",
        "command": [
            "sh",
            "-c",
            'mkdir -p /www && echo "served by $(hostname)" > /www/index.html && '
            "exec httpd -f -p 8080 -h /www",
        ],
    }
]


async def test_pods_reach_each_other_across_every_node_pair(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    count = local_cluster.layout.nodes
    if count < 2:
        pytest.skip("needs at least two nodes")
    names = [f"web-{i}" for i in range(1, count + 1)]
    for i, name in enumerate(names, start=1):
        await client.create(pod(name, namespace, local_cluster.node_name(i), WEB))
    pods = {}
    for name in names:
        pods[name] = await wait_for(
            lambda name=name: running(client, name, namespace), what=f"{name} running"
        )
    cidrs = {p.status.pod_ip.rsplit(".", 1)[0] for p in pods.values()}
    assert len(cidrs) == count, "each node's pods come from its own /24"

    for src, dst in itertools.permutations(names, 2):
        target = pods[dst].status.pod_ip

        async def fetched(src: str = src, target: str = target, dst: str = dst) -> bool:
            out = orchctl(
                local_cluster,
                "exec",
                "-n",
                namespace,
                src,
                "--",
                # busybox-static's `wget -T` crashes; its `timeout` applet bounds it instead.
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                f"http://{target}:8080/",
            )
            return out.returncode == 0 and f"served by {dst}" in out.stdout

        await wait_for(fetched, timeout=30, what=f"{src} to fetch from {dst} at {target}")


async def test_nodes_publish_their_overlay_endpoint(client: Client) -> None:
    for node in (await client.list("Node")).items:
        notes = node.metadata.annotations
        assert notes.get("orchestrator.io/overlay-backend") == "vxlan", node.metadata.name
        assert notes.get("orchestrator.io/vtep-mac"), node.metadata.name
        assert notes.get("orchestrator.io/underlay-ip") == node.status.addresses[0].address
