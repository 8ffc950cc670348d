"""How many replicas a resource metric asks for: Kubernetes' replica
calculator (pkg/controller/podautoscaler/replica_calculator.go), as pure
functions of the pods, their metrics and the time.

    desired = ceil(ready pods * usage / target)

unless usage/target is within the tolerance of 1 (10% by default), when the
count stays. Pods are first sorted as Kubernetes does:

- ignored: being deleted, or Failed/Succeeded: they do not count at all;
- unready: Pending, or (for CPU) not Ready or only just started, whose
  usage says little; they are left out, and on a scale-up counted as using
  nothing, so a burst of starting pods cannot snowball the scale-up;
- missing: running but without metrics; on a scale-down counted as using
  their whole request (or the target, if that is higher), on a scale-up as
  using nothing; that is, always in the direction that scales less.

If counting the unready and missing pods that way flips the direction or
brings the ratio within tolerance, nothing changes.

Units: CPU in millicores, memory in bytes, for usage and requests alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.quantity import QuantityError, cpu_millis, memory_bytes

DEFAULT_TOLERANCE = 0.1
# A pod's CPU is distrusted this long after it started (start-up bursts) ...
CPU_INITIALIZATION_PERIOD = timedelta(minutes=5)
# ... and a pod that became ready within this long of starting counts as
# never having been unready (its first readiness, not a flap).
INITIAL_READINESS_DELAY = timedelta(seconds=30)
RESOURCES = ("cpu", "memory")


class MetricError(Exception):
    """No replica count can be computed from this metric (the message says why)."""


@dataclass(frozen=True)
class PodMetric:
    value: int  # millicores or bytes
    timestamp: datetime
    window: timedelta


@dataclass(frozen=True)
class Tolerance:
    """Usage/target ratios within [1 - down, 1 + up] change nothing."""

    down: float = DEFAULT_TOLERANCE
    up: float = DEFAULT_TOLERANCE

    def within(self, ratio: float) -> bool:
        return 1.0 - self.down <= ratio <= 1.0 + self.up


@dataclass(frozen=True)
class ReplicaResult:
    replicas: int
    # Percent of request (Utilization targets only).
    utilization: int | None
    # Average per pod over the pods with metrics (millicores or bytes).
    raw_average: int
    timestamp: datetime | None


@dataclass
class PodGroups:
    ready: set[str] = field(default_factory=set)
    unready: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)


def resource_amount(resource: str, quantity: str) -> int:
    """A request or target in the calculator's units (millicores, bytes)."""
    return cpu_millis(quantity) if resource == "cpu" else memory_bytes(quantity)


def _time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def _ready_condition(pod: Any) -> Any | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def group_pods(
    pods: Sequence[Any],
    metrics: Mapping[str, PodMetric],
    resource: str,
    now: datetime,
    *,
    cpu_initialization_period: timedelta = CPU_INITIALIZATION_PERIOD,
    initial_readiness_delay: timedelta = INITIAL_READINESS_DELAY,
) -> PodGroups:
    """Kubernetes' groupPods: which pods count, and how."""
    groups = PodGroups()
    for pod in pods:
        name = pod.metadata.name
        if pod.metadata.deletion_timestamp or pod.status.phase in ("Failed", "Succeeded"):
            groups.ignored.add(name)
            continue
        if pod.status.phase == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu" and _cpu_unready(
            pod, metric, now, cpu_initialization_period, initial_readiness_delay
        ):
            groups.unready.add(name)
            continue
        groups.ready.add(name)
    return groups


def _cpu_unready(
    pod: Any,
    metric: PodMetric,
    now: datetime,
    initialization: timedelta,
    readiness_delay: timedelta,
) -> bool:
    cond = _ready_condition(pod)
    started = _time(pod.status.start_time)
    if cond is None or started is None:
        return True
    transition = _time(cond.last_transition_time) or started
    if started + initialization > now:
        # Starting up: only a sample taken wholly after it became ready counts.
        return bool(cond.status == "False" or metric.timestamp < transition + metric.window)
    # Later on: unready only if it has never been ready since starting.
    return bool(cond.status == "False" and started + readiness_delay > transition)


def pod_requests(pods: Sequence[Any], resource: str, container: str = "") -> dict[str, int]:
    """Each pod's request of the resource (summed over its containers, or the
    one named); every container must have one, as a percentage of nothing is
    meaningless."""
    requests: dict[str, int] = {}
    for pod in pods:
        total = 0
        for c in pod.spec.containers:
            if container and c.name != container:
                continue
            quantity = c.resources.requests.get(resource)
            if quantity is None:
                raise MetricError(
                    f"missing request for {resource} in container {c.name} "
                    f"of Pod {pod.metadata.name}"
                )
            try:
                total += resource_amount(resource, quantity)
            except QuantityError as exc:
                raise MetricError(f"Pod {pod.metadata.name} container {c.name}: {exc}") from None
        requests[pod.metadata.name] = total
    return requests


def utilization_ratio(
    metrics: Mapping[str, PodMetric], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """(usage/target ratio, utilization %, average usage) over the pods that
    have both a metric and a request."""
    used = requested = counted = 0
    for name, metric in metrics.items():
        if name in requests:
            used += metric.value
            requested += requests[name]
            counted += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target_utilization, utilization, used // counted


def average_ratio(metrics: Mapping[str, PodMetric], target: int) -> tuple[float, int]:
    average = sum(m.value for m in metrics.values()) / len(metrics)
    return average / target, int(average)


def _latest(metrics: Mapping[str, PodMetric]) -> datetime | None:
    return max((m.timestamp for m in metrics.values()), default=None)


def _prepare(
    pods: Sequence[Any], metrics: Mapping[str, PodMetric], resource: str, now: datetime
) -> tuple[PodGroups, dict[str, PodMetric]]:
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now)
    kept = {n: m for n, m in metrics.items() if n not in groups.ignored and n not in groups.unready}
    # Metrics of pods that are not (or no longer) the target's do not count either.
    kept = {n: m for n, m in kept.items() if n in groups.ready}
    if not kept:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return groups, kept


def resource_replicas(
    current: int,
    target_utilization: int,
    resource: str,
    pods: Sequence[Any],
    metrics: Mapping[str, PodMetric],
    now: datetime,
    *,
    container: str = "",
    tolerance: Tolerance | None = None,
) -> ReplicaResult:
    """Replicas for a Utilization target (percent of the pods' requests)."""
    tol = tolerance or Tolerance()
    groups, kept = _prepare(pods, metrics, resource, now)
    requests = pod_requests(pods, resource, container)
    ratio, utilization, raw = utilization_ratio(kept, requests, target_utilization)
    timestamp = _latest(kept)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tol.within(ratio):
            return ReplicaResult(current, utilization, raw, timestamp)
        return ReplicaResult(math.ceil(ratio * len(kept)), utilization, raw, timestamp)
    filled = dict(kept)
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for name in groups.missing:
                filled[name] = PodMetric(requests[name] * fallback // 100, now, timedelta())
        elif ratio > 1.0:
            for name in groups.missing:
                filled[name] = PodMetric(0, now, timedelta())
    if scale_up_with_unready:
        for name in groups.unready:
            filled[name] = PodMetric(0, now, timedelta())
    new_ratio, _, _ = utilization_ratio(filled, requests, target_utilization)
    return ReplicaResult(
        _settle(current, ratio, new_ratio, len(filled), tol), utilization, raw, timestamp
    )


def average_value_replicas(
    current: int,
    target_average: int,
    resource: str,
    pods: Sequence[Any],
    metrics: Mapping[str, PodMetric],
    now: datetime,
    *,
    tolerance: Tolerance | None = None,
) -> ReplicaResult:
    """Replicas for an AverageValue target (millicores or bytes per pod)."""
    if target_average <= 0:
        raise MetricError(f"the target average {resource} must be more than 0")
    tol = tolerance or Tolerance()
    groups, kept = _prepare(pods, metrics, resource, now)
    ratio, raw = average_ratio(kept, target_average)
    timestamp = _latest(kept)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tol.within(ratio):
            return ReplicaResult(current, None, raw, timestamp)
        return ReplicaResult(math.ceil(ratio * len(kept)), None, raw, timestamp)
    filled = dict(kept)
    fill = target_average if ratio < 1.0 else 0
    for name in groups.missing:
        filled[name] = PodMetric(fill, now, timedelta())
    if scale_up_with_unready:
        for name in groups.unready:
            filled[name] = PodMetric(0, now, timedelta())
    new_ratio, _ = average_ratio(filled, target_average)
    return ReplicaResult(_settle(current, ratio, new_ratio, len(filled), tol), None, raw, timestamp)


def _settle(current: int, ratio: float, new_ratio: float, counted: int, tol: Tolerance) -> int:
    """The count after filling in unready and missing pods: no change if that
    brings the ratio within tolerance or reverses the direction."""
    if tol.within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas
