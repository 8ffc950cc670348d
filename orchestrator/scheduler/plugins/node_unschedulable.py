"""NodeUnschedulable: keep pods off cordoned nodes (spec.unschedulable), unless
the pod tolerates the node.kubernetes.io/unschedulable:NoSchedule taint
(DaemonSet pods do)."""

from __future__ import annotations

from orchestrator.scheduler.framework import SKIP_STATUS, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo
from orchestrator.scheduler.taints import NO_SCHEDULE, TAINT_UNSCHEDULABLE, Taint, tolerated

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
_TAINT = Taint(TAINT_UNSCHEDULABLE, "", NO_SCHEDULE)


class NodeUnschedulable:
    name = NAME

    def __init__(self) -> None:
        self._rejected = Status.unresolvable(REASON, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        if not snapshot.unschedulable_nodes or tolerated(_TAINT, pod.tolerations):
            return SKIP_STATUS
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return self._rejected if node.unschedulable else None

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        return [n for n in nodes if not n.unschedulable]
