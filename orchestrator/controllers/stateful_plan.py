"""What a StatefulSet should do next, decided from its spec and its pods alone.

The rules are Kubernetes' StatefulSet control loop:

1. Ordinals [start, start+replicas) should have pods. A missing one is created
   (claims first); a Failed or Succeeded one is deleted and, once its object
   is gone, created again under the same name, so two pods never share an
   ordinal. With OrderedReady each step waits for every lower ordinal to be
   Running and Ready (and available for minReadySeconds); Parallel does not.
2. Pods above the range are condemned and deleted highest ordinal first;
   OrderedReady deletes one at a time, each only when the pods below are
   healthy, and waits for each to be gone.
3. RollingUpdate replaces, from the highest ordinal down to the partition,
   the first pod not at the update revision, one at a time, each only once
   the pods above it are healthy again. Pods below the partition keep (and are
   recreated at) the current revision. OnDelete replaces nothing: a pod the
   user deletes comes back at the update revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.controllers.stateful_pods import (
    available_in,
    is_failed,
    is_running_and_ready,
    is_terminating,
    pod_name,
    revision_of,
)

ORDERED_READY = "OrderedReady"
PARALLEL = "Parallel"
ROLLING_UPDATE = "RollingUpdate"
ON_DELETE = "OnDelete"


@dataclass(frozen=True)
class SetShape:
    """The parts of a StatefulSet's spec the plan reads."""

    name: str
    replicas: int
    start: int = 0
    policy: str = ORDERED_READY
    strategy: str = ROLLING_UPDATE
    partition: int = 0
    min_ready_seconds: int = 0

    @classmethod
    def of(cls, sts: Any) -> SetShape:
        spec = sts.spec
        strategy = spec.update_strategy.type or ROLLING_UPDATE
        partition = 0
        rolling = spec.update_strategy.rolling_update
        if strategy == ROLLING_UPDATE and rolling.HasField("partition"):
            partition = int(rolling.partition)
        return cls(
            name=sts.metadata.name,
            replicas=int(spec.replicas) if spec.HasField("replicas") else 1,
            start=int(spec.ordinals.start),
            policy=spec.pod_management_policy or ORDERED_READY,
            strategy=strategy,
            partition=partition,
            min_ready_seconds=int(spec.min_ready_seconds),
        )

    def in_range(self, ordinal: int) -> bool:
        return self.start <= ordinal < self.start + self.replicas


@dataclass(frozen=True)
class Create:
    ordinal: int
    revision: str


@dataclass(frozen=True)
class Delete:
    name: str
    reason: str  # "failed", "scale-down" or "update"


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    # Why the plan stopped short of the whole way (for logs and tests).
    waiting: str = ""
    # Look again after this many seconds (a pod finishing minReadySeconds).
    requeue_after: float | None = None


def revision_for(shape: SetShape, ordinal: int, current: str, update: str) -> str:
    """The revision a new pod for ordinal gets: below the partition of a
    rolling update, the current one; otherwise the update one."""
    if shape.strategy == ROLLING_UPDATE and ordinal < shape.start + shape.partition:
        return current
    return update


def plan_statefulset(
    shape: SetShape,
    pods: Mapping[int, Any],
    current: str,
    update: str,
    now: datetime,
) -> Plan:
    """pods maps ordinal -> this set's pod with that name."""
    plan = Plan()
    monotonic = shape.policy != PARALLEL

    def healthy(pod: Any) -> bool:
        left = available_in(pod, shape.min_ready_seconds, now)
        if left is not None and left > 0:
            plan.requeue_after = (
                left if plan.requeue_after is None else min(plan.requeue_after, left)
            )
        return left == 0.0

    for ordinal in range(shape.start, shape.start + shape.replicas):
        pod = pods.get(ordinal)
        name = pod_name(shape.name, ordinal)
        if pod is None:
            plan.creates.append(Create(ordinal, revision_for(shape, ordinal, current, update)))
            if monotonic:
                plan.waiting = f"waiting for pod {name} to be created, running and ready"
                return plan
            continue
        if is_terminating(pod):
            if monotonic:
                plan.waiting = f"waiting for pod {name} to terminate before recreating it"
                return plan
            continue
        if is_failed(pod):
            plan.deletes.append(Delete(name, "failed"))
            if monotonic:
                plan.waiting = f"pod {name} {pod.status.phase.lower()}: recreating it"
                return plan
            continue
        if not healthy(pod):
            if monotonic:
                plan.waiting = f"waiting for pod {name} to be running and ready"
                return plan

    condemned = sorted((o for o in pods if not shape.in_range(o)), reverse=True)
    first_unhealthy = next(
        (o for o in condemned if is_terminating(pods[o]) or not healthy(pods[o])), None
    )
    for ordinal in condemned:
        pod = pods[ordinal]
        name = pod_name(shape.name, ordinal)
        if is_terminating(pod):
            if monotonic:
                plan.waiting = f"waiting for pod {name} to terminate (scale down)"
                return plan
            continue
        if monotonic and first_unhealthy is not None and ordinal != first_unhealthy:
            blocker = pod_name(shape.name, first_unhealthy)
            plan.waiting = f"scale down of {name} waits for pod {blocker} to be healthy"
            return plan
        plan.deletes.append(Delete(name, "scale-down"))
        if monotonic:
            plan.waiting = f"scaling down: waiting for pod {name} to terminate"
            return plan

    if shape.strategy != ROLLING_UPDATE:
        return plan
    # In Parallel mode the loop above may have left gaps; an update waits for them.
    floor = max(shape.start, shape.start + shape.partition)
    for ordinal in range(shape.start + shape.replicas - 1, floor - 1, -1):
        pod = pods.get(ordinal)
        name = pod_name(shape.name, ordinal)
        if pod is None or any(d.name == name for d in plan.deletes):
            plan.waiting = plan.waiting or f"rolling update waits for pod {name} to exist"
            return plan
        if revision_of(pod) != update and not is_terminating(pod):
            plan.deletes.append(Delete(name, "update"))
            plan.waiting = f"rolling update: replacing pod {name}"
            return plan
        if is_terminating(pod) or not healthy(pod):
            plan.waiting = f"rolling update waits for pod {name} to be healthy"
            return plan
    return plan


@dataclass(frozen=True)
class Counts:
    replicas: int
    ready: int
    available: int
    current: int
    updated: int


def count_pods(
    pods: Mapping[int, Any], current: str, update: str, min_ready_seconds: int, now: datetime
) -> Counts:
    """status counts over every live (not terminating) pod of the set."""
    live = [p for p in pods.values() if not is_terminating(p)]
    return Counts(
        replicas=len(live),
        ready=sum(1 for p in live if is_running_and_ready(p)),
        available=sum(1 for p in live if available_in(p, min_ready_seconds, now) == 0.0),
        current=sum(1 for p in live if revision_of(p) == current),
        updated=sum(1 for p in live if revision_of(p) == update),
    )


def rollout_complete(shape: SetShape, counts: Counts) -> bool:
    """Every wanted pod exists, is ready and runs the update revision: the
    update revision becomes the current one."""
    return (
        counts.replicas == shape.replicas
        and counts.updated == shape.replicas
        and counts.ready == shape.replicas
    )
