"""InterPodAffinity: place pods relative to other pods over a topology (a
node, a zone: any node label named by topologyKey).

Filter: the pod's required affinity needs a matching pod in the node's
topology domain; its required anti-affinity needs none there; and existing
pods' required anti-affinity must not select the incoming pod in that
domain (symmetry). Score: preferred terms of the incoming pod, and of
existing pods toward it, add or subtract their weights per domain.

PreFilter counts matching pods per (topologyKey, value) once, so Filter is
a few dictionary lookups per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.scheduler.framework import (
    SKIP_STATUS,
    CycleState,
    Snapshot,
    Status,
    min_max_normalize,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import HARD_POD_AFFINITY_WEIGHT, PodInfo

NAME = "InterPodAffinity"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"

Pair = tuple[str, str]


@dataclass
class _Counts:
    existing_anti: dict[Pair, int] = field(default_factory=dict)
    affinity: dict[Pair, int] = field(default_factory=dict)
    anti: dict[Pair, int] = field(default_factory=dict)
    matches_own_affinity: bool = False


def _bump(counts: dict[Pair, int], key: str, labels: dict[str, str], by: int = 1) -> None:
    value = labels.get(key)
    if value is not None:
        pair = (key, value)
        counts[pair] = counts.get(pair, 0) + by


def count_pairs(pod: PodInfo, snapshot: Snapshot) -> _Counts:
    counts = _Counts()
    nodes = snapshot.nodes
    for n in nodes if snapshot.required_anti_affinity_pods else ():
        if not n.pods_with_required_anti_affinity:
            continue
        for other in n.pods.values():
            for term in other.anti_affinity:
                if term.matches(pod):
                    _bump(counts.existing_anti, term.topology_key, n.labels)
    if pod.affinity or pod.anti_affinity:
        for n in nodes:
            if not n.pods:
                continue
            for other in n.pods.values():
                if pod.affinity and all(t.matches(other) for t in pod.affinity):
                    for t in pod.affinity:
                        _bump(counts.affinity, t.topology_key, n.labels)
                for t in pod.anti_affinity:
                    if t.matches(other):
                        _bump(counts.anti, t.topology_key, n.labels)
        counts.matches_own_affinity = all(t.matches(pod) for t in pod.affinity)
    return counts


class InterPodAffinity:
    name = NAME

    def __init__(self, hard_pod_affinity_weight: int = HARD_POD_AFFINITY_WEIGHT) -> None:
        self.hard_weight = hard_pod_affinity_weight
        self._affinity = Status.unschedulable(REASON_AFFINITY, plugin=NAME)
        self._anti = Status.unschedulable(REASON_ANTI_AFFINITY, plugin=NAME)
        self._existing = Status.unschedulable(REASON_EXISTING_ANTI_AFFINITY, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        counts = count_pairs(pod, snapshot)
        if not (pod.affinity or pod.anti_affinity or counts.existing_anti):
            return SKIP_STATUS
        state.write(NAME, counts)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        counts: _Counts = state.read(NAME)
        labels = node.labels
        for (key, wanted), n in counts.existing_anti.items():
            if n > 0 and labels.get(key) == wanted:
                return self._existing
        for term in pod.anti_affinity:
            value = labels.get(term.topology_key)
            if value is not None and counts.anti.get((term.topology_key, value), 0) > 0:
                return self._anti
        if pod.affinity:
            exist = True
            for term in pod.affinity:
                value = labels.get(term.topology_key)
                if value is None:
                    return self._affinity  # every topology label must be on the node
                if counts.affinity.get((term.topology_key, value), 0) <= 0:
                    exist = False
            # The first pod of a group with affinity to itself must go somewhere.
            if not exist and not (not counts.affinity and counts.matches_own_affinity):
                return self._affinity
        return None

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        preferred = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        if not preferred and not snapshot.affinity_pods:
            return None
        topology: dict[Pair, int] = {}
        for n in snapshot.nodes:
            if not n.pods or (not preferred and not n.pods_with_affinity):
                continue
            labels = n.labels
            for other in n.pods.values():
                for t in pod.preferred_affinity:
                    if t.matches(other):
                        _bump(topology, t.topology_key, labels, t.weight)
                for t in pod.preferred_anti_affinity:
                    if t.matches(other):
                        _bump(topology, t.topology_key, labels, -t.weight)
                if not other.has_affinity:
                    continue
                if self.hard_weight:
                    for t in other.affinity:
                        if t.matches(pod):
                            _bump(topology, t.topology_key, labels, self.hard_weight)
                for t in other.preferred_affinity:
                    if t.matches(pod):
                        _bump(topology, t.topology_key, labels, t.weight)
                for t in other.preferred_anti_affinity:
                    if t.matches(pod):
                        _bump(topology, t.topology_key, labels, -t.weight)
        if not topology:
            return None
        keys = {key for key, _ in topology}
        raw = [
            float(sum(topology.get((k, n.labels[k]), 0) for k in keys if k in n.labels))
            for n in nodes
        ]
        return min_max_normalize(raw)
