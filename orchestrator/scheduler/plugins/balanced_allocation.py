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

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        pod_cpu, pod_mem = pod.non_zero.cpu, pod.non_zero.memory
        key = (self, pod_cpu, pod_mem)
        scores: list[int] = []
        append = scores.append
        for n in nodes:
            memo = n.score_memo
            score = memo.get(key)
            if score is None:
                # balanced_score, inlined: this runs for many nodes of every pod.
                alloc = n.alloc
                cpu = (n.non_zero_cpu + pod_cpu) / alloc.cpu if alloc.cpu else 1.0
                mem = (n.non_zero_memory + pod_mem) / alloc.memory if alloc.memory else 1.0
                if cpu > 1.0:
                    cpu = 1.0
                if mem > 1.0:
                    mem = 1.0
                diff = cpu - mem if cpu > mem else mem - cpu
                score = memo[key] = int((1 - diff / 2) * MAX_NODE_SCORE)
            append(score)
        return scores
