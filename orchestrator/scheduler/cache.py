"""The scheduler's cache: nodes, the pods placed on them, and assumed pods.

A pod is *assumed* on a node as soon as the scheduler picks it, before the
binding reaches the apiserver, so the next cycle already counts it (else a
burst of pods would all pick the same emptiest node). When the informer
later shows the pod bound, the assumption is confirmed; when binding fails
it is forgotten; when a bound pod never shows up (its watch event lost, the
pod deleted meanwhile) the assumption expires after a TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.scheduler.framework import Snapshot
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

ASSUMED_TTL = 30.0


@dataclass(slots=True)
class _PodState:
    info: PodInfo
    node: str
    assumed: bool
    binding_done: float | None = None  # monotonic time the bind call returned


class SchedulerCache:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, assumed_ttl: float = ASSUMED_TTL
    ) -> None:
        self._clock = clock
        self._ttl = assumed_ttl
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[str, _PodState] = {}
        self._image_nodes: dict[str, int] = {}
        self._node_list: list[NodeInfo] | None = None
        self._affinity_pods = 0
        self._anti_affinity_pods = 0
        self._unschedulable_nodes = 0
        self._hard_tainted_nodes = 0
        self._prefer_tainted_nodes = 0

    # -- nodes -------------------------------------------------------------------------

    def add_or_update_node(self, node: Any) -> NodeInfo:
        name = node.metadata.name
        info = self._nodes.get(name)
        if info is None:
            info = self._nodes[name] = NodeInfo(name)
        if info.node is None:
            self._node_list = None  # a new schedulable node
        else:
            self._count_node(info, -1)
        info.set_node(node)
        self._count_node(info, 1)
        return info

    def remove_node(self, name: str) -> None:
        info = self._nodes.get(name)
        if info is None or info.node is None:
            return
        self._count_node(info, -1)
        self._node_list = None
        if info.pods:
            # Pods still bound there keep a placeholder until they are deleted.
            info.node = None
            info.labels = {}
        else:
            del self._nodes[name]

    def _count_node(self, info: NodeInfo, sign: int) -> None:
        """Keep the snapshot's cluster-wide node counts as nodes come, change and go."""
        self._unschedulable_nodes += sign * info.unschedulable
        self._hard_tainted_nodes += sign * bool(info.hard_taints)
        self._prefer_tainted_nodes += sign * bool(info.prefer_taints)
        for image in info.image_sizes:
            left = self._image_nodes.get(image, 0) + sign
            if left > 0:
                self._image_nodes[image] = left
            else:
                self._image_nodes.pop(image, None)

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    @property
    def node_count(self) -> int:
        return len(self.nodes())

    def nodes(self) -> list[NodeInfo]:
        """Nodes with a Node object, in a stable order (by name) so that the
        scheduler's rotating start index walks all of them fairly."""
        if self._node_list is None:
            self._node_list = sorted(
                (n for n in self._nodes.values() if n.node is not None), key=lambda n: n.name
            )
        return self._node_list

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.nodes(),
            self._image_nodes,
            self._affinity_pods,
            self._anti_affinity_pods,
            self._unschedulable_nodes,
            self._hard_tainted_nodes,
            self._prefer_tainted_nodes,
        )

    # -- pods --------------------------------------------------------------------------

    def _place(self, info: PodInfo, node: str) -> None:
        ni = self._nodes.get(node)
        if ni is None:
            ni = self._nodes[node] = NodeInfo(node)
        ni.add_pod(info)
        self._count_affinity(info, 1)

    def _count_affinity(self, info: PodInfo, sign: int) -> None:
        if info.has_affinity:
            self._affinity_pods += sign
        if info.anti_affinity:
            self._anti_affinity_pods += sign

    def _unplace(self, key: str, node: str) -> None:
        ni = self._nodes.get(node)
        if ni is None:
            return
        removed = ni.remove_pod(key)
        if removed is not None:
            self._count_affinity(removed, -1)
        if ni.node is None and not ni.pods:
            del self._nodes[node]

    def assume(self, info: PodInfo, node: str) -> None:
        """Count the pod on node now; the bind is still to come."""
        if info.key in self._pods:
            raise ValueError(f"pod {info.key} is already in the scheduler cache")
        self._pods[info.key] = _PodState(info, node, assumed=True)
        self._place(info, node)

    def finish_binding(self, key: str) -> None:
        state = self._pods.get(key)
        if state is not None and state.assumed:
            state.binding_done = self._clock()

    def forget(self, key: str) -> None:
        """Undo assume (the bind failed)."""
        state = self._pods.get(key)
        if state is None or not state.assumed:
            return
        del self._pods[key]
        self._unplace(key, state.node)

    def is_assumed(self, key: str) -> bool:
        state = self._pods.get(key)
        return state is not None and state.assumed

    def assumed_node(self, key: str) -> str | None:
        state = self._pods.get(key)
        return state.node if state is not None and state.assumed else None

    def confirm(self, key: str, pod: Any) -> bool:
        """The informer shows an assumed pod bound where we assumed it: keep the
        PodInfo (its spec is what we scheduled) with the bound object. False
        when the pod is not assumed there (the caller re-reads it fully)."""
        state = self._pods.get(key)
        if state is None or not state.assumed or state.node != pod.spec.node_name:
            return False
        state.assumed = False
        state.binding_done = None
        state.info.pod = pod
        state.info.node_name = state.node
        return True

    def add_or_update_pod(self, info: PodInfo) -> None:
        """A bound pod as the informer shows it: confirms an assumption, or
        (re)places the pod where the apiserver says it is."""
        state = self._pods.get(info.key)
        if state is not None:
            self._unplace(info.key, state.node)
        self._pods[info.key] = _PodState(info, info.node_name, assumed=False)
        self._place(info, info.node_name)

    def remove_pod(self, key: str) -> PodInfo | None:
        state = self._pods.pop(key, None)
        if state is None:
            return None
        self._unplace(key, state.node)
        return state.info

    def has_pod(self, key: str) -> bool:
        return key in self._pods

    def cleanup_expired(self) -> list[str]:
        """Drop assumptions whose bind finished more than the TTL ago without
        the informer confirming them."""
        now = self._clock()
        expired = [
            key
            for key, s in self._pods.items()
            if s.assumed and s.binding_done is not None and now - s.binding_done > self._ttl
        ]
        for key in expired:
            log.warning("assumed pod %s expired: its binding never showed up", key)
            self.forget(key)
        return expired

    @property
    def pod_count(self) -> int:
        return len(self._pods)
