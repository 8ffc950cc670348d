"""NodeResourcesFit: the pod's requests must fit in what the node has left;
scoring prefers emptier nodes (LeastAllocated, spreading load) or fuller ones
(MostAllocated, packing pods so that whole nodes stay free).

Scoring counts the non-zero requests (a container without a cpu or memory
request counts as 100m / 200Mi), as Kubernetes does, so that best-effort
pods spread too.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.framework import MAX_NODE_SCORE, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "NodeResourcesFit"
LEAST_ALLOCATED = "LeastAllocated"
MOST_ALLOCATED = "MostAllocated"
STRATEGIES = (LEAST_ALLOCATED, MOST_ALLOCATED)


def insufficient(pod: PodInfo, node: NodeInfo) -> list[str]:
    """Every resource the node lacks for the pod, in Kubernetes' order."""
    reasons = []
    alloc = node.alloc
    if len(node.pods) + 1 > alloc.pods:
        reasons.append("Too many pods")
    r = pod.requests
    if r.cpu and r.cpu > alloc.cpu - node.requested_cpu:
        reasons.append("Insufficient cpu")
    if r.memory and r.memory > alloc.memory - node.requested_memory:
        reasons.append("Insufficient memory")
    for name, amount in r.scalar.items():
        if amount > alloc.scalar.get(name, 0) - node.requested_scalar.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def least_allocated(requested: int, capacity: int) -> int:
    if capacity <= 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_allocated(requested: int, capacity: int) -> int:
    if capacity <= 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


class NodeResourcesFit:
    name = NAME

    def __init__(
        self, strategy: str = LEAST_ALLOCATED, *, cpu_weight: int = 1, memory_weight: int = 1
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(
                f"NodeResourcesFit: scoringStrategy.type {strategy!r} is not one of "
                f"{', '.join(STRATEGIES)}"
            )
        if cpu_weight < 0 or memory_weight < 0 or cpu_weight + memory_weight == 0:
            raise ValueError(
                "NodeResourcesFit: resource weights must be non-negative and not all zero"
            )
        self.strategy = strategy
        self.cpu_weight = cpu_weight
        self.memory_weight = memory_weight
        self._statuses: dict[tuple[str, ...], Status] = {}

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        # The common case first, in line: everything fits.
        r = pod.requests
        if (
            node.free_pods > 0
            and r.cpu <= node.free_cpu
            and r.memory <= node.free_memory
            and not r.scalar
        ):
            return None
        reasons = tuple(insufficient(pod, node))
        if not reasons:
            return None
        status = self._statuses.get(reasons)
        if status is None:
            status = self._statuses[reasons] = Status.unschedulable(*reasons, plugin=NAME)
        return status

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        r = pod.requests
        cpu, memory = r.cpu, r.memory
        if r.scalar:
            return [n for n in nodes if self.filter(state, pod, n) is None]
        # A zero request fits even an overcommitted node (insufficient() skips it).
        if cpu and memory:
            return [
                n
                for n in nodes
                if n.free_pods > 0 and cpu <= n.free_cpu and memory <= n.free_memory
            ]
        if cpu:
            return [n for n in nodes if n.free_pods > 0 and cpu <= n.free_cpu]
        if memory:
            return [n for n in nodes if n.free_pods > 0 and memory <= n.free_memory]
        return [n for n in nodes if n.free_pods > 0]

    def local_key(self, pod: PodInfo) -> tuple[int, int]:
        return pod.non_zero.cpu, pod.non_zero.memory

    def score_node(self, pod: PodInfo, node: NodeInfo) -> int:
        cpu_w, mem_w = self.cpu_weight, self.memory_weight
        alloc = node.alloc
        cpu = node.non_zero_cpu + pod.non_zero.cpu
        memory = node.non_zero_memory + pod.non_zero.memory
        if self.strategy == MOST_ALLOCATED:
            by_cpu = most_allocated(cpu, alloc.cpu)
            by_memory = most_allocated(memory, alloc.memory)
        else:
            by_cpu = least_allocated(cpu, alloc.cpu)
            by_memory = least_allocated(memory, alloc.memory)
        return (by_cpu * cpu_w + by_memory * mem_w) // (cpu_w + mem_w)

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        return [self.score_node(pod, n) for n in nodes]
