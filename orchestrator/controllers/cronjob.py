"""The CronJob controller (batch/v1): make a Job at each start time of a
CronJob's schedule, as Kubernetes' cronjob controller (v2) does.

Each sync: reconcile `status.active` with the Jobs that exist, decide on the
most recent start time due (cronjob_plan.plan_schedule), replace or wait as
the concurrency policy says, create the Job, write status, trim the
finished Jobs beyond the history limits, and requeue for exactly the next
start time (WorkQueue.add_after). Time comes from an injectable clock, so
tests can move it.

Job names carry the start time (`<cronjob>-<minutes since epoch>`), so a sync
retried after a lost status write finds the Job it made rather than making
a second one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.cron import CronError, parse_schedule
from orchestrator.api.meta import copy_of
from orchestrator.client.client import AlreadyExistsError, Client, ConflictError, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller
from orchestrator.controllers.cronjob_plan import (
    history_to_delete,
    job_ref,
    new_cron_job,
    plan_schedule,
    reconcile_active,
)
from orchestrator.controllers.cronjob_schedule import ZoneError, resolve_zone
from orchestrator.controllers.job_conditions import format_time
from orchestrator.controllers.podtemplate import controller_of, is_controlled_by

log = logging.getLogger(__name__)

COMPONENT = "cronjob-controller"
# Wake just after a start time, never just before it.
REQUEUE_SLACK = 0.1

Clock = Callable[[], datetime]


def _typed(cronjob: Any) -> Any:
    """The CronJob with apiVersion and kind set: ownerReferences name them."""
    if cronjob.api_version and cronjob.kind:
        return cronjob
    typed = copy_of(cronjob)
    typed.api_version = typed.api_version or "batch/v1"
    typed.kind = typed.kind or "CronJob"
    return typed


def cronjob_key_of(job: Any) -> str | None:
    ref = controller_of(job)
    if ref is None or ref.kind != "CronJob":
        return None
    return f"{job.metadata.namespace}/{ref.name}"


class CronJobController(Controller):
    name = "cronjob-controller"
    recorder: EventRecorder
    workers = 2

    def __init__(self, client: Client, *, clock: Clock | None = None) -> None:
        super().__init__(client)
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.recorder = EventRecorder(client, "", component=COMPONENT)
        self._jobs_of: dict[str, set[str]] = {}
        # Jobs deleted to make way (Replace) that the cache may still show.
        self._replaced: set[str] = set()

    def setup(self) -> None:
        self.cronjobs = self.informer("CronJob")
        self.cronjobs.add_handler(lambda _t, obj, _old: self.enqueue(obj))
        self.jobs = self.informer("Job")
        self.jobs.add_handler(self._on_job)

    def _on_job(self, type_: str, job: Any, old: Any) -> None:
        key = cronjob_key_of(job)
        if key is None:
            return
        jobs = self._jobs_of.setdefault(key, set())
        if type_ == "DELETED":
            jobs.discard(cache_key(job))
            self._replaced.discard(job.metadata.uid)
            if not jobs:
                del self._jobs_of[key]
        else:
            jobs.add(cache_key(job))
        self.queue.add(key)

    # -- sync --------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.cronjobs.get(key)
        if cached is None:
            return
        cronjob = _typed(cached)
        jobs = [
            j
            for k in list(self._jobs_of.get(key, ()))
            if (j := self.jobs.get(k)) is not None and is_controlled_by(j, cronjob)
        ]
        recon = reconcile_active(cronjob.status, jobs, self._replaced)
        status = recon.status
        events = list(recon.events)
        for name in recon.missing:
            if await self._gone(cronjob.metadata.namespace, name):
                kept = [ref for ref in status.active if ref.name != name]
                del status.active[:]
                status.active.extend(kept)
                events.append(("Normal", "MissingJob", f"Active job went missing: {name}"))

        requeue: float | None = None
        if not cronjob.metadata.deletion_timestamp:
            requeue = await self._schedule(cronjob, status, events)
        await self._write_status(cronjob, status)
        for type_, reason, message in events:
            self.recorder.record(cronjob, type_, reason, message)
        await self._trim_history(cronjob, jobs)
        if requeue is not None:
            self.queue.add_after(key, max(requeue, 0.0) + REQUEUE_SLACK)

    async def _schedule(self, cronjob: Any, status: Any, events: list[Any]) -> float | None:
        """Start a Job if one is due; returns seconds until the next start time."""
        spec = cronjob.spec
        try:
            zone = resolve_zone(spec.time_zone if spec.HasField("time_zone") else None)
            schedule = parse_schedule(spec.schedule)
        except ZoneError as exc:
            events.append(("Warning", "UnknownTimeZone", str(exc)))
            return None
        except CronError as exc:
            events.append(
                ("Warning", "UnparseableSchedule", f'spec.schedule "{spec.schedule}": {exc}')
            )
            return None
        now = self.clock()
        active = [ref.name for ref in status.active]
        plan = plan_schedule(cronjob, schedule, zone, active, now)
        events.extend(plan.events)
        for name in plan.replace:
            await self._delete_job(cronjob, name, status, events)
        if plan.run_at is not None:
            job = await self._create_job(cronjob, new_cron_job(cronjob, plan.run_at, zone), events)
            if job is not None:
                if all(ref.uid != job.metadata.uid for ref in status.active):
                    status.active.append(job_ref(job))
                status.last_schedule_time = format_time(plan.run_at)
        return plan.requeue_after

    # -- effects -----------------------------------------------------------------------

    async def _gone(self, namespace: str, name: str) -> bool:
        """Asked live: the Job cache may simply not have caught up."""
        try:
            await self.client.get("Job", name, namespace)
        except NotFoundError:
            return True
        return False

    async def _create_job(self, cronjob: Any, job: Any, events: list[Any]) -> Any | None:
        m = job.metadata
        try:
            created = await self.client.create(job)
        except AlreadyExistsError:
            existing = await self.client.get("Job", m.name, m.namespace)
            if is_controlled_by(existing, cronjob):
                return existing  # made by an earlier try whose status write was lost
            events.append(
                (
                    "Warning",
                    "FailedCreate",
                    f"Error creating job: job {m.namespace}/{m.name} exists and is not "
                    "controlled by this CronJob",
                )
            )
            return None
        events.append(("Normal", "SuccessfulCreate", f"Created job {m.name}"))
        return created

    async def _delete_job(self, cronjob: Any, name: str, status: Any, events: list[Any]) -> None:
        ns = cronjob.metadata.namespace
        uid = next((ref.uid for ref in status.active if ref.name == name), "")
        try:
            await self.client.delete(
                "Job", name, ns, propagation="Background", precondition_uid=uid
            )
        except (NotFoundError, ConflictError):
            pass  # gone already, or the name now belongs to another Job
        else:
            events.append(("Normal", "SuccessfulDelete", f"Deleted job {name}"))
        if uid:
            self._replaced.add(uid)
        kept = [ref for ref in status.active if ref.name != name]
        del status.active[:]
        status.active.extend(kept)

    async def _write_status(self, cronjob: Any, status: Any) -> None:
        if status == cronjob.status:
            return
        fresh = copy_of(cronjob)
        fresh.status.CopyFrom(status)
        try:
            await self.client.update_status(fresh)
        except NotFoundError:
            pass

    async def _trim_history(self, cronjob: Any, jobs: list[Any]) -> None:
        spec = cronjob.spec
        successful = (
            spec.successful_jobs_history_limit
            if spec.HasField("successful_jobs_history_limit")
            else 3
        )
        failed = spec.failed_jobs_history_limit if spec.HasField("failed_jobs_history_limit") else 1
        for job in history_to_delete(jobs, successful, failed):
            m = job.metadata
            try:
                await self.client.delete(
                    "Job", m.name, m.namespace, propagation="Background", precondition_uid=m.uid
                )
            except (NotFoundError, ConflictError):
                continue
            self.recorder.record(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {m.name}")
