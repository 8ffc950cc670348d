"""From an HPA's metric specs and the pods' usage to one replica count: each
metric proposes a count (hpa_replicas), the highest wins, and each gets a
MetricStatus for status.currentMetrics. Pure: the usage is fetched by the
controller through a MetricsSource.

Supported: Resource and ContainerResource metrics on cpu and memory, with
Utilization (percent of the request) or AverageValue targets, as
metrics-server serves them. Pods, Object and External metrics need a custom
metrics API this cluster does not have; such a metric is reported invalid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import autoscaling_v2_pb2 as asv2
from orchestrator.api.quantity import QuantityError, format_cpu_millis, format_quantity
from orchestrator.controllers.hpa_replicas import (
    RESOURCES,
    MetricError,
    PodMetric,
    ReplicaResult,
    Tolerance,
    average_value_replicas,
    resource_amount,
    resource_replicas,
)


@dataclass(frozen=True)
class ContainerUsage:
    cpu_millicores: int
    memory_bytes: int


@dataclass(frozen=True)
class PodUsage:
    """One pod's usage as the metrics API reports it."""

    containers: Mapping[str, ContainerUsage]
    timestamp: datetime
    window: timedelta

    def value(self, resource: str, container: str = "") -> int | None:
        picked = [u for n, u in self.containers.items() if not container or n == container]
        if not picked:
            return None
        if resource == "cpu":
            return sum(u.cpu_millicores for u in picked)
        return sum(u.memory_bytes for u in picked)


class MetricsSource(Protocol):
    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        """Usage of the pods matching selector in namespace, by pod name."""
        ...


def usage_from_api(items: Sequence[Any]) -> dict[str, PodUsage]:
    """PodMetrics messages (client.pod_metrics) -> usage by pod name."""
    out: dict[str, PodUsage] = {}
    for item in items:
        try:
            at = parse_rfc3339(item.timestamp)
        except ValueError:
            continue
        out[item.name] = PodUsage(
            {
                c.name: ContainerUsage(c.cpu_millicores, c.memory_working_set_bytes)
                for c in item.containers
            },
            at,
            timedelta(seconds=item.window_seconds),
        )
    return out


class ClientMetricsSource:
    """The apiserver's metrics API, through the controller's client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def pod_usage(self, namespace: str, selector: str) -> dict[str, PodUsage]:
        return usage_from_api(await self.client.pod_metrics(namespace, label_selector=selector))


class InvalidMetric(Exception):
    """A metric that gave no count; `reason` is the ScalingActive condition's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Computed:
    replicas: int
    metric: str  # the description of the metric that decided, for messages
    statuses: list[asv2.MetricStatus] = field(default_factory=list)
    invalid: list[InvalidMetric] = field(default_factory=list)


def _format(resource: str, amount: int) -> str:
    return format_cpu_millis(amount) if resource == "cpu" else format_quantity(amount, binary=True)


def describe_metric(spec: asv2.MetricSpec) -> str:
    """How Kubernetes names a metric in conditions and events."""
    source = spec.container_resource if spec.type == "ContainerResource" else spec.resource
    name = source.name
    what = f"{name} container resource" if spec.type == "ContainerResource" else f"{name} resource"
    if source.target.type == "Utilization":
        return f"{what} utilization (percentage of request)"
    return what


def replicas_for_metric(
    spec: asv2.MetricSpec,
    current: int,
    pods: Sequence[Any],
    usage: Mapping[str, PodUsage],
    now: datetime,
    tolerance: Tolerance,
) -> tuple[ReplicaResult, asv2.MetricStatus]:
    if spec.type not in ("Resource", "ContainerResource"):
        raise InvalidMetric(
            "InvalidMetricSourceType",
            f'the HPA was unable to compute the replica count: metric type "{spec.type}" '
            "is not supported here (only Resource and ContainerResource: no custom "
            "or external metrics API is served)",
        )
    container_metric = spec.type == "ContainerResource"
    source = spec.container_resource if container_metric else spec.resource
    container = spec.container_resource.container if container_metric else ""
    resource = source.name
    reason = "FailedGetContainerResourceMetric" if container_metric else "FailedGetResourceMetric"
    if resource not in RESOURCES:
        raise InvalidMetric(
            reason,
            f'the HPA was unable to compute the replica count: resource "{resource}" has no '
            "metrics (only cpu and memory)",
        )
    metrics: dict[str, PodMetric] = {}
    for name, pod_usage in usage.items():
        value = pod_usage.value(resource, container)
        if value is not None:
            metrics[name] = PodMetric(value, pod_usage.timestamp, pod_usage.window)
    target = source.target
    status = asv2.MetricStatus(type=spec.type)
    current_status = (
        status.container_resource.current if container_metric else status.resource.current
    )
    if container_metric:
        status.container_resource.name = resource
        status.container_resource.container = container
    else:
        status.resource.name = resource
    try:
        if target.type == "Utilization":
            result = resource_replicas(
                current,
                target.average_utilization,
                resource,
                pods,
                metrics,
                now,
                container=container,
                tolerance=tolerance,
            )
            assert result.utilization is not None
            current_status.average_utilization = result.utilization
        elif target.type == "AverageValue":
            goal = resource_amount(resource, target.average_value)
            result = average_value_replicas(
                current, goal, resource, pods, metrics, now, tolerance=tolerance
            )
        else:
            raise MetricError(f'target type "{target.type}" is not Utilization or AverageValue')
    except (MetricError, QuantityError) as exc:
        what = "utilization" if target.type == "Utilization" else "usage"
        raise InvalidMetric(
            reason,
            f"the HPA was unable to compute the replica count: failed to get {resource} "
            f"{what}: {exc}",
        ) from None
    current_status.average_value = _format(resource, result.raw_average)
    return result, status


def compute_replicas(
    specs: Sequence[asv2.MetricSpec],
    current: int,
    pods: Sequence[Any],
    usage: Mapping[str, PodUsage],
    now: datetime,
    tolerance: Tolerance,
) -> Computed:
    """Kubernetes' computeReplicasForMetrics: the highest proposal of the valid
    metrics. A failed metric is kept as an empty status; if every metric
    failed, or some failed and the rest would scale down (it could be the
    failed one that needs the pods), the first failure is raised."""
    if not specs:
        raise InvalidMetric(
            "InvalidMetricSourceType", "the HPA was unable to compute the replica count: no metrics"
        )
    computed = Computed(replicas=0, metric="")
    for spec in specs:
        try:
            result, status = replicas_for_metric(spec, current, pods, usage, now, tolerance)
        except InvalidMetric as exc:
            computed.invalid.append(exc)
            computed.statuses.append(asv2.MetricStatus())
            continue
        computed.statuses.append(status)
        if computed.metric == "" or result.replicas > computed.replicas:
            computed.replicas = result.replicas
            computed.metric = describe_metric(spec)
    if computed.invalid and (len(computed.invalid) >= len(specs) or computed.replicas < current):
        raise computed.invalid[0]
    return computed
