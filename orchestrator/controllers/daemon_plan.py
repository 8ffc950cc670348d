"""What a DaemonSet should do next, decided from nodes and pods alone.

Placement (Kubernetes' DaemonSet `manage`): every eligible node gets exactly
one pod; a failed pod is deleted and replaced (after a back-off the caller
tracks); extra pods on a node go, oldest kept; pods on nodes that no longer
want them (labels, affinity, a NoExecute taint) go; pods on nodes that no
longer exist are deleted with no grace period, since no agent is left to
confirm they stopped. Without surge a node whose pod is still terminating
gets its replacement only once the old one is gone, so a node never runs two
copies of a daemon that may hold host ports or files.

RollingUpdate (Kubernetes' `rollingUpdate`), over eligible nodes:
- maxSurge 0: old pods are deleted while at most maxUnavailable nodes lack an
  available pod; an old pod that is not available anyway goes at once.
- maxSurge > 0: a new pod starts beside the old one on up to maxSurge nodes;
  the old pod goes once the new one is available. A node whose old pod is not
  available gets its new pod at once.
Both numbers are resolved against the number of eligible nodes, rounding up.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.api.intorstr import resolve_scaled
from orchestrator.controllers.daemon_nodes import Fit
from orchestrator.controllers.stateful_pods import (
    available_in,
    is_failed,
    is_running_and_ready,
    is_terminating,
    revision_of,
)

ROLLING_UPDATE = "RollingUpdate"


@dataclass(frozen=True)
class UpdatePolicy:
    strategy: str = ROLLING_UPDATE
    max_unavailable: int = 1
    max_surge: int = 0
    min_ready_seconds: int = 0

    @classmethod
    def of(cls, ds: Any, desired: int) -> UpdatePolicy:
        spec = ds.spec
        strategy = spec.update_strategy.type or ROLLING_UPDATE
        rolling = spec.update_strategy.rolling_update
        unavailable_raw = rolling.max_unavailable if rolling.HasField("max_unavailable") else None
        surge_raw = rolling.max_surge if rolling.HasField("max_surge") else None
        surge = resolve_scaled(surge_raw, desired, True, "0")
        unavailable = resolve_scaled(unavailable_raw, desired, True, "1")
        if surge == 0 and unavailable == 0:
            unavailable = 1  # an impossible pair: fall back on Kubernetes' default
        return cls(strategy, unavailable, surge, int(spec.min_ready_seconds))

    @property
    def surging(self) -> bool:
        return self.strategy == ROLLING_UPDATE and self.max_surge > 0


@dataclass(frozen=True)
class PodDelete:
    pod: Any
    reason: str  # failed, duplicate, not-eligible, node-gone, update
    force: bool = False  # grace period 0: nobody is left to stop it


@dataclass
class DaemonPlan:
    creates: list[str] = field(default_factory=list)  # node names
    deletes: list[PodDelete] = field(default_factory=list)
    fits: dict[str, Fit] = field(default_factory=dict)
    requeue_after: float | None = None

    def deleting(self, pod: Any) -> bool:
        return any(d.pod.metadata.uid == pod.metadata.uid for d in self.deletes)

    def wake_in(self, seconds: float) -> None:
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def _age_key(pod: Any) -> tuple[str, str]:
    return (pod.metadata.creation_timestamp, pod.metadata.name)


def _keep_on_node(pods: Sequence[Any], hash_: str, surging: bool) -> list[Any]:
    """Which of a node's running pods to keep: the oldest one; when surging,
    also the newest one at the update revision (its replacement)."""
    ordered = sorted(pods, key=_age_key)
    if not surging:
        return ordered[:1]
    new = [p for p in ordered if revision_of(p) == hash_]
    old = [p for p in ordered if revision_of(p) != hash_]
    return old[:1] + new[-1:]


def plan_daemonset(
    fits: Mapping[str, Fit],
    pods_by_node: Mapping[str, Sequence[Any]],
    hash_: str,
    policy: UpdatePolicy,
    now: datetime,
    held_back: Collection[str] = (),
) -> DaemonPlan:
    """fits: every existing node's Fit (node_fits); held_back: nodes where a
    replacement for a failed pod must wait (back-off)."""
    plan = DaemonPlan(fits=dict(fits))
    node_names = sorted(fits)
    for name in node_names:
        fit = fits[name]
        pods = pods_by_node.get(name, ())
        live = [p for p in pods if not is_terminating(p)]
        failed = [p for p in live if is_failed(p)]
        running = [p for p in live if not is_failed(p)]
        if not fit.may_stay:
            plan.deletes.extend(PodDelete(p, "not-eligible") for p in live)
            continue
        plan.deletes.extend(PodDelete(p, "failed") for p in failed)
        keep = {id(p) for p in _keep_on_node(running, hash_, policy.surging)}
        plan.deletes.extend(PodDelete(p, "duplicate") for p in running if id(p) not in keep)
        if not fit.should_run or running:
            continue
        if failed or name in held_back:
            continue  # replaced on a later pass, once the failed pod is gone
        if len(live) < len(pods) and not policy.surging:
            continue  # the old pod is still terminating here
        plan.creates.append(name)
    for name, pods in pods_by_node.items():
        if name not in fits:
            plan.deletes.extend(PodDelete(p, "node-gone", force=True) for p in pods)
    if policy.strategy == ROLLING_UPDATE:
        _rolling_update(plan, node_names, pods_by_node, hash_, policy, now)
    return plan


def _updated_and_old(plan: DaemonPlan, pods: Sequence[Any], hash_: str) -> tuple[Any, Any, bool]:
    """(new pod, old pod, ok) among a node's pods that stay; ok is False when a
    node has more than one of either (being cleaned up)."""
    staying = [
        p for p in pods if not is_terminating(p) and not is_failed(p) and not plan.deleting(p)
    ]
    new = [p for p in staying if revision_of(p) == hash_]
    old = [p for p in staying if revision_of(p) != hash_]
    if len(new) > 1 or len(old) > 1:
        return None, None, False
    return (new[0] if new else None), (old[0] if old else None), True


def _rolling_update(
    plan: DaemonPlan,
    node_names: Sequence[str],
    pods_by_node: Mapping[str, Sequence[Any]],
    hash_: str,
    policy: UpdatePolicy,
    now: datetime,
) -> None:
    def available(pod: Any) -> bool:
        left = available_in(pod, policy.min_ready_seconds, now)
        if left is not None and left > 0:
            plan.wake_in(left)
        return left == 0.0

    eligible = [n for n in node_names if plan.fits[n].should_run]
    if policy.surging:
        surged = 0
        candidates: list[str] = []
        for name in eligible:
            new, old, ok = _updated_and_old(plan, pods_by_node.get(name, ()), hash_)
            if not ok:
                surged += 1
            elif old is None:
                continue  # nothing to replace; placement handles a missing pod
            elif new is None:
                if not available(old):
                    plan.creates.append(name)  # replace an unavailable pod at once
                else:
                    candidates.append(name)
            elif not available(new):
                surged += 1
            else:
                plan.deletes.append(PodDelete(old, "update"))
        room = max(policy.max_surge - surged, 0)
        plan.creates.extend(candidates[:room])
        return
    unavailable = 0
    candidate_pods: list[Any] = []
    for name in eligible:
        new, old, ok = _updated_and_old(plan, pods_by_node.get(name, ()), hash_)
        if not ok or (new is None) == (old is None):
            unavailable += 1  # missing, or both there: placement sorts it out
        elif new is not None:
            if not available(new):
                unavailable += 1
        elif not available(old):
            plan.deletes.append(PodDelete(old, "update"))
        elif unavailable < policy.max_unavailable:
            candidate_pods.append(old)
    room = max(policy.max_unavailable - unavailable, 0)
    plan.deletes.extend(PodDelete(p, "update") for p in candidate_pods[:room])


@dataclass(frozen=True)
class DaemonCounts:
    desired: int = 0
    current: int = 0
    misscheduled: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0

    @property
    def unavailable(self) -> int:
        return max(self.desired - self.available, 0)


def count_daemon_pods(
    fits: Mapping[str, Fit],
    pods_by_node: Mapping[str, Sequence[Any]],
    hash_: str,
    min_ready_seconds: int,
    now: datetime,
) -> DaemonCounts:
    """Status as Kubernetes counts it, node by node; a node's pod is its
    oldest live one."""
    desired = current = misscheduled = ready = available = updated = 0
    for name, fit in fits.items():
        live = sorted(
            (p for p in pods_by_node.get(name, ()) if not is_terminating(p)), key=_age_key
        )
        if fit.should_run:
            desired += 1
            if live:
                current += 1
                pod = live[0]
                ready += is_running_and_ready(pod)
                available += available_in(pod, min_ready_seconds, now) == 0.0
                updated += revision_of(pod) == hash_
        elif live:
            misscheduled += 1
    return DaemonCounts(desired, current, misscheduled, ready, available, updated)
