"""The apiserver's metrics API without a network: which agents it asks,
what it answers, its cache and concurrency bound, unreachable nodes, and
who may read metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.apiserver.authz import Attributes, default_authorizer
from orchestrator.apiserver.cache import CachedObject, Filter
from orchestrator.apiserver.errors import Forbidden, NotFound
from orchestrator.apiserver.metrics import MetricsApi
from orchestrator.apiserver.registry import UserInfo

pytestmark = pytest.mark.unit

ADMIN = UserInfo("admin", ("system:masters",))
CONTROLLERS = UserInfo("system:kube-controller-manager", ())
SCHEDULER = UserInfo("system:kube-scheduler", ())
NODE1 = UserInfo("system:node:n1", ("system:nodes",))
ALICE = UserInfo("alice", ("developers",))


def _pod(name: str, node: str, ns: str = "default", app: str = "web") -> Any:
    pod = kind_info("Pod").new()
    pod.metadata.name = name
    pod.metadata.namespace = ns
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.labels["app"] = app
    pod.spec.node_name = node
    return pod


def _node(name: str, ip: str) -> Any:
    node = kind_info("Node").new()
    node.metadata.name = name
    node.metadata.labels["zone"] = "a" if name != "n3" else "b"
    node.status.addresses.add(type="InternalIP", address=ip)
    return node


class FakeCache:
    def __init__(self, *objs: Any) -> None:
        self.objs: dict[tuple[str, str, str], CachedObject] = {}
        for obj in objs:
            info = kind_info(obj.kind)
            fields = {"spec.nodeName": obj.spec.node_name} if obj.kind == "Pod" else {}
            self.objs[(obj.kind, obj.metadata.namespace, obj.metadata.name)] = CachedObject(
                info,
                obj.metadata.namespace,
                obj.metadata.name,
                obj.SerializeToString(),
                1,
                dict(obj.metadata.labels),
                fields,
            )

    def get(self, info: Any, namespace: str, name: str) -> CachedObject | None:
        return self.objs.get((info.kind, namespace, name))

    def list(self, info: Any, flt: Filter) -> list[CachedObject]:
        return [o for (kind, _, _), o in self.objs.items() if kind == info.kind and flt.matches(o)]


def _stats(*pods: tuple[str, int], node_cpu: int = 900) -> apb.StatsResponse:
    resp = apb.StatsResponse()
    resp.node.cpu_millicores = node_cpu
    resp.node.memory_working_set_bytes = 2 << 30
    resp.node.timestamp = "2026-01-01T12:00:00Z"
    resp.node.window_seconds = 10
    for name, cpu in pods:
        p = resp.pods.add(
            namespace="default",
            name=name,
            uid=f"uid-{name}",
            timestamp="2026-01-01T12:00:00Z",
            window_seconds=10,
        )
        p.containers.add(name="main", cpu_millicores=cpu, memory_working_set_bytes=64 << 20)
    return resp


class Agents:
    """Agent stubs by target: an answer, or a gRPC error; records calls and concurrency."""

    def __init__(self, answers: dict[str, apb.StatsResponse | grpc.StatusCode]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.timeouts: list[float] = []
        self.active = 0
        self.most_active = 0
        self.delay = 0.0

    def stub_for(self, target: str) -> Any:
        agents = self

        class Stub:
            async def Stats(self, request: Any, *, timeout: float) -> apb.StatsResponse:
                agents.calls.append(target)
                agents.timeouts.append(timeout)
                agents.active += 1
                agents.most_active = max(agents.most_active, agents.active)
                try:
                    await asyncio.sleep(agents.delay)
                    answer = agents.answers[target]
                    if isinstance(answer, grpc.StatusCode):
                        raise grpc.aio.AioRpcError(
                            answer, grpc.aio.Metadata(), grpc.aio.Metadata(), "connect failed"
                        )
                    return answer
                finally:
                    agents.active -= 1

        return Stub()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _api(agents: Agents, *objs: Any, **kw: Any) -> tuple[MetricsApi, Clock]:
    cache = FakeCache(*objs)
    clock = Clock()
    api = MetricsApi(cache, default_authorizer(cache), agents.stub_for, clock=clock, **kw)  # type: ignore[arg-type]
    return api, clock


WORLD = (
    _node("n1", "192.0.2.11"),
    _node("n2", "192.0.2.12"),
    _node("n3", "192.0.2.13"),
    _pod("web-1", "n1"),
    _pod("web-2", "n2"),
    _pod("web-3", "n3"),
    _pod("db", "n1", app="db"),
    _pod("pending", ""),
    _pod("other", "n1", ns="prod"),
)


async def test_pod_metrics_fan_out_to_the_pods_nodes() -> None:
    agents = Agents(
        {
            "192.0.2.11:10250": _stats(("web-1", 120), ("db", 5)),
            "192.0.2.12:10250": _stats(("web-2", 80), ("stale-uid-pod", 1)),
            "192.0.2.13:10250": grpc.StatusCode.UNAVAILABLE,  # n3 is down
        }
    )
    api, _ = _api(agents, *WORLD)
    req = pb.PodMetricsRequest(namespace="default", label_selector="app=web")
    resp = await api.pod_metrics(ADMIN, req)
    # n3's pod is missing, not an error; the pending pod asked nobody.
    assert [(i.name, i.node, i.containers[0].cpu_millicores) for i in resp.items] == [
        ("web-1", "n1", 120),
        ("web-2", "n2", 80),
    ]
    assert sorted(agents.calls) == ["192.0.2.11:10250", "192.0.2.12:10250", "192.0.2.13:10250"]
    assert set(agents.timeouts) == {5.0}
    item = resp.items[0]
    assert (item.namespace, item.uid, item.timestamp, item.window_seconds) == (
        "default",
        "uid-web-1",
        "2026-01-01T12:00:00Z",
        10,
    )


async def test_answers_are_cached_for_the_ttl_and_shared() -> None:
    agents = Agents({"192.0.2.11:10250": _stats(("web-1", 120))})
    api, clock = _api(agents, _node("n1", "192.0.2.11"), _pod("web-1", "n1"))
    agents.delay = 0.05
    req = pb.PodMetricsRequest(namespace="default")
    # Concurrent requests share one call to the agent.
    await asyncio.gather(*(api.pod_metrics(ADMIN, req) for _ in range(5)))
    assert len(agents.calls) == 1
    clock.now += 9
    await api.pod_metrics(ADMIN, req)
    assert len(agents.calls) == 1
    clock.now += 2
    await api.pod_metrics(ADMIN, req)
    assert len(agents.calls) == 2


async def test_calls_in_flight_are_bounded() -> None:
    objs: list[Any] = []
    answers: dict[str, Any] = {}
    for i in range(8):
        objs += [_node(f"m{i}", f"192.0.2.{20 + i}"), _pod(f"p{i}", f"m{i}")]
        answers[f"192.0.2.{20 + i}:10250"] = _stats((f"p{i}", i))
    agents = Agents(answers)
    agents.delay = 0.02
    api, _ = _api(agents, *objs, max_parallel=3)
    resp = await api.pod_metrics(ADMIN, pb.PodMetricsRequest())
    assert len(resp.items) == 8 and agents.most_active == 3


async def test_one_pod_or_node_by_name() -> None:
    agents = Agents(
        {
            "192.0.2.11:10250": _stats(("web-1", 120), node_cpu=700),
            "192.0.2.12:10250": _stats(),
            "192.0.2.13:10250": grpc.StatusCode.UNAVAILABLE,
        }
    )
    api, _ = _api(agents, *WORLD)
    one = await api.pod_metrics(ADMIN, pb.PodMetricsRequest(name="web-1"))
    assert [i.name for i in one.items] == ["web-1"] and agents.calls == ["192.0.2.11:10250"]
    with pytest.raises(NotFound, match=r'podmetrics\.metrics\.k8s\.io "default/web-2" not found'):
        await api.pod_metrics(ADMIN, pb.PodMetricsRequest(name="web-2"))
    with pytest.raises(NotFound, match="default/nope"):
        await api.pod_metrics(ADMIN, pb.PodMetricsRequest(name="nope"))
    nodes = await api.node_metrics(ADMIN, pb.NodeMetricsRequest())
    assert [(n.name, n.cpu_millicores) for n in nodes.items] == [("n1", 700), ("n2", 900)]
    zone_b = await api.node_metrics(ADMIN, pb.NodeMetricsRequest(label_selector="zone=b"))
    assert list(zone_b.items) == []
    with pytest.raises(NotFound, match=r'nodemetrics\.metrics\.k8s\.io "n3" not found'):
        await api.node_metrics(ADMIN, pb.NodeMetricsRequest(name="n3"))


async def test_only_admins_and_the_controller_manager_read_metrics() -> None:
    agents = Agents({"192.0.2.11:10250": _stats(("web-1", 1))})
    api, _ = _api(agents, _node("n1", "192.0.2.11"), _pod("web-1", "n1"))
    for user in (ADMIN, CONTROLLERS):
        assert (await api.pod_metrics(user, pb.PodMetricsRequest(namespace="default"))).items
        assert (await api.node_metrics(user, pb.NodeMetricsRequest())).items
    for user in (SCHEDULER, NODE1, ALICE):
        with pytest.raises(Forbidden) as err:
            await api.pod_metrics(user, pb.PodMetricsRequest(namespace="default"))
        assert err.value.message == (
            f'user "{user.name}" cannot list resource pods/metrics in the namespace "default"'
        )
        with pytest.raises(Forbidden, match="nodes/metrics"):
            await api.node_metrics(user, pb.NodeMetricsRequest(name="n1"))
    # Refused before asking any agent.
    assert agents.calls == ["192.0.2.11:10250"]
    # The controller-manager keeps what it had; the node its own pods (not their metrics).
    authz = default_authorizer(FakeCache(_pod("web-1", "n1")))  # type: ignore[arg-type]
    pods = kind_info("Pod")
    assert authz.authorize(CONTROLLERS, Attributes("update", pods, "default", "web-1")).allowed
    assert authz.authorize(NODE1, Attributes("get", pods, "default", "web-1")).allowed
    assert not authz.authorize(
        NODE1, Attributes("get", pods, "default", "web-1", "metrics")
    ).allowed
