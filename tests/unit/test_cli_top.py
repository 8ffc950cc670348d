"""orchctl top and autoscale: kubectl's tables and the HPA it creates."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.cli import autoscale, top
from orchestrator.cli.errors import CliError
from orchestrator.cli.main import build_parser, parse
from orchestrator.client.client import NotFoundError

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def _pm(name: str, ns: str = "default", **containers: tuple[int, int]) -> pb.PodMetrics:
    item = pb.PodMetrics(namespace=ns, name=name, node="n1", timestamp="2026-01-01T12:00:00Z")
    for cname, (cpu, mem) in containers.items():
        item.containers.add(name=cname, cpu_millicores=cpu, memory_working_set_bytes=mem)
    return item


def _node(name: str, cpu: str = "4", memory: str = "8Gi") -> Any:
    node = kind_info("Node").new()
    node.metadata.name = name
    node.status.allocatable["cpu"] = cpu
    node.status.allocatable["memory"] = memory
    return node


ITEMS = [
    _pm("web", main=(120, 40 * MIB), side=(5, 8 * MIB)),
    _pm("db", ns="prod", main=(300, 512 * MIB + 1)),
]


def test_pod_table_like_kubectl() -> None:
    assert top.pod_rows(ITEMS) == [
        ["NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["web", "125m", "48Mi"],
        ["db", "300m", "512Mi"],
    ]
    assert top.pod_rows(ITEMS, all_namespaces=True, sort_by="cpu", headers=False) == [
        ["prod", "db", "300m", "512Mi"],
        ["default", "web", "125m", "48Mi"],
    ]
    assert top.pod_rows(ITEMS[:1], containers=True) == [
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["web", "main", "120m", "40Mi"],
        ["web", "side", "5m", "8Mi"],
    ]


def test_node_table_with_percentages_and_unknowns() -> None:
    metrics = {
        "n1": pb.NodeMetrics(name="n1", cpu_millicores=1000, memory_working_set_bytes=2 << 30),
        "n2": pb.NodeMetrics(name="n2", cpu_millicores=3900, memory_working_set_bytes=1 << 30),
    }
    rows = top.node_rows([_node("n3"), _node("n2"), _node("n1")], metrics, sort_by="cpu")
    assert rows == [
        ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
        ["n2", "3900m", "97%", "1024Mi", "12%"],
        ["n1", "1000m", "25%", "2048Mi", "25%"],
        ["n3", "<unknown>", "<unknown>", "<unknown>", "<unknown>"],
    ]
    bare = kind_info("Node").new()
    bare.metadata.name = "n1"
    assert top.node_rows([bare], metrics, headers=False)[0][2] == "<unknown>"


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.created: list[Any] = []
        self.missing = False

    async def pod_metrics(self, namespace: str, **kw: Any) -> list[pb.PodMetrics]:
        self.asked.append({"namespace": namespace, **kw})
        if kw.get("name") == "gone":
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, "not found")
        return ITEMS[:1] if kw.get("name") != "none" else []

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        if self.missing:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f'deployments.apps "{name}" not found')
        return kind_info(kind).new()

    async def create(self, obj: Any, *, dry_run: bool = False) -> Any:
        self.created.append((obj, dry_run))
        return obj


class FakeSession:
    def __init__(self, client: FakeClient) -> None:
        self._client = client
        self.namespace = "shop"

    async def client(self) -> FakeClient:
        return self._client


def _args(argv: list[str]) -> argparse.Namespace:
    return parse(build_parser(), argv)


async def test_top_pods_command(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    args = _args(["top", "pods", "-l", "app=web", "--containers"])
    assert await args.func(FakeSession(client), args) == 0
    assert client.asked == [
        {"namespace": "shop", "name": "", "label_selector": "app=web", "all_namespaces": False}
    ]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert out[1].split() == ["web", "main", "120m", "40Mi"]
    args = _args(["top", "po", "gone"])
    with pytest.raises(CliError, match="Metrics not available for pod shop/gone"):
        await args.func(FakeSession(client), args)
    args = _args(["top", "pod", "none"])
    with pytest.raises(CliError, match="Metrics not available for pods in shop namespace"):
        await args.func(FakeSession(client), args)


def test_autoscale_builds_the_hpa_kubectl_would() -> None:
    assert autoscale.parse_target(["deployment/web"]) == ("Deployment", "web")
    assert autoscale.parse_target(["rs", "web-1"]) == ("ReplicaSet", "web-1")
    assert autoscale.parse_target(["sts/db"]) == ("StatefulSet", "db")
    with pytest.raises(CliError, match="cannot autoscale a Pod"):
        autoscale.parse_target(["pod/web"])
    with pytest.raises(CliError, match="TYPE/NAME"):
        autoscale.parse_target(["web"])
    hpa = autoscale.build_hpa(
        "Deployment", "web", "shop", max_replicas=10, min_replicas=2, cpu_percent=80
    )
    ref = hpa.spec.scale_target_ref
    assert (hpa.metadata.name, hpa.metadata.namespace) == ("web", "shop")
    assert (ref.kind, ref.name, ref.api_version) == ("Deployment", "web", "apps/v1")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 10)
    target = hpa.spec.metrics[0].resource
    assert (target.name, target.target.type, target.target.average_utilization) == (
        "cpu",
        "Utilization",
        80,
    )
    bare = autoscale.build_hpa("Deployment", "web", "shop", max_replicas=3, hpa_name="x")
    assert not bare.spec.HasField("min_replicas") and not bare.spec.metrics
    assert bare.metadata.name == "x"
    with pytest.raises(CliError, match="--max"):
        autoscale.build_hpa("Deployment", "web", "shop", max_replicas=-1)
    with pytest.raises(CliError, match="may not be more than"):
        autoscale.build_hpa("Deployment", "web", "shop", max_replicas=2, min_replicas=3)


async def test_autoscale_command(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    args = _args(
        ["autoscale", "deployment/web", "--min", "2", "--max", "10", "--cpu-percent", "80"]
    )
    assert await args.func(FakeSession(client), args) == 0
    assert capsys.readouterr().out == "horizontalpodautoscaler.autoscaling/web autoscaled\n"
    ((hpa, dry_run),) = client.created
    assert hpa.spec.max_replicas == 10 and not dry_run
    client.missing = True
    assert await args.func(FakeSession(client), args) == 1
    assert 'deployments.apps "web" not found' in capsys.readouterr().err
