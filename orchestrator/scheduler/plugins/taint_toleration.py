"""TaintToleration: NoSchedule and NoExecute taints the pod does not tolerate
rule a node out; untolerated PreferNoSchedule taints only lower its score."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.framework import (
    SKIP_STATUS,
    CycleState,
    Snapshot,
    Status,
    normalize,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo
from orchestrator.scheduler.taints import NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE, Taint

NAME = "TaintToleration"
_HARD = frozenset((NO_SCHEDULE, NO_EXECUTE))


def untolerated_reason(taint: Taint) -> str:
    return f"node(s) had untolerated taint {taint.describe()}"


class TaintToleration:
    name = NAME

    def __init__(self) -> None:
        # Reason texts repeat across nodes; one Status per distinct taint.
        self._statuses: dict[Taint, Status] = {}

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        return None if snapshot.hard_tainted_nodes else SKIP_STATUS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.hard_taints:
            return None
        tolerations = pod.tolerations
        for taint in node.hard_taints:
            if not any(t.tolerates(taint) for t in tolerations):
                status = self._statuses.get(taint)
                if status is None:
                    status = Status.unresolvable(untolerated_reason(taint), plugin=NAME)
                    if len(self._statuses) < 10_000:
                        self._statuses[taint] = status
                return status
        return None

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        return [n for n in nodes if not n.hard_taints or self.filter(state, pod, n) is None]

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        if not snapshot.prefer_tainted_nodes or not any(n.prefer_taints for n in nodes):
            return None
        # Only tolerations that apply to PreferNoSchedule count, as Kubernetes.
        tolerations = [t for t in pod.tolerations if t.effect in ("", PREFER_NO_SCHEDULE)]
        raw = [
            sum(1 for taint in n.prefer_taints if not any(t.tolerates(taint) for t in tolerations))
            for n in nodes
        ]
        return normalize(raw, reverse=True)
