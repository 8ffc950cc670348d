"""Pod garbage collection of orphans, as Kubernetes' pod GC (gcOrphaned): a
pod bound to a Node that no longer exists is force-deleted (grace 0).

Such a pod can never be confirmed stopped by its agent, and the apiserver
holds pods with a nodeName until it is, so without this it would stay
Terminating forever. A Node missing from the cache is given a quarantine
(40 s) and then looked up live before anything is deleted: a Node may be
re-registering, or the cache may lag behind a Node just created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import meta
from orchestrator.client.client import Client, ConflictError, NotFoundError
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

QUARANTINE_SECONDS = 40.0


def is_orphan(pod: Any, node_exists: Callable[[str], bool]) -> bool:
    """Bound to a node that does not exist (by the caller's view)."""
    return bool(pod.spec.node_name) and not node_exists(pod.spec.node_name)


class OrphanedPodCollector(Controller):
    name = "pod-gc"
    workers = 1

    def __init__(
        self,
        client: Client,
        *,
        quarantine: float = QUARANTINE_SECONDS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(client)
        self.quarantine = quarantine
        self.clock = clock or (lambda: datetime.now(UTC))
        self._pods_by_node: dict[str, set[str]] = {}

    def setup(self) -> None:
        self.nodes = self.informer("Node")
        self.pods = self.informer("Pod")
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)

    def _node_known(self, name: str) -> bool:
        return self.nodes.get(name) is not None

    def _on_node(self, type_: str, node: Any, _old: Any) -> None:
        if type_ != "DELETED":
            return
        for key in list(self._pods_by_node.get(node.metadata.name, ())):
            self.queue.add_after(key, self.quarantine)

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        key = cache_key(pod)
        if old is not None and old.spec.node_name != pod.spec.node_name:
            self._pods_by_node.get(old.spec.node_name, set()).discard(key)
        if type_ == "DELETED":
            self._pods_by_node.get(pod.spec.node_name, set()).discard(key)
            return
        if not pod.spec.node_name:
            return
        self._pods_by_node.setdefault(pod.spec.node_name, set()).add(key)
        if is_orphan(pod, self._node_known):
            self.queue.add_after(key, self.quarantine)

    async def sync(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not is_orphan(pod, self._node_known):
            return
        try:
            await self.client.get("Node", pod.spec.node_name)
            return  # the cache lags: the node is there
        except NotFoundError:
            pass
        m = meta(pod)
        log.info(
            "deleting pod %s/%s: its node %s no longer exists",
            m.namespace,
            m.name,
            pod.spec.node_name,
        )
        fresh = type(pod)()
        fresh.CopyFrom(pod)
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kept = [c for c in fresh.status.conditions if c.type != "DisruptionTarget"]
        del fresh.status.conditions[:]
        fresh.status.conditions.extend(kept)
        fresh.status.conditions.add(
            type="DisruptionTarget",
            status="True",
            reason="DeletionByPodGC",
            message="PodGC: node no longer exists",
            last_transition_time=now,
        )
        if fresh.status.phase not in ("Succeeded", "Failed"):
            fresh.status.phase = "Failed"  # as Kubernetes' pod GC: it will never run again
        try:
            await self.client.update_status(fresh)
        except (ConflictError, NotFoundError):
            pass  # informative only
        try:
            await self.client.delete(
                "Pod", m.name, m.namespace, grace_period=0, precondition_uid=m.uid
            )
        except NotFoundError:
            pass
