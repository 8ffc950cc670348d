"""SelectorSpread: spread the pods of one controller (the same controller
owner reference: a ReplicaSet, StatefulSet, Job...) over nodes and zones, so
that losing one node or zone loses few replicas.

Kubernetes derives the group from Services and controllers selecting the
pod; the controller owner is the same group for every pod a controller
made, and needs no extra informers.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.framework import MAX_NODE_SCORE, CycleState, Snapshot
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "SelectorSpread"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Zones weigh twice as much as nodes: a zone failure is the bigger loss.
ZONE_WEIGHTING = 2 / 3


class SelectorSpread:
    name = NAME

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        owner = pod.owner_uid
        if not owner:
            return None
        counts = [n.owner_counts.get(owner, 0) for n in nodes]
        zones: dict[str, int] = {}
        for n in snapshot.nodes:
            zone = n.labels.get(ZONE_LABEL)
            if zone is not None:
                zones[zone] = zones.get(zone, 0) + n.owner_counts.get(owner, 0)
        max_node = max(counts, default=0)
        max_zone = max(zones.values(), default=0)
        scores = []
        for n, count in zip(nodes, counts, strict=True):
            score = MAX_NODE_SCORE * (max_node - count) / max_node if max_node else MAX_NODE_SCORE
            zone = n.labels.get(ZONE_LABEL)
            if zones and zone is not None:
                zone_score = (
                    MAX_NODE_SCORE * (max_zone - zones[zone]) / max_zone
                    if max_zone
                    else MAX_NODE_SCORE
                )
                score = score * (1 - ZONE_WEIGHTING) + zone_score * ZONE_WEIGHTING
            scores.append(int(score))
        return scores
