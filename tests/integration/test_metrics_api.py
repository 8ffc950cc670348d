"""The metrics API and the HPA through a real control plane.

A real `orchestrator serve` (apiserver + the HPA controller only) reaches an
in-process agent server over mutual TLS, exactly as it reaches a node's
agent for logs; the agent's usage collector is replaced by a fixed answer,
so the numbers are known. Checked: PodMetrics/NodeMetrics fan-out with one
node unreachable, who may read metrics, `orchctl top`, and an HPA created
by `orchctl autoscale` scaling a Deployment from those metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.server import AgentServer
from certs import pki
from certs.bundle import ClusterPKI
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.client.client import Client, ForbiddenError, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NS = "metrics"
HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


class FixedStats:
    """The agent's collector, replaced: a known answer, counted."""

    def __init__(self) -> None:
        self.response = apb.StatsResponse()
        self.calls = 0

    def snapshot(self) -> apb.StatsResponse:
        self.calls += 1
        return self.response


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        tmp_path_factory.mktemp("metrics-cp"),
        serve_args=("--controllers", "horizontalpodautoscaling"),
    )
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
async def agent(cp: ControlPlane) -> AsyncIterator[tuple[AgentServer, FixedStats]]:
    ca = ClusterPKI(cp.data_dir).cluster_ca()
    serving = pki.issue_certificate(
        ca,
        common_name="system:node:n1",
        organizations=["system:nodes"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )
    stats = FixedStats()
    server = AgentServer(
        "unix:///nonexistent/docker.sock",
        ca_pem=ca.cert_pem,
        cert_pem=serving.cert_pem,
        key_pem=serving.key_pem,
        listen="127.0.0.1:0",
        stats=stats,
    )
    await server.start()
    yield server, stats
    await server.stop()


def _client_as(cp: ControlPlane, cn: str, orgs: list[str]) -> Client:
    ca = ClusterPKI(cp.data_dir).cluster_ca()
    pair = pki.issue_certificate(ca, common_name=cn, organizations=orgs, client=True)
    conn = dataclasses.replace(cp.connection(), cert_pem=pair.cert_pem, key_pem=pair.key_pem)
    return Client(conn)


async def _node(admin: Client, name: str, port: int) -> None:
    node = kind_info("Node").new()
    node.metadata.name = name
    node.status.addresses.add(type="InternalIP", address="127.0.0.1")
    node.status.daemon_endpoints.kubelet_endpoint.port = port
    node.status.allocatable["cpu"] = "2"
    node.status.allocatable["memory"] = "4Gi"
    await admin.create(node)


async def _running_pod(admin: Client, name: str, node: str) -> Any:
    pod = kind_info("Pod").new()
    pod.metadata.name = name
    pod.metadata.namespace = NS
    pod.metadata.labels["app"] = "web"
    pod.spec.node_name = node
    c = pod.spec.containers.add(name="main", image="busybox:1.36", command=["sleep", "3600"])
    c.resources.requests["cpu"] = "100m"
    created = await admin.create(pod)
    # Running and ready for an hour, as its agent would have reported it.
    created.status.phase = "Running"
    created.status.start_time = HOUR_AGO
    created.status.conditions.add(type="Ready", status="True", last_transition_time=HOUR_AGO)
    return await admin.update_status(created)


def _orchctl(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        env=cp.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_metrics_api_top_and_autoscaling(
    cp: ControlPlane, agent: tuple[AgentServer, FixedStats]
) -> None:
    server, stats = agent
    admin = cp.client()
    alice = _client_as(cp, "alice", ["developers"])
    controllers = _client_as(cp, "system:kube-controller-manager", [])
    try:
        await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        await _node(admin, "n1", server.port)
        await _node(admin, "ghost", 1)  # nothing listens there
        web_a = await _running_pod(admin, "web-a", "n1")
        web_b = await _running_pod(admin, "web-b", "n1")
        await _running_pod(admin, "haunted", "ghost")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stats.response.node.CopyFrom(
            apb.NodeStats(
                cpu_millicores=500,
                memory_working_set_bytes=1 << 30,
                timestamp=now,
                window_seconds=10,
            )
        )
        for pod in (web_a, web_b):
            p = stats.response.pods.add(
                namespace=NS,
                name=pod.metadata.name,
                uid=pod.metadata.uid,
                timestamp=now,
                window_seconds=10,
            )
            p.containers.add(name="main", cpu_millicores=200, memory_working_set_bytes=32 << 20)

        # Fan-out: the unreachable node costs only its own pod, and little time.
        started = time.monotonic()
        items = await admin.pod_metrics(NS)
        assert time.monotonic() - started < 10
        assert [(i.name, i.node, i.containers[0].cpu_millicores) for i in items] == [
            ("web-a", "n1", 200),
            ("web-b", "n1", 200),
        ]
        assert [n.name for n in await admin.node_metrics()] == ["n1"]
        with pytest.raises(NotFoundError, match="haunted"):
            await admin.pod_metrics(NS, name="haunted")
        calls = stats.calls
        await admin.pod_metrics(NS, label_selector="app=web")
        assert stats.calls == calls  # answered from the apiserver's cache

        # Who may read: admins and the controller-manager, not everyone.
        assert len(await controllers.pod_metrics(NS)) == 2
        with pytest.raises(ForbiddenError, match="pods/metrics"):
            await alice.pod_metrics(NS)
        with pytest.raises(ForbiddenError, match="nodes/metrics"):
            await alice.node_metrics()

        top = await asyncio.to_thread(_orchctl, cp, "top", "pods", "-n", NS)
        assert top.returncode == 0, top.stderr
        assert [line.split() for line in top.stdout.splitlines()] == [
            ["NAME", "CPU(cores)", "MEMORY(bytes)"],
            ["web-a", "200m", "32Mi"],
            ["web-b", "200m", "32Mi"],
        ]
        top = await asyncio.to_thread(_orchctl, cp, "top", "nodes")
        assert top.returncode == 0, top.stderr
        assert [line.split() for line in top.stdout.splitlines()] == [
            ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
            ["n1", "500m", "25%", "1024Mi", "25%"],
            ["ghost", "<unknown>", "<unknown>", "<unknown>", "<unknown>"],
        ]

        # An HPA on a Deployment whose two pods use 200% of their request.
        await admin.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "busybox:1.36",
                                    "resources": {"requests": {"cpu": "100m"}},
                                }
                            ]
                        },
                    },
                },
            }
        )
        made = await asyncio.to_thread(
            _orchctl,
            cp,
            "autoscale",
            "deployment/web",
            "-n",
            NS,
            "--min",
            "1",
            "--max",
            "5",
            "--cpu-percent",
            "50",
        )
        assert made.stdout == "horizontalpodautoscaler.autoscaling/web autoscaled\n", made.stderr
        # 200% against 50% wants 8; maxReplicas holds it at 5.
        deadline = time.monotonic() + 60
        while True:
            deployment = await admin.get("Deployment", "web", NS)
            hpa = await admin.get("HorizontalPodAutoscaler", "web", NS)
            if deployment.spec.replicas == 5 and hpa.status.desired_replicas == 5:
                break
            assert time.monotonic() < deadline, f"not rescaled: {hpa.status}"
            await asyncio.sleep(0.5)
        assert hpa.status.current_metrics[0].resource.current.average_utilization == 200
        assert hpa.status.last_scale_time
        conditions = {c.type: (c.status, c.reason) for c in hpa.status.conditions}
        assert conditions["ScalingActive"] == ("True", "ValidMetricFound")
        assert conditions["ScalingLimited"] == ("True", "TooManyReplicas")
        events = await admin.list("Event", NS)
        assert any(
            e.reason == "SuccessfulRescale" and e.message.startswith("New size: 5;")
            for e in events.items
        )
        got = await asyncio.to_thread(_orchctl, cp, "get", "hpa", "-n", NS)
        assert "cpu: 200%/50%" in got.stdout, got.stdout
    finally:
        for c in (admin, alice, controllers):
            await c.close()
