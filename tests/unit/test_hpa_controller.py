"""The HPA controller's syncs against a fake API, a fake metrics source and
an explicit clock: rescaling the target, the stabilization window over
several syncs, conditions, events and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.client.client import ConflictError, NotFoundError
from orchestrator.controllers.hpa import HorizontalPodAutoscalerController
from orchestrator.controllers.hpa_metrics import ContainerUsage, PodUsage

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KEY = "default/web"


def ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeInformer:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def get(self, key: str) -> Any | None:
        for obj in self.items:
            if f"{obj.metadata.namespace}/{obj.metadata.name}" == key:
                return obj
        return None

    def list(self) -> list[Any]:
        return list(self.items)


class FakeClient:
    """Deployments by name; counts updates; can fail the next update with a conflict."""

    def __init__(self, *targets: Any) -> None:
        self.targets = {(t.kind, t.metadata.name): t for t in targets}
        self.updates: list[tuple[str, int]] = []
        self.statuses: list[Any] = []
        self.conflicts = 0

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        found = self.targets.get((kind, name))
        if found is None:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f'{kind.lower()}s "{name}" not found')
        copy = type(found)()
        copy.CopyFrom(found)
        return copy

    async def update(self, obj: Any) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError(grpc.StatusCode.ABORTED, "the object has been modified")
        self.targets[(obj.kind, obj.metadata.name)] = obj
        self.updates.append((obj.metadata.name, obj.spec.replicas))
        return obj

    async def update_status(self, obj: Any) -> Any:
        copy = type(obj)()
        copy.CopyFrom(obj)
        self.statuses.append(copy)
        return copy


class FakeMetrics:
    def __init__(self) -> None:
        self.cpu: dict[str, int] = {}
        self.asked: list[tuple[str, str]] = []

    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        self.asked.append((namespace, selector))
        return {
            name: PodUsage({"main": ContainerUsage(m, 10 << 20)}, T0, timedelta(seconds=10))
            for name, m in self.cpu.items()
        }


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def record(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def deployment(replicas: int, name: str = "web") -> Any:
    d = kind_info("Deployment").new()
    d.metadata.name = name
    d.metadata.namespace = "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.status.replicas = replicas
    return d


def pod(name: str, *, cpu_request: str | None = "100m") -> Any:
    p = kind_info("Pod").new()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.labels["app"] = "web"
    c = p.spec.containers.add(name="main", image="busybox")
    if cpu_request:
        c.resources.requests["cpu"] = cpu_request
    p.status.phase = "Running"
    p.status.start_time = ts(T0 - timedelta(hours=1))
    p.status.conditions.add(
        type="Ready", status="True", last_transition_time=ts(T0 - timedelta(minutes=59))
    )
    return p


def hpa(min_replicas: int = 1, max_replicas: int = 10, cpu_percent: int = 50) -> Any:
    h = kind_info("HorizontalPodAutoscaler").new()
    h.metadata.name = "web"
    h.metadata.namespace = "default"
    h.metadata.generation = 1
    h.spec.scale_target_ref.kind = "Deployment"
    h.spec.scale_target_ref.name = "web"
    h.spec.scale_target_ref.api_version = "apps/v1"
    h.spec.min_replicas = min_replicas
    h.spec.max_replicas = max_replicas
    m = h.spec.metrics.add(type="Resource")
    m.resource.name = "cpu"
    m.resource.target.type = "Utilization"
    m.resource.target.average_utilization = cpu_percent
    return h


class Setup:
    def __init__(self, target: Any, pods: list[Any], the_hpa: Any) -> None:
        self.client = FakeClient(target)
        self.metrics = FakeMetrics()
        self.clock = Clock()
        self.recorder = Recorder()
        self.hpa = the_hpa
        self.controller = HorizontalPodAutoscalerController(
            self.client,  # type: ignore[arg-type]
            metrics=self.metrics,
            clock=self.clock,
            recorder=self.recorder,
        )
        self.controller.hpas = FakeInformer([the_hpa])  # type: ignore[assignment]
        self.controller.pods = FakeInformer(pods)  # type: ignore[assignment]

    async def sync(self) -> Any:
        """One sync; the status written is fed back as the informer would."""
        await self.controller.sync(KEY)
        if self.client.statuses:
            self.hpa.status.CopyFrom(self.client.statuses[-1].status)
        return self.hpa.status

    def replicas(self) -> int:
        return int(self.client.targets[("Deployment", "web")].spec.replicas)


def conditions(status: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


async def test_scales_up_on_high_cpu_and_reports_it() -> None:
    s = Setup(deployment(2), [pod("web-0"), pod("web-1")], hpa(cpu_percent=50))
    s.metrics.cpu = {"web-0": 80, "web-1": 80}  # 80% of request against 50%
    status = await s.sync()
    assert s.replicas() == 4  # ceil(2 * 1.6)
    assert s.metrics.asked == [("default", "app=web")]
    assert (status.desired_replicas, status.current_replicas) == (4, 2)
    assert status.last_scale_time == ts(T0)
    assert status.observed_generation == 1
    metric = status.current_metrics[0]
    assert (metric.type, metric.resource.name) == ("Resource", "cpu")
    assert metric.resource.current.average_utilization == 80
    assert metric.resource.current.average_value == "80m"
    assert conditions(status) == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
    }
    assert s.recorder.events == [
        (
            "Normal",
            "SuccessfulRescale",
            "New size: 4; reason: cpu resource utilization (percentage of request) above target",
        )
    ]


async def test_scale_down_waits_out_the_stabilization_window() -> None:
    s = Setup(deployment(4), [pod(f"web-{i}") for i in range(4)], hpa(cpu_percent=50))
    s.metrics.cpu = {f"web-{i}": 50 for i in range(4)}
    await s.sync()  # on target: recommendation 4
    assert s.replicas() == 4 and not s.client.updates
    s.metrics.cpu = {f"web-{i}": 10 for i in range(4)}  # load gone: 1 would do
    s.clock.now = T0 + timedelta(seconds=60)
    status = await s.sync()
    assert s.replicas() == 4
    assert conditions(status)["AbleToScale"] == ("True", "ScaleDownStabilized")
    assert status.desired_replicas == 4
    s.clock.now = T0 + timedelta(seconds=301)
    status = await s.sync()
    assert s.replicas() == 1
    assert s.recorder.events[-1] == (
        "Normal",
        "SuccessfulRescale",
        "New size: 1; reason: All metrics below target",
    )


async def test_max_replicas_clamps_and_says_so() -> None:
    s = Setup(deployment(3), [pod(f"web-{i}") for i in range(3)], hpa(max_replicas=5))
    s.metrics.cpu = {f"web-{i}": 400 for i in range(3)}  # would want 24
    status = await s.sync()
    assert s.replicas() == 5
    assert conditions(status)["ScalingLimited"] == ("True", "TooManyReplicas")


async def test_outside_the_bounds_moves_inside_without_metrics() -> None:
    s = Setup(deployment(12), [], hpa(min_replicas=2, max_replicas=10))
    status = await s.sync()
    assert s.replicas() == 10 and s.metrics.asked == []
    assert s.recorder.events[-1][2] == (
        "New size: 10; reason: Current number of replicas above Spec.MaxReplicas"
    )
    assert status.desired_replicas == 10
    low = Setup(deployment(1), [], hpa(min_replicas=2))
    await low.sync()
    assert low.replicas() == 2


async def test_pods_without_requests_stop_scaling_with_a_clear_reason() -> None:
    s = Setup(deployment(2), [pod("web-0"), pod("web-1", cpu_request=None)], hpa())
    s.metrics.cpu = {"web-0": 500, "web-1": 500}
    status = await s.sync()
    assert s.client.updates == []
    cond = next(c for c in status.conditions if c.type == "ScalingActive")
    assert (cond.status, cond.reason) == ("False", "FailedGetResourceMetric")
    assert cond.message == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "missing request for cpu in container main of Pod web-1"
    )
    assert s.recorder.events == [("Warning", "FailedGetResourceMetric", cond.message)]
    assert not status.current_metrics


async def test_target_scaled_to_zero_disables_autoscaling() -> None:
    s = Setup(deployment(0), [], hpa())
    status = await s.sync()
    assert s.client.updates == []
    assert conditions(status)["ScalingActive"] == ("False", "ScalingDisabled")
    assert status.desired_replicas == 0


async def test_missing_target_is_reported() -> None:
    s = Setup(deployment(2, name="other"), [], hpa())
    status = await s.sync()
    cond = next(c for c in status.conditions if c.type == "AbleToScale")
    assert (cond.status, cond.reason) == ("False", "FailedGetScale")
    assert 'deployments "web" not found' in cond.message
    assert s.recorder.events[0][:2] == ("Warning", "FailedGetScale")


async def test_conflicting_update_is_retried_and_status_unchanged_is_not_rewritten() -> None:
    s = Setup(deployment(2), [pod("web-0"), pod("web-1")], hpa(cpu_percent=50))
    s.metrics.cpu = {"web-0": 100, "web-1": 100}
    s.client.conflicts = 1
    await s.sync()
    assert s.client.updates == [("web", 4)]
    # Pods catch up, load is on target: nothing changes, no status rewrite.
    s.client.targets[("Deployment", "web")].status.replicas = 4
    s.controller.pods.items = [pod(f"web-{i}") for i in range(4)]  # type: ignore[attr-defined]
    s.metrics.cpu = {f"web-{i}": 50 for i in range(4)}
    s.clock.now = T0 + timedelta(seconds=15)
    await s.sync()
    written = len(s.client.statuses)
    s.clock.now = T0 + timedelta(seconds=30)
    await s.sync()
    assert len(s.client.statuses) == written
    assert s.client.updates == [("web", 4)]
