"""The StatefulSet controller: pods with stable names, hostnames and claims.

Each sync reads the set, its pods, claims and ControllerRevisions from the
informer caches, makes sure a revision records the current template, asks
stateful_plan what to do next, does it through the API, and writes status.
Everything it needs after a restart is in those objects: the revision a pod
runs is its `controller-revision-hash` label, the current revision is in
status.

Claims are created before the pod that mounts them and never deleted with it
(the default `Retain` retention): a pod recreated under the same name finds
its data. With `whenDeleted: Delete` the claims carry an ownerReference to the
set and the garbage collector removes them with it; with `whenScaled: Delete`
a condemned pod's claims get one to the pod just before it is deleted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import copy_of
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.api.selectors import SelectorError
from orchestrator.client.client import AlreadyExistsError, Client, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers import history
from orchestrator.controllers.base import Controller
from orchestrator.controllers.podtemplate import controller_of, controller_ref
from orchestrator.controllers.stateful_plan import (
    SetShape,
    count_pods,
    plan_statefulset,
    rollout_complete,
)
from orchestrator.controllers.stateful_pods import (
    claim_name,
    new_claims,
    new_pod,
    ordinal_of,
    revision_of,
    selector_of,
)

log = logging.getLogger(__name__)

KIND = "StatefulSet"
COMPONENT = "statefulset-controller"
# A claim still being deleted: look again after this long.
CLAIM_RETRY_SECONDS = 1.0


class StatefulSetController(Controller):
    name = "statefulset"
    workers = 2

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.events = EventRecorder(client, "", component=COMPONENT)

    def setup(self) -> None:
        self.sets = self.informer(KIND)
        self.pods = self.informer("Pod")
        self.revisions = self.informer("ControllerRevision")
        self.claims = self.informer("PersistentVolumeClaim")
        self.sets.add_handler(lambda _t, obj, _o: self.enqueue(obj))
        self.pods.add_handler(self._on_pod)
        self.revisions.add_handler(self._on_owned)
        self.events.start()

    async def stop(self) -> None:
        await super().stop()
        await self.events.stop()

    # -- event routing -----------------------------------------------------------------

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        self._on_owned(type_, pod, old)
        if controller_of(pod) is None and type_ != "DELETED":
            # An orphan with a set's name and labels may be adopted.
            for sts in self.sets.list():
                if sts.metadata.namespace == pod.metadata.namespace and self._adoptable(sts, pod):
                    self.enqueue(sts)

    def _on_owned(self, _type: str, obj: Any, old: Any) -> None:
        for o in (obj, old):
            if o is None:
                continue
            ref = controller_of(o)
            if ref is not None and ref.kind == KIND:
                self.queue.add(f"{o.metadata.namespace}/{ref.name}")

    def _adoptable(self, sts: Any, pod: Any) -> bool:
        if (
            sts.metadata.deletion_timestamp
            or ordinal_of(sts.metadata.name, pod.metadata.name) is None
        ):
            return False
        try:
            return selector_of(sts.spec.selector).matches(pod.metadata.labels)
        except SelectorError:
            return False

    # -- sync --------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None or sts.metadata.deletion_timestamp:
            return  # the garbage collector takes the pods with it
        ns = sts.metadata.namespace
        pods = await self._claim_pods(sts)
        owned = history.owned_revisions(
            sts, (r for r in self.revisions.list() if r.metadata.namespace == ns)
        )
        collisions = int(sts.status.collision_count)
        update_rev, collisions = await history.ensure_revision(self.client, sts, owned, collisions)
        if all(r.metadata.name != update_rev.metadata.name for r in owned):
            owned.append(update_rev)
        else:
            owned = [
                update_rev if r.metadata.name == update_rev.metadata.name else r for r in owned
            ]
        by_name = {r.metadata.name: r for r in owned}
        update = update_rev.metadata.name
        current = by_name.get(sts.status.current_revision, update_rev).metadata.name

        shape = SetShape.of(sts)
        now = datetime.now(UTC)
        plan = plan_statefulset(shape, pods, current, update, now)
        if plan.waiting:
            log.debug("statefulset %s: %s", key, plan.waiting)
        retry_after = plan.requeue_after
        for delete in plan.deletes:
            ordinal = ordinal_of(sts.metadata.name, delete.name)
            pod = pods.get(ordinal) if ordinal is not None else None
            if pod is not None:
                await self._delete_pod(sts, pod, delete.reason)
        for create in plan.creates:
            template = (
                sts.spec.template
                if create.revision == update
                else history.template_of(by_name[create.revision])
            )
            if not await self._ensure_claims(sts, create.ordinal):
                retry_after = min(retry_after or CLAIM_RETRY_SECONDS, CLAIM_RETRY_SECONDS)
                continue
            await self._create_pod(sts, new_pod(sts, template, create.ordinal, create.revision))

        counts = count_pods(pods, current, update, shape.min_ready_seconds, now)
        if rollout_complete(shape, counts):
            current = update
            counts = count_pods(pods, current, update, shape.min_ready_seconds, now)
        await self._write_status(sts, counts, current, update, collisions)
        await history.prune_revisions(
            self.client, sts, owned, {current, update, *(revision_of(p) for p in pods.values())}
        )
        if retry_after is not None:
            self.queue.add_after(key, retry_after + 0.05)

    async def _claim_pods(self, sts: Any) -> dict[int, Any]:
        """This set's pods by ordinal, adopting orphans that carry its name and
        labels (left by an orphaning delete of an earlier set of that name)."""
        ns, set_name = sts.metadata.namespace, sts.metadata.name
        found: dict[int, Any] = {}
        for pod in self.pods.list():
            if pod.metadata.namespace != ns:
                continue
            ordinal = ordinal_of(set_name, pod.metadata.name)
            ref = controller_of(pod)
            if ref is not None:
                if ref.uid == sts.metadata.uid and ordinal is not None:
                    found[ordinal] = pod
                continue
            if ordinal is None or not self._adoptable(sts, pod):
                continue
            adopted = copy_of(pod)
            adopted.metadata.owner_references.append(controller_ref(sts))
            try:
                found[ordinal] = await self.client.update(adopted)
                log.info("statefulset %s/%s adopted pod %s", ns, set_name, pod.metadata.name)
            except NotFoundError:
                pass
        return found

    async def _ensure_claims(self, sts: Any, ordinal: int) -> bool:
        """Create ordinal's missing claims; False while one is still being deleted
        (a pod must not start on a claim about to vanish)."""
        ready = True
        for pvc in new_claims(sts, ordinal):
            existing = self.claims.get(cache_key(pvc))
            if existing is not None:
                if existing.metadata.deletion_timestamp:
                    ready = False
                continue
            try:
                await self.client.create(pvc)
                self.events.record(
                    sts,
                    "Normal",
                    "SuccessfulCreate",
                    f"create Claim {pvc.metadata.name} Pod {sts.metadata.name}-{ordinal} "
                    f"in StatefulSet {sts.metadata.name} success",
                )
            except AlreadyExistsError:
                pass
        return ready

    async def _create_pod(self, sts: Any, pod: core.Pod) -> None:
        try:
            await self.client.create(pod)
        except AlreadyExistsError:
            return  # the old object is still there; its deletion event brings us back
        self.events.record(
            sts,
            "Normal",
            "SuccessfulCreate",
            f"create Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful",
        )

    async def _delete_pod(self, sts: Any, pod: Any, reason: str) -> None:
        if reason == "scale-down":
            await self._release_claims_to(sts, pod)
        try:
            await self.client.delete(
                "Pod", pod.metadata.name, pod.metadata.namespace, precondition_uid=pod.metadata.uid
            )
        except NotFoundError:
            return
        why = {"failed": f" (it {pod.status.phase.lower()})", "update": " (rolling update)"}
        self.events.record(
            sts,
            "Normal",
            "SuccessfulDelete",
            f"delete Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful"
            + why.get(reason, ""),
        )

    async def _release_claims_to(self, sts: Any, pod: Any) -> None:
        """whenScaled: Delete: hand the condemned pod's claims to it, so they go
        when it goes."""
        if sts.spec.persistent_volume_claim_retention_policy.when_scaled != "Delete":
            return
        ordinal = ordinal_of(sts.metadata.name, pod.metadata.name)
        if ordinal is None:
            return
        for template in sts.spec.volume_claim_templates:
            name = claim_name(template.metadata.name, sts.metadata.name, ordinal)
            pvc = self.claims.get(f"{sts.metadata.namespace}/{name}")
            if pvc is None or any(r.uid == pod.metadata.uid for r in pvc.metadata.owner_references):
                continue
            owned = copy_of(pvc)
            ref = controller_ref(pod)
            ref.controller = False
            owned.metadata.owner_references.append(ref)
            try:
                await self.client.update(owned)
            except NotFoundError:
                pass

    async def _write_status(
        self, sts: Any, counts: Any, current: str, update: str, collisions: int
    ) -> None:
        fresh = copy_of(sts)
        st = fresh.status
        st.observed_generation = sts.metadata.generation
        st.replicas = counts.replicas
        st.ready_replicas = counts.ready
        st.available_replicas = counts.available
        st.current_replicas = counts.current
        st.updated_replicas = counts.updated
        st.current_revision = current
        st.update_revision = update
        if collisions or sts.status.HasField("collision_count"):
            st.collision_count = collisions
        if fresh.status == sts.status:
            return
        try:
            await self.client.update_status(fresh)
        except NotFoundError:
            pass
