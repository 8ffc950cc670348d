"""NodePorts: a hostPort can be bound once per node (per protocol and address)."""

from __future__ import annotations

from orchestrator.scheduler.framework import SKIP_STATUS, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts:
    name = NAME

    def __init__(self) -> None:
        self._rejected = Status.unschedulable(REASON, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        return None if pod.host_ports else SKIP_STATUS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return self._rejected if node.port_conflict(pod.host_ports) else None
