"""Pure decisions of the node lifecycle controller about node health: when a
node last showed life, when it has been silent too long, what its conditions
become then, how healthy each zone is, and how fast nodes may be tainted.

Kubernetes' rules (pkg/controller/nodelifecycle):
- A node shows life when its Lease in kube-node-lease is renewed or its Ready
  condition's lastHeartbeatTime changes. The moment is taken from this
  controller's own clock when it notices the change, never from the
  timestamps themselves, so clock skew between hosts does not matter.
- First sight of a node that has reported a Ready condition counts as life
  (a restarted controller gives every node a fresh grace period); a node
  that never reported one is judged from its creationTimestamp with the
  (longer) startup grace period.
- After the grace period without life, Ready, MemoryPressure, DiskPressure
  and PIDPressure become Unknown, reason NodeStatusUnknown, message
  "Kubelet stopped posting node status."; conditions never reported are added
  Unknown with NodeStatusNeverUpdated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core

NODE_LEASE_NAMESPACE = "kube-node-lease"
WATCHED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STATUS_UNKNOWN_REASON = "NodeStatusUnknown"
STATUS_UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NEVER_UPDATED_REASON = "NodeStatusNeverUpdated"
NEVER_UPDATED_MESSAGE = "Kubelet never posted node status."

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"

NORMAL = "Normal"
PARTIAL_DISRUPTION = "PartialDisruption"
FULL_DISRUPTION = "FullDisruption"


@dataclass(frozen=True)
class NodeHealth:
    """What the controller remembers about one node between passes."""

    probe: datetime  # when (controller clock) the node last showed life
    renew_time: str  # the Lease's renewTime as last seen ("" without a Lease)
    heartbeat: str  # the Ready condition's lastHeartbeatTime as last seen
    has_ready: bool  # whether the node has ever reported a Ready condition


def _ready(node: Any) -> Any | None:
    for c in node.status.conditions:
        if c.type == "Ready":
            return c
    return None


def _created(node: Any, fallback: datetime) -> datetime:
    try:
        return parse_rfc3339(node.metadata.creation_timestamp)
    except ValueError:
        return fallback


def observe(saved: NodeHealth | None, node: Any, lease: Any | None, now: datetime) -> NodeHealth:
    """The node's health record after looking at it (and its Lease) now."""
    ready = _ready(node)
    heartbeat = str(ready.last_heartbeat_time) if ready is not None else ""
    renew = str(lease.spec.renew_time) if lease is not None else ""
    if saved is None:
        probe = now if ready is not None else _created(node, now)
        if renew:
            probe = now
        return NodeHealth(probe, renew, heartbeat, ready is not None)
    probe = saved.probe
    if heartbeat != saved.heartbeat or (ready is not None) != saved.has_ready:
        probe = now
    if renew and renew != saved.renew_time:
        probe = now
    return NodeHealth(probe, renew, heartbeat, ready is not None)


def is_silent(health: NodeHealth, now: datetime, grace: float, startup_grace: float) -> bool:
    """Whether the node has shown no life for longer than its grace period."""
    allowed = grace if health.has_ready else startup_grace
    return now > health.probe + timedelta(seconds=allowed)


def unknown_conditions(
    conditions: Sequence[Any], now: str, created: str
) -> list[core.NodeCondition] | None:
    """The node's conditions with the watched ones set Unknown, or None when
    they already are. Other conditions are kept; lastHeartbeatTime stays (it
    is the node's word, not ours); lastTransitionTime moves to now."""
    result: list[core.NodeCondition] = []
    seen: set[str] = set()
    changed = False
    for c in conditions:
        copy = core.NodeCondition()
        copy.CopyFrom(c)
        if c.type in WATCHED_CONDITIONS:
            seen.add(c.type)
            if c.status != "Unknown":
                copy.status = "Unknown"
                copy.reason = STATUS_UNKNOWN_REASON
                copy.message = STATUS_UNKNOWN_MESSAGE
                copy.last_transition_time = now
                changed = True
        result.append(copy)
    for ctype in WATCHED_CONDITIONS:
        if ctype not in seen:
            result.append(
                core.NodeCondition(
                    type=ctype,
                    status="Unknown",
                    reason=NEVER_UPDATED_REASON,
                    message=NEVER_UPDATED_MESSAGE,
                    last_heartbeat_time=created,
                    last_transition_time=now,
                )
            )
            changed = True
    return result if changed else None


# -- zones and disruption --------------------------------------------------------------


def zone_of(node: Any) -> str:
    labels = node.metadata.labels
    return f"{labels.get(REGION_LABEL, '')}:\x00:{labels.get(ZONE_LABEL, '')}"


def zone_state(ready: Iterable[bool], unhealthy_threshold: float = 0.55) -> str:
    """Kubernetes' ComputeZoneState: no ready node is a full disruption; more
    than two not-ready nodes making up at least the threshold is partial."""
    up = down = 0
    for r in ready:
        if r:
            up += 1
        else:
            down += 1
    if up == 0 and down > 0:
        return FULL_DISRUPTION
    if down > 2 and down / (up + down) >= unhealthy_threshold:
        return PARTIAL_DISRUPTION
    return NORMAL


def all_fully_disrupted(states: Iterable[str]) -> bool:
    """Every zone down at once: more likely this controller (or the network
    around it) is cut off than every node died, so Kubernetes stops evicting."""
    listed = list(states)
    return bool(listed) and all(s == FULL_DISRUPTION for s in listed)


def eviction_rate(
    state: str,
    zone_size: int,
    *,
    rate: float = 0.1,
    secondary_rate: float = 0.01,
    large_cluster_threshold: int = 50,
) -> float:
    """Nodes per second a zone's nodes may be given NoExecute taints:
    --node-eviction-rate normally (and for a zone that is entirely down while
    others are not), the secondary rate in a partial disruption of a large
    zone, and not at all in a partial disruption of a small one."""
    if state == PARTIAL_DISRUPTION:
        return secondary_rate if zone_size > large_cluster_threshold else 0.0
    return rate


class TokenBucket:
    """A token bucket on an injected monotonic clock (burst 1 as Kubernetes'
    eviction limiter). A rate of 0 never grants a token."""

    def __init__(
        self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if self.rate > 0:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def set_rate(self, rate: float) -> None:
        """A new rate starts a new, full bucket, as Kubernetes' SwapLimiter does."""
        if rate == self.rate:
            return
        self.rate = rate
        self._tokens = float(self.burst)
        self._last = self._clock()

    def try_take(self) -> bool:
        self._refill()
        if self.rate <= 0 or self._tokens < 1:
            return False
        self._tokens -= 1
        return True
