"""The HPA's replica calculator: Kubernetes' arithmetic, its 10% tolerance,
and how pods without metrics or not yet ready are counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.controllers.hpa_replicas import (
    MetricError,
    PodMetric,
    Tolerance,
    average_value_replicas,
    group_pods,
    pod_requests,
    resource_replicas,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=10)


def ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    cpu: str | None = "100m",
    memory: str | None = "100Mi",
    phase: str = "Running",
    ready: str | None = "True",
    started_ago: float = 3600,
    ready_ago: float = 3500,
    deleting: bool = False,
    containers: int = 1,
) -> Any:
    p = kind_info("Pod").new()
    p.metadata.name = name
    p.metadata.namespace = "default"
    for i in range(containers):
        c = p.spec.containers.add(name="main" if i == 0 else f"side{i}", image="busybox")
        if cpu is not None:
            c.resources.requests["cpu"] = cpu
        if memory is not None:
            c.resources.requests["memory"] = memory
    p.status.phase = phase
    if started_ago >= 0:
        p.status.start_time = ts(NOW - timedelta(seconds=started_ago))
    if ready is not None:
        p.status.conditions.add(
            type="Ready", status=ready, last_transition_time=ts(NOW - timedelta(seconds=ready_ago))
        )
    if deleting:
        p.metadata.deletion_timestamp = ts(NOW)
    return p


def metrics(**values: int) -> dict[str, PodMetric]:
    return {name: PodMetric(v, NOW - timedelta(seconds=5), WINDOW) for name, v in values.items()}


def cpu_replicas(
    current: int, target: int, pods: list[Any], usage: dict[str, PodMetric], **kw: Any
) -> int:
    return resource_replicas(current, target, "cpu", pods, usage, NOW, **kw).replicas


# -- the arithmetic and the tolerance ------------------------------------------------------


def test_desired_is_ceil_of_ready_pods_times_ratio() -> None:
    pods = [pod(f"p{i}") for i in range(3)]
    # 100% of request against an 80% target: ratio 1.25, 3 * 1.25 = 3.75 -> 4.
    result = resource_replicas(3, 80, "cpu", pods, metrics(p0=100, p1=100, p2=100), NOW)
    assert (result.replicas, result.utilization, result.raw_average) == (4, 125 * 80 // 100, 100)
    assert result.timestamp == NOW - timedelta(seconds=5)
    # 50% against 100%: 3 * 0.5 = 1.5 -> 2.
    assert cpu_replicas(3, 100, pods, metrics(p0=50, p1=50, p2=50)) == 2


def test_ten_percent_tolerance_keeps_the_count() -> None:
    pods = [pod(f"p{i}") for i in range(3)]
    assert cpu_replicas(3, 100, pods, metrics(p0=110, p1=110, p2=110)) == 3  # ratio 1.10
    assert cpu_replicas(3, 100, pods, metrics(p0=90, p1=90, p2=90)) == 3  # ratio 0.90
    assert cpu_replicas(3, 100, pods, metrics(p0=111, p1=111, p2=111)) == 4  # ratio 1.11
    assert cpu_replicas(3, 100, pods, metrics(p0=89, p1=89, p2=89)) == 3  # ceil(2.67)
    # The replica count used is the target's, even if fewer pods exist yet.
    assert cpu_replicas(5, 100, pods, metrics(p0=105, p1=95, p2=100)) == 5
    # A configured tolerance (behavior.scaleUp.tolerance) replaces the 10%.
    tight = Tolerance(down=0.1, up=0.01)
    assert cpu_replicas(3, 100, pods, metrics(p0=105, p1=105, p2=105), tolerance=tight) == 4


def test_utilization_sums_containers_requests() -> None:
    pods = [pod("p0", containers=2), pod("p1", containers=2)]  # 200m requested each
    result = resource_replicas(2, 50, "cpu", pods, metrics(p0=200, p1=200), NOW)
    assert result.utilization == 100 and result.replicas == 4


def test_memory_utilization() -> None:
    pods = [pod("p0", memory="100Mi"), pod("p1", memory="100Mi")]
    mib = 1024 * 1024
    result = resource_replicas(2, 60, "memory", pods, metrics(p0=90 * mib, p1=90 * mib), NOW)
    assert (result.utilization, result.replicas) == (90, 3)


def test_average_value_target() -> None:
    pods = [pod(f"p{i}") for i in range(3)]
    result = average_value_replicas(3, 200, "cpu", pods, metrics(p0=300, p1=300, p2=300), NOW)
    assert (result.replicas, result.raw_average, result.utilization) == (5, 300, None)
    assert average_value_replicas(3, 200, "cpu", pods, metrics(p0=210, p1=200, p2=190), NOW) == (
        average_value_replicas(3, 200, "cpu", pods, metrics(p0=200, p1=200, p2=200), NOW)
    )
    with pytest.raises(MetricError, match="more than 0"):
        average_value_replicas(3, 0, "cpu", pods, metrics(p0=1), NOW)


# -- missing metrics ----------------------------------------------------------------------


def test_missing_pods_count_as_idle_on_scale_up() -> None:
    pods = [pod(f"p{i}") for i in range(10)]
    # 9 pods at 120% with one missing: counted at 0%, 108% is within tolerance.
    usage = metrics(**{f"p{i}": 120 for i in range(9)})
    assert cpu_replicas(10, 100, pods, usage) == 10
    # 2 at 150% and 2 missing: at 0% the average is 75%, a scale-down: no change at all.
    pods = [pod(f"p{i}") for i in range(4)]
    assert cpu_replicas(4, 100, pods, metrics(p0=150, p1=150)) == 4


def test_missing_pods_count_as_fully_used_on_scale_down() -> None:
    pods = [pod(f"p{i}") for i in range(5)]
    # 4 pods at 10% of a 50% target, one missing counted at 100%:
    # (40 + 100) / 500 = 28% -> ratio 0.56 -> ceil(2.8) = 3, not ceil(0.2 * 4) = 1.
    assert cpu_replicas(5, 50, pods, metrics(p0=10, p1=10, p2=10, p3=10)) == 3
    # A target above 100% fills missing pods in at the target: (40 + 200) / 500
    # = 48% of a 200% target -> ceil(0.24 * 5) = 2, where ignoring it would give 1.
    assert cpu_replicas(5, 200, pods, metrics(p0=10, p1=10, p2=10, p3=10)) == 2


# -- unready and ignored pods -------------------------------------------------------------


def test_unready_pods_do_not_drive_a_cpu_scale_up() -> None:
    never_ready = pod("p2", ready="False", started_ago=3600, ready_ago=3590)
    pods = [pod("p0"), pod("p1"), never_ready, pod("p3", phase="Pending")]
    # The ready pods are at 200%; the unready count as idle: 400/400 = 100%.
    assert cpu_replicas(4, 100, pods, metrics(p0=200, p1=200, p2=0)) == 4
    # Scaling down, unready pods are simply left out.
    assert cpu_replicas(4, 100, pods, metrics(p0=10, p1=10, p2=500)) == 1


def test_unready_rule_is_for_cpu_only() -> None:
    pods = [pod("p0"), pod("p1", ready="False")]
    mib = 1024 * 1024
    usage = metrics(p0=100 * mib, p1=100 * mib)
    assert resource_replicas(2, 50, "memory", pods, usage, NOW).replicas == 4


def test_cpu_of_a_pod_just_started_is_distrusted() -> None:
    fresh = pod("p1", started_ago=60, ready_ago=3)  # ready 3 s ago: sample predates it
    groups = group_pods([pod("p0"), fresh], metrics(p0=1, p1=1), "cpu", NOW)
    assert groups.ready == {"p0"} and groups.unready == {"p1"}
    settled = pod("p1", started_ago=60, ready_ago=30)
    assert group_pods([settled], metrics(p1=1), "cpu", NOW).ready == {"p1"}
    # Long running but not ready since its start: unready; flapped later: counted.
    never = pod("p1", ready="False", started_ago=3600, ready_ago=3590)
    assert group_pods([never], metrics(p1=1), "cpu", NOW).unready == {"p1"}
    flapped = pod("p1", ready="False", started_ago=3600, ready_ago=60)
    assert group_pods([flapped], metrics(p1=1), "cpu", NOW).ready == {"p1"}
    no_condition = pod("p1", ready=None)
    assert group_pods([no_condition], metrics(p1=1), "cpu", NOW).unready == {"p1"}


def test_deleted_and_finished_pods_are_ignored() -> None:
    pods = [
        pod("p0"),
        pod("gone", deleting=True),
        pod("failed", phase="Failed"),
        pod("done", phase="Succeeded"),
        pod("missing"),
    ]
    groups = group_pods(pods, metrics(p0=1, gone=1, failed=1), "cpu", NOW)
    assert groups.ignored == {"gone", "failed", "done"}
    assert (groups.ready, groups.missing) == ({"p0"}, {"missing"})
    # The terminating pod's 900% does not count.
    usage = metrics(p0=100, gone=900)
    assert cpu_replicas(2, 100, [pod("p0"), pod("gone", deleting=True)], usage) == 2


# -- errors ---------------------------------------------------------------------------------


def test_pods_without_requests_cannot_have_utilization() -> None:
    pods = [pod("web-0"), pod("web-1", cpu=None)]
    with pytest.raises(MetricError) as err:
        resource_replicas(2, 80, "cpu", pods, metrics(**{"web-0": 1, "web-1": 1}), NOW)
    assert str(err.value) == "missing request for cpu in container main of Pod web-1"
    # One container's request is enough for a ContainerResource metric on it.
    two = pod("web-0", containers=2)
    two.spec.containers[1].resources.requests.pop("cpu")
    assert pod_requests([two], "cpu", container="main") == {"web-0": 100}


def test_no_pods_or_no_metrics_are_errors() -> None:
    with pytest.raises(MetricError, match="no pods returned by selector"):
        resource_replicas(1, 80, "cpu", [], {}, NOW)
    with pytest.raises(MetricError, match="did not receive metrics for targeted pods"):
        resource_replicas(1, 80, "cpu", [pod("p0", phase="Pending")], metrics(p0=5), NOW)
