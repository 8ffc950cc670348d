"""The ReplicaSet controller: keep spec.replicas pods that match the selector.

As Kubernetes' replica_set.go: orphans that match are adopted and owned pods
that stopped matching are released; missing pods are created in slow-start
batches and surplus ones deleted in Kubernetes' preference order, at most
BURST_REPLICAS per sync; expectations keep a lagging cache from causing a
second round of creations; status (replicas, fullyLabeled, ready, available,
observedGeneration, ReplicaFailure) is written when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import copy_of, now_rfc3339
from orchestrator.client.client import (
    ApiError,
    Client,
    NotFoundError,
)
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers import replicaset_util as util
from orchestrator.controllers.base import Controller
from orchestrator.controllers.claims import adopt, classify, label_selector, release
from orchestrator.controllers.podtemplate import controller_of, pod_from_template

log = logging.getLogger(__name__)

COMPONENT = "replicaset-controller"


class ReplicaSetController(Controller):
    name = "replicaset"
    recorder: EventRecorder
    workers = 4

    def __init__(self, client: Client, *, recorder: EventRecorder | None = None) -> None:
        super().__init__(client)
        self.expectations = util.Expectations()
        self.backoff = util.Backoff()
        self.recorder = recorder or EventRecorder(client, "", component=COMPONENT)
        # namespace -> keys of its pods, so a sync looks only at its namespace.
        self._pods_by_ns: dict[str, set[str]] = {}

    def setup(self) -> None:
        self.replicasets = self.informer("ReplicaSet")
        self.pods = self.informer("Pod")
        self.replicasets.add_handler(self._on_replicaset)
        self.pods.add_handler(self._on_pod)

    # -- event handlers: only enqueue -------------------------------------------------

    def _on_replicaset(self, type_: str, rs: Any, old: Any) -> None:
        if type_ == "DELETED":
            self.expectations.forget(cache_key(rs))
        self.enqueue(rs)

    def _owner_key(self, pod: Any) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return None
        return f"{pod.metadata.namespace}/{ref.name}"

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        key = cache_key(pod)
        ns = pod.metadata.namespace
        if type_ == "DELETED":
            self._pods_by_ns.get(ns, set()).discard(key)
        else:
            self._pods_by_ns.setdefault(ns, set()).add(key)
        owner = self._owner_key(pod)
        if owner is not None:
            if type_ == "ADDED":
                self.expectations.creation_observed(owner)
            if type_ == "DELETED" or pod.metadata.deletion_timestamp:
                self.expectations.deletion_observed(owner, key)
            self.queue.add(owner)
        elif type_ != "DELETED":
            self._enqueue_matching(pod)
        if old is not None:
            old_owner = self._owner_key(old)
            if old_owner is not None and old_owner != owner:
                self.queue.add(old_owner)  # released or re-owned: the old one recounts
            if dict(old.metadata.labels) != dict(pod.metadata.labels) and owner is not None:
                self._enqueue_matching(pod)

    def _enqueue_matching(self, pod: Any) -> None:
        """A pod that may be an orphan to adopt: wake the ReplicaSets selecting it."""
        for rs in self.replicasets.list():
            if rs.metadata.namespace != pod.metadata.namespace:
                continue
            selector = label_selector(rs.spec.selector)
            if selector is not None and selector.matches(pod.metadata.labels):
                self.enqueue(rs)

    # -- sync --------------------------------------------------------------------------

    def _namespace_pods(self, namespace: str) -> list[Any]:
        pods = []
        for key in list(self._pods_by_ns.get(namespace, ())):
            pod = self.pods.get(key)
            if pod is not None:
                pods.append(pod)
        return pods

    async def sync(self, key: str) -> None:
        rs = self.replicasets.get(key)
        if rs is None:
            self.expectations.forget(key)
            self.backoff.reset(key)
            return
        needs_sync = self.expectations.satisfied(key)
        selector = label_selector(rs.spec.selector)
        # As Kubernetes: only active pods are claimed; finished or deleting pods
        # neither count toward replicas nor get adopted.
        candidates = [
            p for p in self._namespace_pods(rs.metadata.namespace) if util.is_pod_active(p)
        ]
        claims = classify(rs, selector, candidates)
        active = list(claims.owned)
        active.extend(await adopt(self.client, rs, claims.adopt))
        await release(self.client, rs, claims.release)

        failure: tuple[str, str] | None = None
        if needs_sync and not rs.metadata.deletion_timestamp:
            failure = await self._manage_replicas(key, rs, active)

        now = datetime.now(UTC)
        status = util.calculate_status(rs, active, now, failure, now_rfc3339())
        if status != rs.status:
            fresh = copy_of(rs)
            fresh.status.CopyFrom(status)
            try:
                await self.client.update_status(fresh)
            except NotFoundError:
                return
        if failure is not None:
            # Quota or an invalid template will not fix itself at once: retry
            # with growing delays rather than hammering the apiserver.
            self.queue.add_after(key, self.backoff.next(key))
            return
        self.backoff.reset(key)
        wait = util.next_availability_check(active, rs.spec.min_ready_seconds, now)
        if wait is not None:
            self.queue.add_after(key, wait)

    async def _manage_replicas(
        self, key: str, rs: Any, active: list[Any]
    ) -> tuple[str, str] | None:
        """Create or delete pods toward spec.replicas; the failure to report, if any."""
        diff = len(active) - rs.spec.replicas
        if diff < 0:
            return await self._create_pods(key, rs, min(-diff, util.BURST_REPLICAS))
        if diff > 0:
            victims = util.pods_to_delete(active, min(diff, util.BURST_REPLICAS))
            return await self._delete_pods(key, rs, victims)
        return None

    async def _create_pods(self, key: str, rs: Any, count: int) -> tuple[str, str] | None:
        self.expectations.expect_creations(key, count)
        attempted = 0
        failure: tuple[str, str] | None = None
        for batch in util.slow_start_batches(count):
            attempted += batch
            results = await asyncio.gather(
                *(self._create_one(rs) for _ in range(batch)), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            # A pod that was not created will never be observed.
            for _ in errors:
                self.expectations.creation_observed(key)
            if errors:
                err = errors[0]
                message = err.message if isinstance(err, ApiError) else str(err)
                failure = ("FailedCreate", message)
                self.recorder.record(rs, "Warning", "FailedCreate", f"Error creating: {message}")
                log.warning("replicaset %s: creating pods failed: %s", key, message)
                break
        # Batches never started after a failure will not be observed either.
        for _ in range(count - attempted):
            self.expectations.creation_observed(key)
        return failure

    async def _create_one(self, rs: Any) -> None:
        pod = pod_from_template(rs.spec.template, rs, generate_name=f"{rs.metadata.name}-")
        created = await self.client.create(pod)
        self.recorder.record(
            rs, "Normal", "SuccessfulCreate", f"Created pod: {created.metadata.name}"
        )

    async def _delete_pods(self, key: str, rs: Any, victims: list[Any]) -> tuple[str, str] | None:
        self.expectations.expect_deletions(key, [cache_key(p) for p in victims])
        results = await asyncio.gather(
            *(self._delete_one(rs, p) for p in victims), return_exceptions=True
        )
        failure: tuple[str, str] | None = None
        for pod, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                self.expectations.deletion_observed(key, cache_key(pod))
                if isinstance(result, NotFoundError):
                    continue
                message = result.message if isinstance(result, ApiError) else str(result)
                failure = ("FailedDelete", message)
                self.recorder.record(rs, "Warning", "FailedDelete", f"Error deleting: {message}")
        return failure

    async def _delete_one(self, rs: Any, pod: Any) -> None:
        m = pod.metadata
        await self.client.delete("Pod", m.name, m.namespace, precondition_uid=m.uid)
        self.recorder.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {m.name}")
