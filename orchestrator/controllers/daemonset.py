"""The DaemonSet controller: one pod on every eligible node.

Each sync reads the set, the nodes, the set's pods and ControllerRevisions
from the informer caches, makes sure a revision records the current template
(its hash labels the pods), asks daemon_plan what to create and delete, does
it through the API, and writes status. Node changes that can alter
eligibility (labels, taints, deletion) re-queue every DaemonSet; heartbeats
do not.

Pods are named per (node, revision), so a create repeated from a cache that
has not caught up fails with AlreadyExists instead of doubling a node's pod.
A pod that failed is replaced after a per-node back-off (1 s doubling to
5 min, reset once a pod runs), so a node that keeps rejecting the pod is not
hammered.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import copy_of
from orchestrator.client.client import AlreadyExistsError, Client, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.controllers import history
from orchestrator.controllers.base import Controller
from orchestrator.controllers.daemon_nodes import new_daemon_pod, node_fits
from orchestrator.controllers.daemon_plan import (
    DaemonCounts,
    PodDelete,
    UpdatePolicy,
    count_daemon_pods,
    plan_daemonset,
)
from orchestrator.controllers.podtemplate import controller_of
from orchestrator.controllers.stateful_pods import is_failed, revision_of

log = logging.getLogger(__name__)

KIND = "DaemonSet"
COMPONENT = "daemonset-controller"
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 300.0


def _placement_view(node: Any) -> tuple[Any, ...]:
    """What of a Node decides where daemons run."""
    return (
        dict(node.metadata.labels),
        [(t.key, t.value, t.effect) for t in node.spec.taints],
        bool(node.metadata.deletion_timestamp),
    )


class FailureBackoff:
    """Per (DaemonSet, node) delay before replacing a failed pod."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, float]] = {}  # delay, until

    def failed(self, ds_uid: str, node: str) -> float:
        delay, _ = self._entries.get((ds_uid, node), (0.0, 0.0))
        delay = min(max(delay * 2, BACKOFF_INITIAL), BACKOFF_MAX)
        self._entries[(ds_uid, node)] = (delay, self.clock() + delay)
        return delay

    def held_back(self, ds_uid: str) -> dict[str, float]:
        """node -> seconds left, for nodes still waiting."""
        now = self.clock()
        return {
            node: until - now
            for (uid, node), (_, until) in self._entries.items()
            if uid == ds_uid and until > now
        }

    def reset(self, ds_uid: str, node: str) -> None:
        self._entries.pop((ds_uid, node), None)

    def forget(self, ds_uid: str) -> None:
        for entry in [e for e in self._entries if e[0] == ds_uid]:
            del self._entries[entry]


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.events = EventRecorder(client, "", component=COMPONENT)
        self.backoff = FailureBackoff()

    def setup(self) -> None:
        self.sets = self.informer(KIND)
        self.pods = self.informer("Pod")
        self.nodes = self.informer("Node")
        self.revisions = self.informer("ControllerRevision")
        self.sets.add_handler(self._on_set)
        self.pods.add_handler(self._on_owned)
        self.revisions.add_handler(self._on_owned)
        self.nodes.add_handler(self._on_node)
        self.events.start()

    async def stop(self) -> None:
        await super().stop()
        await self.events.stop()

    # -- event routing -----------------------------------------------------------------

    def _on_set(self, type_: str, ds: Any, _old: Any) -> None:
        if type_ == "DELETED":
            self.backoff.forget(ds.metadata.uid)
        self.enqueue(ds)

    def _on_owned(self, _type: str, obj: Any, old: Any) -> None:
        for o in (obj, old):
            if o is None:
                continue
            ref = controller_of(o)
            if ref is not None and ref.kind == KIND:
                self.queue.add(f"{o.metadata.namespace}/{ref.name}")

    def _on_node(self, type_: str, node: Any, old: Any) -> None:
        if (
            type_ == "MODIFIED"
            and old is not None
            and _placement_view(node) == _placement_view(old)
        ):
            return
        for ds in self.sets.list():
            self.enqueue(ds)

    # -- sync --------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None or ds.metadata.deletion_timestamp:
            return
        ns, uid = ds.metadata.namespace, ds.metadata.uid
        pods_by_node: dict[str, list[Any]] = defaultdict(list)
        for pod in self.pods.list():
            ref = controller_of(pod)
            if pod.metadata.namespace == ns and ref is not None and ref.uid == uid:
                pods_by_node[pod.spec.node_name].append(pod)
        owned = history.owned_revisions(
            ds, (r for r in self.revisions.list() if r.metadata.namespace == ns)
        )
        collisions = int(ds.status.collision_count)
        revision, collisions = await history.ensure_revision(self.client, ds, owned, collisions)
        hash_ = revision.metadata.labels[history.REVISION_HASH_LABEL]
        owned = [r for r in owned if r.metadata.name != revision.metadata.name] + [revision]

        fits = node_fits(ds.spec.template, self.nodes.list())
        now = datetime.now(UTC)
        for node_name, pods in pods_by_node.items():
            if any(not is_failed(p) and p.status.phase == "Running" for p in pods):
                self.backoff.reset(uid, node_name)
        held = self.backoff.held_back(uid)
        policy = UpdatePolicy.of(ds, sum(1 for f in fits.values() if f.should_run))
        plan = plan_daemonset(fits, pods_by_node, hash_, policy, now, held)

        for delete in plan.deletes:
            await self._delete_pod(ds, delete)
        for node_name in plan.creates:
            await self._create_pod(ds, node_name, hash_)

        counts = count_daemon_pods(plan.fits, pods_by_node, hash_, policy.min_ready_seconds, now)
        await self._write_status(ds, counts, collisions)
        in_use = {revision.metadata.name}
        by_hash = {r.metadata.labels.get(history.REVISION_HASH_LABEL): r for r in owned}
        for pods in pods_by_node.values():
            for pod in pods:
                rev = by_hash.get(revision_of(pod))
                if rev is not None:
                    in_use.add(rev.metadata.name)
        await history.prune_revisions(self.client, ds, owned, in_use)

        wake = [plan.requeue_after] if plan.requeue_after is not None else []
        wake.extend(held.values())
        if wake:
            self.queue.add_after(key, min(wake) + 0.05)

    async def _create_pod(self, ds: Any, node_name: str, hash_: str) -> None:
        pod = new_daemon_pod(ds, node_name, hash_)
        try:
            await self.client.create(pod)
        except AlreadyExistsError:
            return  # created already (stale cache) or the old one is still going
        self.events.record(
            ds, "Normal", "SuccessfulCreate", f"Created pod: {pod.metadata.name} on {node_name}"
        )

    async def _delete_pod(self, ds: Any, delete: PodDelete) -> None:
        pod = delete.pod
        if delete.reason == "failed":
            delay = self.backoff.failed(ds.metadata.uid, pod.spec.node_name)
            self.events.record(
                ds,
                "Warning",
                "FailedDaemonPod",
                f"Found failed daemon pod {pod.metadata.namespace}/{pod.metadata.name} on node "
                f"{pod.spec.node_name}, will try to kill it and create a new one in {delay:.0f}s",
            )
        try:
            await self.client.delete(
                "Pod",
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period=0 if delete.force else None,
                precondition_uid=pod.metadata.uid,
            )
        except NotFoundError:
            return
        if not pod.metadata.deletion_timestamp:
            self.events.record(
                ds,
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {pod.metadata.name} ({delete.reason})",
            )

    async def _write_status(self, ds: Any, counts: DaemonCounts, collisions: int) -> None:
        fresh = copy_of(ds)
        st = fresh.status
        st.observed_generation = ds.metadata.generation
        st.desired_number_scheduled = counts.desired
        st.current_number_scheduled = counts.current
        st.number_misscheduled = counts.misscheduled
        st.number_ready = counts.ready
        st.number_available = counts.available
        st.number_unavailable = counts.unavailable
        st.updated_number_scheduled = counts.updated
        if collisions or ds.status.HasField("collision_count"):
            st.collision_count = collisions
        if fresh.status == ds.status:
            return
        try:
            await self.client.update_status(fresh)
        except NotFoundError:
            pass
