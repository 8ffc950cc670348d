"""The node lifecycle controller and the orphaned-pod collector against an
in-memory API and a fake clock: what a monitor pass writes, the eviction rate
limit, the all-nodes-down protection, recovery, and the taint manager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from orchestrator.api.pb import coordination_v1_pb2 as coord
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import ConflictError, NotFoundError
from orchestrator.controllers.node_lifecycle import NodeLifecycleController
from orchestrator.controllers.node_lifecycle_podgc import OrphanedPodCollector
from orchestrator.controllers.node_lifecycle_taints import NOT_READY, UNREACHABLE

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def key_of(obj: Any) -> str:
    m = obj.metadata
    return f"{m.namespace}/{m.name}" if m.namespace else m.name


class FakeApi:
    """Objects by (kind, key) with resourceVersion compare-and-swap."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Any] = {}
        self.rv = 0
        self.deletes: list[tuple[str, str, int | None]] = []

    def put(self, obj: Any) -> Any:
        self.rv += 1
        stored = type(obj)()
        stored.CopyFrom(obj)
        stored.metadata.resource_version = str(self.rv)
        self.objects[(obj.kind, key_of(obj))] = stored
        return stored

    def peek(self, kind: str, key: str) -> Any:
        return self.objects[(kind, key)]

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        key = f"{namespace}/{name}" if namespace else name
        try:
            obj = self.objects[(kind, key)]
        except KeyError:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"{kind} {key} not found") from None
        copy = type(obj)()
        copy.CopyFrom(obj)
        return copy

    def _check(self, obj: Any) -> Any:
        current = self.objects.get((obj.kind, key_of(obj)))
        if current is None:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, "gone")
        if obj.metadata.resource_version != current.metadata.resource_version:
            raise ConflictError(grpc.StatusCode.ABORTED, "conflict")
        return current

    async def update(self, obj: Any) -> Any:
        current = self._check(obj)
        new = type(obj)()
        new.CopyFrom(obj)
        new.status.CopyFrom(current.status)
        return self.put(new)

    async def update_status(self, obj: Any) -> Any:
        current = self._check(obj)
        new = type(current)()
        new.CopyFrom(current)
        new.status.CopyFrom(obj.status)
        return self.put(new)

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        precondition_uid: str = "",
        **_: Any,
    ) -> tuple[Any, bool]:
        obj = await self.get(kind, name, namespace)
        if precondition_uid and obj.metadata.uid != precondition_uid:
            raise ConflictError(grpc.StatusCode.ABORTED, "uid precondition")
        self.deletes.append((kind, key_of(obj), grace_period))
        del self.objects[(kind, key_of(obj))]
        return obj, True

    async def create(self, obj: Any) -> Any:
        return self.put(obj)


class FakeInformer:
    """Always in sync with the fake API (the cache never lags here)."""

    def __init__(self, api: FakeApi, kind: str) -> None:
        self.api = api
        self.kind = kind

    def get(self, key: str) -> Any | None:
        return self.api.objects.get((self.kind, key))

    def list(self) -> list[Any]:
        return [o for (k, _), o in self.api.objects.items() if k == self.kind]


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def record(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((obj.metadata.name, type_, reason, message))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def mono(self) -> float:
        return self.t


def stamp(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def make_node(api: FakeApi, name: str, clock: Clock) -> None:
    n = core.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.uid = f"uid-{name}"
    n.metadata.creation_timestamp = stamp(clock)
    api.put(n)
    heartbeat(api, name, clock)


def heartbeat(api: FakeApi, name: str, clock: Clock) -> None:
    """What the agent does: renew the Lease and post Ready=True."""
    le = coord.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    le.metadata.name = name
    le.metadata.namespace = "kube-node-lease"
    le.spec.renew_time = clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.put(le)
    n = api.peek("Node", name)
    del n.status.conditions[:]
    n.status.conditions.add(
        type="Ready", status="True", reason="KubeletReady", last_heartbeat_time=stamp(clock)
    )
    api.put(n)


def make_pod(api: FakeApi, name: str, node: str, seconds: int | None = None) -> None:
    p = core.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.uid = f"uid-{name}"
    p.spec.node_name = node
    if seconds is not None:
        p.spec.tolerations.add(
            key=UNREACHABLE, operator="Exists", effect="NoExecute", toleration_seconds=seconds
        )
    p.status.phase = "Running"
    p.status.conditions.add(type="Ready", status="True")
    api.put(p)


def controller(api: FakeApi, clock: Clock, **kw: Any) -> NodeLifecycleController:
    c = NodeLifecycleController(
        api,  # type: ignore[arg-type]
        clock=clock.now,
        monotonic=clock.mono,
        **kw,
    )
    c.nodes = FakeInformer(api, "Node")  # type: ignore[assignment]
    c.leases = FakeInformer(api, "Lease")  # type: ignore[assignment]
    c.pods = FakeInformer(api, "Pod")  # type: ignore[assignment]
    c.recorder = FakeRecorder()  # type: ignore[assignment]
    for pod in c.pods.list():
        c._on_pod("ADDED", pod, None)
    return c


def taints(api: FakeApi, name: str) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in api.peek("Node", name).spec.taints}


def ready(api: FakeApi, name: str) -> str:
    return next(c.status for c in api.peek("Node", name).status.conditions if c.type == "Ready")


async def test_silent_node_goes_unknown_tainted_and_its_pods_not_ready() -> None:
    api, clock = FakeApi(), Clock()
    for name in ("a", "b"):
        make_node(api, name, clock)
    make_pod(api, "web", "a")
    c = controller(api, clock)
    await c.monitor_pass()
    assert ready(api, "a") == "True" and taints(api, "a") == set()

    clock.t = 45
    heartbeat(api, "b", clock)
    await c.monitor_pass()
    assert ready(api, "a") == "True"  # within the 50 s grace

    clock.t = 51
    await c.monitor_pass()
    node = api.peek("Node", "a")
    cond = next(c for c in node.status.conditions if c.type == "Ready")
    assert (cond.status, cond.reason, cond.message) == (
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    )
    assert {c.type for c in node.status.conditions if c.status == "Unknown"} == {
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
    }
    assert taints(api, "a") == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
    assert taints(api, "b") == set()
    pod = api.peek("Pod", "default/web")
    assert next(c.status for c in pod.status.conditions if c.type == "Ready") == "False"
    events = c.recorder.events  # type: ignore[attr-defined]
    assert ("a", "Normal", "NodeNotReady", "Node a status is now: NodeNotReady") in events
    assert ("web", "Warning", "NodeNotReady", "Node is not ready") in events

    # The agent comes back: conditions are its own again, taints go.
    clock.t = 60
    heartbeat(api, "a", clock)
    heartbeat(api, "b", clock)
    await c.monitor_pass()
    assert ready(api, "a") == "True"
    assert taints(api, "a") == set()
    assert ("a", "Normal", "NodeReady", "Node a status is now: NodeReady") in events


async def test_ready_false_gets_not_ready_taints_and_swaps_without_waiting() -> None:
    api, clock = FakeApi(), Clock()
    for name in ("a", "b"):
        make_node(api, name, clock)
    c = controller(api, clock)
    n = api.peek("Node", "a")
    n.status.conditions[0].status = "False"
    api.put(n)
    await c.monitor_pass()
    assert taints(api, "a") == {(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")}
    # Then it goes silent: unreachable replaces not-ready at once, limiter or not.
    clock.t = 55
    heartbeat(api, "b", clock)
    await c.monitor_pass()
    assert taints(api, "a") == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}


async def test_no_execute_taints_are_rate_limited_per_zone() -> None:
    api, clock = FakeApi(), Clock()
    names = [f"n{i}" for i in range(6)]
    for name in names:
        make_node(api, name, clock)
    c = controller(api, clock)
    await c.monitor_pass()
    clock.t = 60
    for name in names[3:]:
        heartbeat(api, name, clock)
    await c.monitor_pass()  # 3 of 6 down: 50 %, a normal zone, 0.1 nodes/s
    tainted = [n for n in names if (UNREACHABLE, "NoExecute") in taints(api, n)]
    assert len(tainted) == 1
    # NoSchedule taints are not rate limited.
    assert all((UNREACHABLE, "NoSchedule") in taints(api, n) for n in names[:3])
    clock.t = 65
    for name in names[3:]:
        heartbeat(api, name, clock)
    await c.monitor_pass()
    assert len([n for n in names if (UNREACHABLE, "NoExecute") in taints(api, n)]) == 1
    clock.t = 70
    for name in names[3:]:
        heartbeat(api, name, clock)
    await c.monitor_pass()
    assert len([n for n in names if (UNREACHABLE, "NoExecute") in taints(api, n)]) == 2


async def test_partial_disruption_of_a_small_zone_stops_tainting() -> None:
    api, clock = FakeApi(), Clock()
    names = [f"n{i}" for i in range(5)]
    for name in names:
        make_node(api, name, clock)
    c = controller(api, clock)
    await c.monitor_pass()
    clock.t = 60
    heartbeat(api, "n4", clock)  # 4 of 5 down: partial disruption, small zone
    await c.monitor_pass()
    assert not any((UNREACHABLE, "NoExecute") in taints(api, n) for n in names)


async def test_all_nodes_down_means_no_eviction_taints_at_all() -> None:
    api, clock = FakeApi(), Clock()
    for name in ("a", "b"):
        make_node(api, name, clock)
    make_pod(api, "web", "a")
    c = controller(api, clock)
    await c.monitor_pass()
    # a dies first and is tainted...
    clock.t = 30
    heartbeat(api, "b", clock)
    clock.t = 55
    await c.monitor_pass()
    assert (UNREACHABLE, "NoExecute") in taints(api, "a")
    # ...then b too (its last heartbeat was noticed at 55 s): full disruption,
    # and the NoExecute taints are taken back.
    clock.t = 106
    await c.monitor_pass()
    assert c.all_down
    for name in ("a", "b"):
        assert ready(api, name) == "Unknown"
        assert taints(api, name) == {(UNREACHABLE, "NoSchedule")}
    await c.sync("default/web")
    assert ("Pod", "default/web", None) not in api.deletes
    # b returns: out of disruption mode. a is still Unknown (only its agent can
    # say otherwise), so it is tainted again at the normal rate, as in Kubernetes.
    clock.t = 110
    heartbeat(api, "b", clock)
    await c.monitor_pass()
    assert not c.all_down
    assert (UNREACHABLE, "NoExecute") in taints(api, "a")
    assert (UNREACHABLE, "NoExecute") not in taints(api, "b")


async def test_taint_manager_evicts_after_toleration_seconds() -> None:
    api, clock = FakeApi(), Clock()
    for name in ("a", "b"):
        make_node(api, name, clock)
    make_pod(api, "bare", "a")  # no toleration: out at once
    make_pod(api, "patient", "a", seconds=300)
    make_pod(api, "stubborn", "a")
    api.peek("Pod", "default/stubborn").spec.tolerations.add(
        key=UNREACHABLE, operator="Exists", effect="NoExecute"
    )
    c = controller(api, clock)
    await c.monitor_pass()
    clock.t = 51
    heartbeat(api, "b", clock)
    await c.monitor_pass()
    assert (UNREACHABLE, "NoExecute") in taints(api, "a")

    for key in ("default/bare", "default/patient", "default/stubborn"):
        await c.sync(key)
    assert [d[1] for d in api.deletes] == ["default/bare"]
    assert api.deletes[0][2] is None  # the pod's own grace period
    events = c.recorder.events  # type: ignore[attr-defined]
    assert (
        "bare",
        "Normal",
        "TaintManagerEviction",
        "Marking for deletion Pod default/bare",
    ) in events

    clock.t = 51 + 299
    await c.sync("default/patient")
    assert len(api.deletes) == 1
    clock.t = 51 + 300
    await c.sync("default/patient")
    await c.sync("default/stubborn")
    assert [d[1] for d in api.deletes] == ["default/bare", "default/patient"]


async def test_pod_gc_force_deletes_pods_of_deleted_nodes_only() -> None:
    api, clock = FakeApi(), Clock()
    make_node(api, "a", clock)
    make_pod(api, "on-a", "a")
    make_pod(api, "on-ghost", "ghost")
    gc = OrphanedPodCollector(api, clock=clock.now)  # type: ignore[arg-type]
    gc.nodes = FakeInformer(api, "Node")  # type: ignore[assignment]
    gc.pods = FakeInformer(api, "Pod")  # type: ignore[assignment]
    await gc.sync("default/on-a")
    await gc.sync("default/on-ghost")
    assert api.deletes == [("Pod", "default/on-ghost", 0)]
