"""The Job controller (batch/v1): run pods until enough succeed, or give up.

Decisions are job_plan.plan_job's; this module feeds it from the caches and
carries out what it says, in the order that keeps counts exact:

- a status that records pod outcomes (or the Job's end) is written before
  any pod loses its tracking finalizer or is deleted;
- pods the controller deletes lose the finalizer first, so they are not
  mistaken for failures;
- pods created but not yet seen in the cache, and pods deleted but still
  shown there, are remembered ("expectations", as in client-go) so a
  lagging cache neither makes duplicates nor counts the dead as active.

Pods belong to a Job by their controlling ownerReference (name and uid).
Orphaned pods matching a Job's selector are not adopted. When a Job is gone
or being deleted its pods' tracking finalizers are removed, so garbage
collection (or foreground deletion) can take them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from orchestrator.api.meta import copy_of
from orchestrator.client.client import ApiError, Client, ConflictError, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller
from orchestrator.controllers.job_backoff import BACKOFF_BASE, BACKOFF_MAX
from orchestrator.controllers.job_plan import TRACKING_FINALIZER, JobPlan, is_tracked, plan_job
from orchestrator.controllers.job_pods import new_job_pod, with_type
from orchestrator.controllers.podtemplate import controller_of

log = logging.getLogger(__name__)

COMPONENT = "job-controller"
# An expectation the watch never confirmed is dropped after this long, as
# client-go's ControllerExpectations time out: better a late duplicate than
# a Job stuck forever on a pod that will never appear.
EXPECTATION_TTL = 300.0
# Wake a little after a deadline, not a little before it.
REQUEUE_SLACK = 0.05

Clock = Callable[[], datetime]


class Expectations:
    """Per Job, pods the cache does not agree with yet: created but not yet
    seen, or deleted but still shown. Entries the watch never confirms
    expire after EXPECTATION_TTL."""

    def __init__(self, ttl: float = EXPECTATION_TTL) -> None:
        self.ttl = ttl
        self._by_job: dict[str, dict[str, tuple[int | None, float]]] = {}

    def expect(self, key: str, pod_name: str, index: int | None = None) -> None:
        self._by_job.setdefault(key, {})[pod_name] = (index, time.monotonic())

    def observed(self, key: str, pod_name: str) -> None:
        entries = self._by_job.get(key)
        if entries is not None:
            entries.pop(pod_name, None)
            if not entries:
                del self._by_job[key]

    def forget(self, key: str) -> None:
        self._by_job.pop(key, None)

    def pending(self, key: str) -> dict[str, int | None]:
        """Pod name -> completion index of the live expectations for key."""
        entries = self._by_job.get(key)
        if not entries:
            return {}
        cutoff = time.monotonic() - self.ttl
        for name, (_, stamp) in list(entries.items()):
            if stamp < cutoff:
                log.warning("job %s: pod %s never showed as expected; forgetting it", key, name)
                del entries[name]
        return {name: index for name, (index, _) in entries.items()}


def job_key_of(pod: Any) -> str | None:
    """The cache key of the Job controlling pod, or None."""
    ref = controller_of(pod)
    if ref is None or ref.kind != "Job":
        return None
    return f"{pod.metadata.namespace}/{ref.name}"


class JobController(Controller):
    name = "job-controller"
    recorder: EventRecorder
    workers = 4

    def __init__(
        self,
        client: Client,
        *,
        clock: Clock | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        super().__init__(client)
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.recorder = EventRecorder(client, "", component=COMPONENT)
        self._pods_of: dict[str, set[str]] = {}
        self._creating = Expectations()
        self._deleting = Expectations()

    # -- wiring ------------------------------------------------------------------------

    def setup(self) -> None:
        self.jobs = self.informer("Job")
        self.jobs.add_handler(self._on_job)
        self.pods = self.informer("Pod")
        self.pods.add_handler(self._on_pod)

    def _on_job(self, type_: str, job: Any, old: Any) -> None:
        key = cache_key(job)
        if type_ == "DELETED":
            self._creating.forget(key)
            self._deleting.forget(key)
        self.queue.add(key)

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        pod_key = cache_key(pod)
        key = job_key_of(pod)
        before = job_key_of(old) if old is not None else None
        if before is not None and before != key:
            self._forget_pod(before, pod_key)
            self.queue.add(before)
        if key is None:
            return
        name = pod.metadata.name
        if type_ == "DELETED":
            self._forget_pod(key, pod_key)
            self._deleting.observed(key, name)
        else:
            self._pods_of.setdefault(key, set()).add(pod_key)
            self._creating.observed(key, name)
            if pod.metadata.deletion_timestamp:
                self._deleting.observed(key, name)
        self.queue.add(key)

    def _forget_pod(self, key: str, pod_key: str) -> None:
        keys = self._pods_of.get(key)
        if keys is not None:
            keys.discard(pod_key)
            if not keys:
                del self._pods_of[key]

    # -- sync --------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        job = self.jobs.get(key)
        pods = [p for k in list(self._pods_of.get(key, ())) if (p := self.pods.get(k)) is not None]
        if job is None or job.metadata.deletion_timestamp:
            # Nobody will count these pods any more; a finalizer left on them
            # would keep them (and a foreground deletion of the Job) forever.
            for pod in pods:
                await self._untrack(pod)
            if job is None:
                self._creating.forget(key)
                self._deleting.forget(key)
            return
        uid = job.metadata.uid
        own: list[Any] = []
        for pod in pods:
            ref = controller_of(pod)
            if ref is not None and ref.uid == uid:
                own.append(pod)
            else:
                await self._untrack(pod)  # left by an earlier Job of the same name
        deleting = self._deleting.pending(key)
        visible = [p for p in own if p.metadata.name not in deleting]
        plan = plan_job(
            job,
            visible,
            self.clock(),
            pending=list(self._creating.pending(key).values()),
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
        )
        await self._carry_out(key, with_type(job), plan)

    async def _carry_out(self, key: str, job: Any, plan: JobPlan) -> None:
        if plan.status_first and not await self._write_status(job, plan.status):
            return
        for pod in plan.untrack:
            await self._untrack(pod)
        for pod in plan.delete:
            await self._delete_pod(key, job, pod)
        failure: ApiError | None = None
        for index in plan.create:
            try:
                await self._create_pod(key, job, index)
            except ApiError as exc:
                failure = exc
                plan.status.active -= 1
                self.recorder.record(job, "Warning", "FailedCreate", f"Error creating: {exc}")
        if not plan.status_first:
            await self._write_status(job, plan.status)
        for type_, reason, message in plan.events:
            self.recorder.record(job, type_, reason, message)
        if plan.requeue_after is not None:
            self.queue.add_after(key, max(plan.requeue_after, 0.0) + REQUEUE_SLACK)
        if failure is not None:
            raise failure

    # -- effects -----------------------------------------------------------------------

    async def _write_status(self, job: Any, status: Any) -> bool:
        """False if the Job is gone."""
        if status == job.status:
            return True
        fresh = copy_of(job)
        fresh.status.CopyFrom(status)
        try:
            await self.client.update_status(fresh)
        except NotFoundError:
            return False
        return True

    async def _untrack(self, pod: Any) -> None:
        """Remove the tracking finalizer, re-reading once if the cache was stale."""
        for _attempt in range(2):
            if not is_tracked(pod):
                return
            fresh = copy_of(pod)
            kept = [f for f in fresh.metadata.finalizers if f != TRACKING_FINALIZER]
            del fresh.metadata.finalizers[:]
            fresh.metadata.finalizers.extend(kept)
            try:
                await self.client.update(fresh)
                return
            except NotFoundError:
                return
            except ConflictError:
                try:
                    pod = await self.client.get("Pod", pod.metadata.name, pod.metadata.namespace)
                except NotFoundError:
                    return
        raise ConflictError(
            grpc.StatusCode.ABORTED,
            f"pod {pod.metadata.namespace}/{pod.metadata.name}: "
            "tracking finalizer not removed after repeated conflicts",
        )

    async def _delete_pod(self, key: str, job: Any, pod: Any) -> None:
        await self._untrack(pod)
        m = pod.metadata
        try:
            await self.client.delete("Pod", m.name, m.namespace, precondition_uid=m.uid)
        except (NotFoundError, ConflictError):
            return  # already gone, or a different pod now has the name
        if self.pods.get(cache_key(pod)) is not None:
            self._deleting.expect(key, m.name)
        self.recorder.record(job, "Normal", "SuccessfulDelete", f"Deleted pod: {m.name}")

    async def _create_pod(self, key: str, job: Any, index: int | None) -> None:
        created = await self.client.create(new_job_pod(job, index))
        m = created.metadata
        # The watch may have shown the pod before create returned.
        if self.pods.get(f"{m.namespace}/{m.name}") is None:
            self._creating.expect(key, m.name, index)
        self.recorder.record(job, "Normal", "SuccessfulCreate", f"Created pod: {m.name}")
