"""What a CronJob controller should do now, as pure functions: keep
`status.active` true to the Jobs that exist, decide whether a start time is
due and what the concurrency policy makes of it, and which finished Jobs
the history limits let go."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from orchestrator.api.cron import CronSchedule
from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.cronjob_schedule import (
    MAX_MISSED_START_TIMES,
    SCHEDULED_TIMESTAMP_ANNOTATION,
    earliest_start,
    job_name,
    missed_starts,
    next_start,
    scheduled_timestamp,
)
from orchestrator.controllers.job_conditions import (
    COMPLETE,
    FAILED,
    finished_type,
    format_time,
    parse_time,
)
from orchestrator.controllers.podtemplate import controller_ref

Event = tuple[str, str, str]  # (type, reason, message)
_NEVER = datetime.min.replace(tzinfo=UTC)


# -- status.active --------------------------------------------------------------------


@dataclass
class ActiveReconciliation:
    status: batch.CronJobStatus
    missing: list[str] = field(default_factory=list)  # active names with no Job in the cache
    events: list[Event] = field(default_factory=list)


def job_ref(job: Any) -> core.ObjectReference:
    return core.ObjectReference(
        kind="Job",
        api_version="batch/v1",
        namespace=job.metadata.namespace,
        name=job.metadata.name,
        uid=job.metadata.uid,
        resource_version=job.metadata.resource_version,
    )


def reconcile_active(
    status: Any, jobs: Sequence[Any], ignore_uids: Collection[str] = ()
) -> ActiveReconciliation:
    """Finished Jobs leave `active` (a Complete one moves lastSuccessfulTime
    on); unfinished Jobs of this CronJob missing from it are put back - a
    status write lost after the Job was created must not let Forbid start a
    second one. Jobs in ignore_uids (being replaced) are not put back."""
    out = batch.CronJobStatus()
    out.CopyFrom(status)
    result = ActiveReconciliation(out)
    by_uid = {j.metadata.uid: j for j in jobs}
    listed = {ref.uid for ref in status.active}
    kept: list[core.ObjectReference] = []
    for ref in status.active:
        job = by_uid.get(ref.uid)
        if job is None:
            kept.append(ref)
            result.missing.append(ref.name)
            continue
        outcome = finished_type(job)
        if outcome is None:
            kept.append(ref)
            continue
        result.events.append(
            ("Normal", "SawCompletedJob", f"Saw completed job: {ref.name}, status: {outcome}")
        )
        if outcome == COMPLETE:
            _advance_last_successful(out, job)
    for job in jobs:
        if job.metadata.uid in listed or job.metadata.uid in ignore_uids:
            continue
        if finished_type(job) is None and not job.metadata.deletion_timestamp:
            kept.append(job_ref(job))
    del out.active[:]
    out.active.extend(kept)
    return result


def _advance_last_successful(status: Any, job: Any) -> None:
    done = parse_time(job.status.completion_time)
    if done is None:
        return
    last = parse_time(status.last_successful_time)
    if last is None or done > last:
        status.last_successful_time = format_time(done)


# -- scheduling -----------------------------------------------------------------------


@dataclass
class SchedulePlan:
    run_at: datetime | None = None  # the start time to make a Job for
    replace: list[str] = field(default_factory=list)  # active Jobs to delete first
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until the next start time


def plan_schedule(
    cronjob: Any,
    schedule: CronSchedule,
    zone: tzinfo,
    active: Sequence[str],
    now: datetime,
) -> SchedulePlan:
    """Decide about the most recent start time due. `active` are the names
    of the Jobs still running (after reconcile_active)."""
    spec = cronjob.spec
    plan = SchedulePlan()
    if spec.HasField("suspend") and spec.suspend:
        return plan  # resuming is a spec change, which wakes the controller
    plan.requeue_after = (next_start(schedule, zone, now) - now).total_seconds()
    deadline = (
        spec.starting_deadline_seconds if spec.HasField("starting_deadline_seconds") else None
    )
    created = parse_time(cronjob.metadata.creation_timestamp) or now
    last = parse_time(cronjob.status.last_schedule_time)
    missed = missed_starts(schedule, zone, earliest_start(created, last, deadline, now), now)
    scheduled = missed.most_recent
    if scheduled is None:
        return plan
    if missed.too_many:
        plan.events.append(
            (
                "Warning",
                "TooManyMissedTimes",
                f"too many missed start times (more than {MAX_MISSED_START_TIMES}). Set or "
                "decrease .spec.startingDeadlineSeconds or check clock skew",
            )
        )
    if deadline is not None and (now - scheduled).total_seconds() > deadline:
        plan.events.append(
            (
                "Warning",
                "MissSchedule",
                f"Missed scheduled time to start a job: {scheduled_timestamp(scheduled, zone)}",
            )
        )
        return plan
    if job_name(cronjob.metadata.name, scheduled) in active:
        return plan  # already started; its status write was lost
    policy = spec.concurrency_policy or "Allow"
    if active and policy == "Forbid":
        plan.events.append(
            (
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency "
                "policy is Forbid",
            )
        )
        return plan
    if active and policy == "Replace":
        plan.replace = list(active)
    plan.run_at = scheduled
    return plan


def new_cron_job(cronjob: Any, scheduled: datetime, zone: tzinfo) -> batch.Job:
    """The Job for one start time, from the CronJob's jobTemplate."""
    template = cronjob.spec.job_template
    job = batch.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = job_name(cronjob.metadata.name, scheduled)
    job.metadata.namespace = cronjob.metadata.namespace
    job.metadata.labels.update(template.metadata.labels)
    job.metadata.annotations.update(template.metadata.annotations)
    job.metadata.annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = scheduled_timestamp(scheduled, zone)
    job.metadata.owner_references.append(controller_ref(cronjob))
    job.spec.CopyFrom(template.spec)
    return job


# -- history --------------------------------------------------------------------------


def history_to_delete(jobs: Sequence[Any], successful_limit: int, failed_limit: int) -> list[Any]:
    """Finished Jobs beyond the history limits, oldest first (by start time,
    never-started ones oldest, then by name), as Kubernetes trims them."""
    doomed: list[Any] = []
    for outcome, limit in ((COMPLETE, successful_limit), (FAILED, failed_limit)):
        finished = [j for j in jobs if finished_type(j) == outcome]
        finished.sort(
            key=lambda j: (
                j.status.start_time != "",
                parse_time(j.status.start_time) or _NEVER,
                j.metadata.name,
            )
        )
        doomed.extend(finished[: max(0, len(finished) - max(limit, 0))])
    return doomed
