"""NodeInfo: a node and what is already placed on it, as plain Python values.

The cache keeps one NodeInfo per node and updates it incrementally as pods
are assumed, bound, and deleted; a scheduling cycle runs without awaiting,
so the NodeInfos are a consistent snapshot for its whole length.
"""

from __future__ import annotations

from typing import Any

from orchestrator.scheduler.podinfo import WILDCARD_IP, HostPort, PodInfo, normalized_image
from orchestrator.scheduler.resources import Allocatable, node_allocatable
from orchestrator.scheduler.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    Taint,
)


def _condition_taints(status: Any, present: set[str]) -> list[Taint]:
    """The taints the node lifecycle controller would put on a node that is not
    Ready, when they are not there already. Without that controller in the
    cluster a failed node would otherwise keep attracting pods; with it, this
    adds nothing. A node that never reported Ready counts as not ready, as
    Kubernetes taints nodes not-ready when they register."""
    ready = ""
    for c in status.conditions:
        if c.type == "Ready":
            ready = c.status
            break
    if ready == "True":
        return []
    key = TAINT_UNREACHABLE if ready == "Unknown" else TAINT_NOT_READY
    if key in present:
        return []
    return [Taint(key, "", NO_SCHEDULE), Taint(key, "", NO_EXECUTE)]


class NodeInfo:
    """Per-node scheduling state. `node` is None for a placeholder: pods bound
    to a node the cache has not seen (yet) are kept there until it appears."""

    __slots__ = (
        "alloc",
        "free_cpu",
        "free_memory",
        "free_pods",
        "generation",
        "hard_taints",
        "image_sizes",
        "labels",
        "name",
        "node",
        "non_zero_cpu",
        "non_zero_memory",
        "owner_counts",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "prefer_taints",
        "requested_cpu",
        "requested_memory",
        "requested_scalar",
        "score_memo",
        "taints",
        "unschedulable",
        "used_ports",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: Any = None
        self.labels: dict[str, str] = {}
        self.alloc = Allocatable()
        self.taints: tuple[Taint, ...] = ()
        self.hard_taints: tuple[Taint, ...] = ()  # NoSchedule and NoExecute
        self.prefer_taints: tuple[Taint, ...] = ()  # PreferNoSchedule
        self.unschedulable = False
        self.image_sizes: dict[str, int] = {}
        self.pods: dict[str, PodInfo] = {}
        self.requested_cpu = 0
        self.requested_memory = 0
        self.requested_scalar: dict[str, int] = {}
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.used_ports: dict[HostPort, int] = {}
        self.owner_counts: dict[str, int] = {}
        self.pods_with_affinity = 0
        self.pods_with_required_anti_affinity = 0
        # Allocatable minus requested, kept up to date: the filter's hot path.
        self.free_cpu = 0
        self.free_memory = 0
        self.free_pods = 0
        # Scores that depend only on this node and a key of the pod (its
        # requests), kept until the node changes: consecutive pods of one
        # workload score an unchanged node the same.
        self.score_memo: dict[int, int] = {}
        self.generation = 0

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"

    # -- the node ------------------------------------------------------------------

    def set_node(self, node: Any) -> None:
        self.node = node
        self.labels = dict(node.metadata.labels)
        self.alloc = node_allocatable(node.status)
        taints = [Taint(t.key, t.value, t.effect) for t in node.spec.taints]
        taints += _condition_taints(node.status, {t.key for t in taints})
        self.taints = tuple(taints)
        self.hard_taints = tuple(t for t in taints if t.effect in (NO_SCHEDULE, NO_EXECUTE))
        self.prefer_taints = tuple(t for t in taints if t.effect == PREFER_NO_SCHEDULE)
        self.unschedulable = node.spec.unschedulable
        sizes: dict[str, int] = {}
        for image in node.status.images:
            for name in image.names:
                sizes[normalized_image(name)] = int(image.size_bytes)
        self.image_sizes = sizes
        self._refresh_free()
        self.generation += 1

    def _refresh_free(self) -> None:
        self.free_cpu = self.alloc.cpu - self.requested_cpu
        self.free_memory = self.alloc.memory - self.requested_memory
        self.free_pods = self.alloc.pods - len(self.pods)
        self.score_memo = {}

    # -- pods ------------------------------------------------------------------------

    def add_pod(self, pod: PodInfo) -> None:
        self.pods[pod.key] = pod
        self._account(pod, 1)

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._account(pod, -1)
        return pod

    def _account(self, pod: PodInfo, sign: int) -> None:
        r = pod.requests
        self.requested_cpu += sign * r.cpu
        self.requested_memory += sign * r.memory
        for name, amount in r.scalar.items():
            self.requested_scalar[name] = self.requested_scalar.get(name, 0) + sign * amount
        self.non_zero_cpu += sign * pod.non_zero.cpu
        self.non_zero_memory += sign * pod.non_zero.memory
        for port in pod.host_ports:
            left = self.used_ports.get(port, 0) + sign
            if left > 0:
                self.used_ports[port] = left
            else:
                self.used_ports.pop(port, None)
        if pod.owner_uid:
            left = self.owner_counts.get(pod.owner_uid, 0) + sign
            if left > 0:
                self.owner_counts[pod.owner_uid] = left
            else:
                self.owner_counts.pop(pod.owner_uid, None)
        if pod.has_affinity:
            self.pods_with_affinity += sign
        if pod.anti_affinity:
            self.pods_with_required_anti_affinity += sign
        self._refresh_free()
        self.generation += 1

    def port_conflict(self, ports: tuple[HostPort, ...]) -> bool:
        """Whether any of `ports` is taken: same protocol and port, and the same
        address or either side bound to every address."""
        used = self.used_ports
        if not used:
            return False
        for ip, proto, port in ports:
            if (ip, proto, port) in used:
                return True
            if ip == WILDCARD_IP:
                if any(u[1] == proto and u[2] == port for u in used):
                    return True
            elif (WILDCARD_IP, proto, port) in used:
                return True
        return False
