"""NodeResourcesBalancedAllocation: prefer nodes where cpu and memory would be
used in equal proportion after placing the pod, so neither is stranded (a
node full on cpu with free memory can take no more pods either way)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.framework import MAX_NODE_SCORE, CycleState, Snapshot
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "NodeResourcesBalancedAllocation"


def balanced_score(cpu_fraction: float, memory_fraction: float) -> int:
    # With two resources the standard deviation is half their difference.
    std = abs(min(cpu_fraction, 1.0) - min(memory_fraction, 1.0)) / 2
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation:
    name = NAME

    def local_key(self, pod: PodInfo) -> tuple[int, int]:
        return pod.non_zero.cpu, pod.non_zero.memory

    def score_node(self, pod: PodInfo, node: NodeInfo) -> int:
        alloc, wants = node.alloc, pod.non_zero
        cpu = (node.non_zero_cpu + wants.cpu) / alloc.cpu if alloc.cpu else 1.0
        memory = (node.non_zero_memory + wants.memory) / alloc.memory if alloc.memory else 1.0
        return balanced_score(cpu, memory)

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        return [self.score_node(pod, n) for n in nodes]
