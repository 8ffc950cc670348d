"""The TTL-after-finished controller: delete a finished Job (Complete or
Failed) ttlSecondsAfterFinished after it finished, with background
propagation so its pods go too.

The decision (`ttl_remaining`) is a pure function of the Job and the time.
Before deleting, the Job is read live and decided on again, as Kubernetes'
controller does: the TTL may have been changed or the Job re-run under the
same name since the cache last saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.client.client import Client, ConflictError, NotFoundError
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller
from orchestrator.controllers.job_conditions import finish_time

log = logging.getLogger(__name__)

REQUEUE_SLACK = 0.05

Clock = Callable[[], datetime]


def expires_at(job: Any) -> datetime | None:
    """When a finished Job with a TTL may be deleted; None if never."""
    if not job.spec.HasField("ttl_seconds_after_finished") or job.metadata.deletion_timestamp:
        return None
    finished = finish_time(job)
    if finished is None:
        return None
    return finished + timedelta(seconds=job.spec.ttl_seconds_after_finished)


def ttl_remaining(job: Any, now: datetime) -> float | None:
    """Seconds until the Job expires (0 or less: delete it now); None when it
    has no TTL, has not finished, or is already being deleted."""
    at = expires_at(job)
    if at is None:
        return None
    return (at - now).total_seconds()


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished-controller"
    workers = 2

    def __init__(self, client: Client, *, clock: Clock | None = None) -> None:
        super().__init__(client)
        self.clock: Clock = clock or (lambda: datetime.now(UTC))

    def setup(self) -> None:
        self.jobs = self.informer("Job")
        self.jobs.add_handler(self._on_job)

    def _on_job(self, type_: str, job: Any, old: Any) -> None:
        if type_ != "DELETED" and expires_at(job) is not None:
            self.queue.add(cache_key(job))

    async def sync(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            return
        left = ttl_remaining(job, self.clock())
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left + REQUEUE_SLACK)
            return
        try:
            live = await self.client.get("Job", job.metadata.name, job.metadata.namespace)
        except NotFoundError:
            return
        left = ttl_remaining(live, self.clock())
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left + REQUEUE_SLACK)
            return
        m = live.metadata
        log.info("deleting job %s/%s: finished and its TTL has passed", m.namespace, m.name)
        try:
            await self.client.delete(
                "Job", m.name, m.namespace, propagation="Background", precondition_uid=m.uid
            )
        except (NotFoundError, ConflictError):
            pass  # gone already, or replaced by a new Job of the same name
