"""NodeName: a pod that names its node (spec.nodeName set at creation, before
any binding) may only go there. Bound pods never reach the scheduler, so this
only matters for pods created with a nodeName the binding has not applied."""

from __future__ import annotations

from orchestrator.scheduler.framework import SKIP_STATUS, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = NAME

    def __init__(self) -> None:
        self._rejected = Status.unresolvable(REASON, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        return None if pod.node_name else SKIP_STATUS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return None if node.name == pod.node_name else self._rejected
