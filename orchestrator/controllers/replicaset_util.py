"""The ReplicaSet controller's decisions, as functions of state.

- Which pods count: active ones (not Succeeded/Failed, not being deleted).
- Which pods to delete first when scaling down, in Kubernetes' order.
- Slow-start batches for creations (1, 2, 4, ...): a template that cannot
  work (quota, invalid) fails after one request instead of hundreds.
- Expectations: the creations and deletions a sync made but has not seen
  in its cache yet, so a lagging cache does not make the next sync act twice.
- The status a ReplicaSet reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import apps_v1_pb2 as apps

# Kubernetes' burstReplicas: at most this many creations or deletions per sync.
BURST_REPLICAS = 500
SLOW_START_INITIAL_BATCH = 1
# After this long, unfulfilled expectations are assumed lost (a missed watch
# event) and the controller syncs anyway.
EXPECTATIONS_TTL = 300.0

REPLICA_FAILURE = "ReplicaFailure"

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _time(ts: str) -> datetime | None:
    if not ts:
        return None
    try:
        return parse_rfc3339(ts)
    except ValueError:
        return None


# -- pods -----------------------------------------------------------------------------


def is_pod_active(pod: Any) -> bool:
    return pod.status.phase not in ("Succeeded", "Failed") and not pod.metadata.deletion_timestamp


def ready_condition(pod: Any) -> Any | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_pod_ready(pod: Any) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.status == "True"


def available_at(pod: Any, min_ready_seconds: int) -> datetime | None:
    """When a ready pod counts as available: Ready for minReadySeconds. None if not ready."""
    cond = ready_condition(pod)
    if cond is None or cond.status != "True":
        return None
    since = _time(cond.last_transition_time)
    if min_ready_seconds <= 0:
        return datetime.min.replace(tzinfo=UTC)
    if since is None:
        return None  # ready but never says since when: cannot have waited
    return since + timedelta(seconds=min_ready_seconds)


def is_pod_available(pod: Any, min_ready_seconds: int, now: datetime) -> bool:
    # Strictly after, as Kubernetes' IsPodAvailable (lastTransition+minReady < now).
    at = available_at(pod, min_ready_seconds)
    if at is None:
        return False
    return min_ready_seconds <= 0 or at < now


def restart_count(pod: Any) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def _ready_time(pod: Any) -> datetime | None:
    cond = ready_condition(pod)
    if cond is None or cond.status != "True":
        return None
    return _time(cond.last_transition_time)


def deletion_order_key(pod: Any, pods_on_node: int = 1) -> tuple[Any, ...]:
    """Sort key: smaller goes first when scaling down (Kubernetes' ActivePodsWithRanks).

    Unscheduled before scheduled, Pending before Unknown before Running, not
    ready before ready, pods doubled up on a node before lone ones, ready for
    a shorter time first, more restarts first, newer before older.
    """
    scheduled = bool(pod.spec.node_name)
    ready = is_pod_ready(pod)
    ready_since = _ready_time(pod) if ready else None
    created = _time(pod.metadata.creation_timestamp)
    far_future = datetime.max.replace(tzinfo=UTC)
    return (
        scheduled,
        _PHASE_RANK.get(pod.status.phase, 0),
        ready,
        -pods_on_node,
        # Ready longer sorts later: negate by ordering on "now - since" descending
        # is the same as since ascending reversed; a missing time is "just now".
        -(ready_since or far_future).timestamp() if ready else 0.0,
        -restart_count(pod),
        # Newer first; no timestamp counts as newest.
        -(created or far_future).timestamp(),
        pod.metadata.name,
    )


def pods_to_delete(pods: Sequence[Any], count: int) -> list[Any]:
    """The `count` pods to delete first, in Kubernetes' preference order."""
    if count <= 0:
        return []
    per_node: dict[str, int] = {}
    for pod in pods:
        if pod.spec.node_name:
            per_node[pod.spec.node_name] = per_node.get(pod.spec.node_name, 0) + 1
    ranked = sorted(
        pods, key=lambda p: deletion_order_key(p, per_node.get(p.spec.node_name, 1) or 1)
    )
    return ranked[:count]


def slow_start_batches(count: int, initial: int = SLOW_START_INITIAL_BATCH) -> list[int]:
    """Batch sizes doubling from `initial` that add up to count."""
    batches: list[int] = []
    size = max(1, initial)
    remaining = count
    while remaining > 0:
        batch = min(size, remaining)
        batches.append(batch)
        remaining -= batch
        size *= 2
    return batches


# -- expectations ---------------------------------------------------------------------


@dataclass
class _Expected:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    at: float = 0.0


class Expectations:
    """Per-controller-key counts of creations, and keys of pods being deleted,
    that the cache has not shown yet (Kubernetes' UIDTrackingControllerExpectations)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = EXPECTATIONS_TTL):
        self._clock = clock
        self._ttl = ttl
        self._by_key: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._by_key.get(key)
        if exp is None:
            return True
        if exp.adds <= 0 and not exp.deletes:
            return True
        return self._clock() - exp.at > self._ttl

    def expect_creations(self, key: str, count: int) -> None:
        self._by_key[key] = _Expected(adds=count, at=self._clock())

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self._by_key[key] = _Expected(deletes=set(pod_keys), at=self._clock())

    def creation_observed(self, key: str, count: int = 1) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.adds -= count

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        exp = self._by_key.get(key)
        return (0, 0) if exp is None else (max(exp.adds, 0), len(exp.deletes))


# -- status ---------------------------------------------------------------------------


def _labels_match(pod: Any, template_labels: Any) -> bool:
    labels = pod.metadata.labels
    return all(labels.get(k) == v for k, v in template_labels.items())


def calculate_status(
    rs: Any,
    active_pods: Sequence[Any],
    now: datetime,
    failure: tuple[str, str] | None,
    now_text: str,
) -> Any:
    """The ReplicaSetStatus for rs given its active pods and the last sync's
    failure, if any: (reason, message) for the ReplicaFailure condition."""
    status = apps.ReplicaSetStatus()
    status.CopyFrom(rs.status)
    status.replicas = len(active_pods)
    status.fully_labeled_replicas = sum(
        1 for p in active_pods if _labels_match(p, rs.spec.template.metadata.labels)
    )
    status.ready_replicas = sum(1 for p in active_pods if is_pod_ready(p))
    status.available_replicas = sum(
        1 for p in active_pods if is_pod_available(p, rs.spec.min_ready_seconds, now)
    )
    status.observed_generation = rs.metadata.generation
    existing = [c for c in status.conditions if c.type == REPLICA_FAILURE]
    if failure is not None:
        reason, message = failure
        if not existing:
            cond = apps.ReplicaSetCondition(
                type=REPLICA_FAILURE,
                status="True",
                reason=reason,
                message=message,
                last_transition_time=now_text,
            )
            status.conditions.append(cond)
    elif existing:
        kept = [c for c in status.conditions if c.type != REPLICA_FAILURE]
        del status.conditions[:]
        status.conditions.extend(kept)
    return status


def next_availability_check(
    active_pods: Sequence[Any], min_ready_seconds: int, now: datetime
) -> float | None:
    """Seconds until the next ready pod becomes available, so the controller
    can look again then; None if no pod is waiting for minReadySeconds."""
    if min_ready_seconds <= 0:
        return None
    soonest: datetime | None = None
    for pod in active_pods:
        at = available_at(pod, min_ready_seconds)
        if at is None or at < now:
            continue
        if soonest is None or at < soonest:
            soonest = at
    if soonest is None:
        return None
    return max((soonest - now).total_seconds(), 0.0) + 0.5


class Backoff:
    """Per-key exponential delays for retrying a sync that failed in a way the
    work queue does not see (a sync that reports a failure in status and returns)."""

    def __init__(self, base: float = 0.5, maximum: float = 60.0) -> None:
        self.base = base
        self.maximum = maximum
        self._failures: dict[str, int] = {}

    def next(self, key: str) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(self.base * (2**failures), self.maximum)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
