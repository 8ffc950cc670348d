"""PodTopologySpread: keep the number of matching pods per topology domain
(zone, node, ...) within maxSkew of the emptiest domain.

DoNotSchedule constraints filter: placing the pod in a domain must not make
that domain exceed the global minimum by more than maxSkew. ScheduleAnyway
constraints score: domains with fewer matching pods score higher. Only nodes
that satisfy the pod's nodeSelector / required node affinity count as
domains (nodeAffinityPolicy Honor, Kubernetes' default); taints are ignored
(nodeTaintsPolicy Ignore, the default too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP_STATUS,
    CycleState,
    Snapshot,
    Status,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.plugins.node_affinity import NodeAffinityError, required_for
from orchestrator.scheduler.podinfo import PodInfo, SpreadConstraint

NAME = "PodTopologySpread"
REASON_SKEW = "node(s) didn't match pod topology spread constraints"
REASON_MISSING_LABEL = (
    "node(s) didn't match pod topology spread constraints (missing required label)"
)
HOSTNAME = "kubernetes.io/hostname"


def count_matching(node: NodeInfo, c: SpreadConstraint, namespace: str) -> int:
    selector = c.selector
    if selector is None or not node.pods:
        return 0
    return sum(
        1
        for p in node.pods.values()
        if p.namespace == namespace and not p.terminating and selector.matches(p.labels)
    )


def eligible_nodes(pod: PodInfo, nodes: Sequence[NodeInfo], keys: Sequence[str]) -> list[NodeInfo]:
    """Nodes that count as domains: every topology key present, node affinity met."""
    try:
        required = required_for(pod)
    except NodeAffinityError:
        required = None
    out = []
    for n in nodes:
        labels = n.labels
        if any(k not in labels for k in keys):
            continue
        if required is not None and not required.matches(labels, n.name):
            continue
        out.append(n)
    return out


@dataclass
class _Hard:
    constraints: list[SpreadConstraint]
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    minimum: list[int] = field(default_factory=list)
    self_match: list[int] = field(default_factory=list)


class PodTopologySpread:
    name = NAME

    def __init__(self) -> None:
        self._skew = Status.unschedulable(REASON_SKEW, plugin=NAME)
        self._missing = Status.unresolvable(REASON_MISSING_LABEL, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        hard = [c for c in pod.spread if c.hard]
        if not hard:
            return SKIP_STATUS
        data = _Hard(hard)
        keys = [c.topology_key for c in hard]
        for n in eligible_nodes(pod, snapshot.nodes, keys):
            for c in hard:
                pair = (c.topology_key, n.labels[c.topology_key])
                data.counts[pair] = data.counts.get(pair, 0) + count_matching(n, c, pod.namespace)
        for c in hard:
            domains = [v for (k, _), v in data.counts.items() if k == c.topology_key]
            if len(domains) < c.min_domains:
                data.minimum.append(0)  # too few domains: as if an empty one existed
            else:
                data.minimum.append(min(domains, default=0))
            selector = c.selector
            data.self_match.append(
                1 if selector is not None and selector.matches(pod.labels) else 0
            )
        state.write(NAME, data)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        data: _Hard = state.read(NAME)
        labels = node.labels
        for i, c in enumerate(data.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return self._missing
            matched = data.counts.get((c.topology_key, value), 0)
            if matched + data.self_match[i] - data.minimum[i] > c.max_skew:
                return self._skew
        return None

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        soft = [c for c in pod.spread if not c.hard]
        if not soft or not nodes:
            return None
        keys = [c.topology_key for c in soft]
        scored = [all(k in n.labels for k in keys) for n in nodes]
        # Per constraint: matching pods per domain over every eligible node, and a
        # weight that grows with the number of domains among the candidates.
        per_domain: list[dict[str, int]] = []
        weights: list[float] = []
        for c in soft:
            values = {n.labels[c.topology_key] for n, ok in zip(nodes, scored, strict=True) if ok}
            weights.append(math.log(len(values) + 2))
            if c.topology_key == HOSTNAME:
                per_domain.append({})  # counted per node below
                continue
            counts: dict[str, int] = {}
            for n in eligible_nodes(pod, snapshot.nodes, keys):
                value = n.labels[c.topology_key]
                if value in values:
                    counts[value] = counts.get(value, 0) + count_matching(n, c, pod.namespace)
            per_domain.append(counts)
        raw: list[int | None] = []
        for n, ok in zip(nodes, scored, strict=True):
            if not ok:
                raw.append(None)
                continue
            total = 0.0
            for i, c in enumerate(soft):
                if c.topology_key == HOSTNAME:
                    matched = count_matching(n, c, pod.namespace)
                else:
                    matched = per_domain[i].get(n.labels[c.topology_key], 0)
                total += matched * weights[i] + (c.max_skew - 1)
            raw.append(round(total))
        present = [s for s in raw if s is not None]
        if not present:
            return None
        lo, hi = min(present), max(present)
        return [
            0
            if s is None
            else (MAX_NODE_SCORE if hi == 0 else MAX_NODE_SCORE * (hi + lo - s) // hi)
            for s in raw
        ]
