"""What a Job controller should do now: a pure function of the Job, its pods,
the pods it created but has not seen yet, and the time.

Pod outcomes are tracked as Kubernetes tracks them (batch.kubernetes.io/
job-tracking), so counts survive pods being deleted:

1. Every pod is created with the tracking finalizer.
2. A pod that finished (Succeeded, Failed, or deleted before succeeding)
   while still holding the finalizer has its uid written into
   `status.uncountedTerminatedPods` (and, for an Indexed Job, its index into
   `completedIndexes`) - this status write must land before step 3.
3. Then its finalizer is removed.
4. A uid in the uncounted lists whose pod is gone or no longer holds the
   finalizer is moved into `succeeded` / `failed`.

A pod is thus counted exactly once: step 2 skips uids already listed, and
step 4 only moves a uid once the cache shows the finalizer gone, after which
the (forward-only) cache never shows it with the finalizer again. Pods the
controller itself removes (surplus, suspension, bad index) lose the
finalizer before they are deleted, so they are never counted as failures;
on a failed Job, the active pods it kills count as failed, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.controllers.job_backoff import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    backoff_record,
    backoff_remaining,
)
from orchestrator.controllers.job_conditions import (
    COMPLETE,
    FAILED,
    SUSPENDED,
    find_condition,
    finished_type,
    format_time,
    parse_time,
    set_condition,
)
from orchestrator.controllers.job_indexes import (
    format_indexes,
    missing_indexes,
    parse_indexes,
    pod_index,
)

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
# More pods than this in one sync would be a burst the apiserver need not take.
MAX_CREATES_PER_SYNC = 500

Event = tuple[str, str, str]  # (type, reason, message)


@dataclass
class JobPlan:
    """The new status and the pod actions that go with it.

    When `status_first` is set the status must be written before any pod
    is touched: it records outcomes (or the Job's end) that the pod actions
    would otherwise erase."""

    status: batch.JobStatus
    create: list[int | None] = field(default_factory=list)  # completion index or None
    delete: list[Any] = field(default_factory=list)  # pods: drop finalizer, then delete
    untrack: list[Any] = field(default_factory=list)  # pods: drop finalizer
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    status_first: bool = False


# -- pod predicates -------------------------------------------------------------------


def is_terminal(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: Any) -> bool:
    return not is_terminal(pod) and not pod.metadata.deletion_timestamp


def is_tracked(pod: Any) -> bool:
    return TRACKING_FINALIZER in pod.metadata.finalizers


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def counts_as_failed(pod: Any) -> bool:
    """Failed, or deleted before it could succeed: either way the work it was
    doing is lost (podReplacementPolicy TerminatingOrFailed)."""
    if pod.status.phase == "Failed":
        return True
    return bool(pod.metadata.deletion_timestamp) and pod.status.phase != "Succeeded"


def restart_count(pod: Any) -> int:
    return sum(
        cs.restart_count
        for cs in (*pod.status.init_container_statuses, *pod.status.container_statuses)
    )


def deletion_candidates(pods: Sequence[Any]) -> list[Any]:
    """Pods ordered cheapest to lose first: unscheduled, not yet running, not
    ready, and among equals the newest (it has done the least work)."""
    ordered = sorted(pods, key=lambda p: p.metadata.creation_timestamp, reverse=True)
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}
    ordered.sort(
        key=lambda p: (
            1 if p.spec.node_name else 0,
            phase_rank.get(p.status.phase, 0),
            1 if is_ready(p) else 0,
        )
    )
    return ordered


# -- the plan -------------------------------------------------------------------------


def plan_job(
    job: Any,
    pods: Sequence[Any],
    now: datetime,
    *,
    pending: Sequence[int | None] = (),
    backoff_base: float = BACKOFF_BASE,
    backoff_max: float = BACKOFF_MAX,
) -> JobPlan:
    """Decide for one Job. `pods` are the pods it controls (as the cache shows
    them, minus those the controller is already deleting); `pending` the
    indexes (None when NonIndexed) of pods created but not yet in the cache."""
    status = batch.JobStatus()
    status.CopyFrom(job.status)
    plan = JobPlan(status)

    if finished_type(job) is not None:
        # Nothing more to count: let every pod go, and stop any still running
        # (a Failed Job whose pods outlived the status write that ended it).
        plan.delete = [p for p in pods if is_active(p)]
        plan.untrack = [p for p in pods if is_tracked(p) and not is_active(p)]
        return plan

    spec = job.spec
    indexed = spec.completion_mode == "Indexed"
    completions = spec.completions if spec.HasField("completions") else None
    limit = completions if indexed else None
    done = parse_indexes(status.completed_indexes, limit) if indexed and limit else set()
    uncounted = status.uncounted_terminated_pods
    listed = set(uncounted.succeeded) | set(uncounted.failed)

    # Steps 2-3: record newly finished pods before their finalizers go.
    new_succeeded = [
        p
        for p in pods
        if is_tracked(p) and p.metadata.uid not in listed and p.status.phase == "Succeeded"
    ]
    new_failed = [
        p for p in pods if is_tracked(p) and p.metadata.uid not in listed and counts_as_failed(p)
    ]
    if new_succeeded or new_failed:
        uncounted.succeeded.extend(p.metadata.uid for p in new_succeeded)
        uncounted.failed.extend(p.metadata.uid for p in new_failed)
        if indexed and completions is not None:
            for p in new_succeeded:
                index = pod_index(p)
                if index is not None and index < completions:
                    done.add(index)
            status.completed_indexes = format_indexes(done)
        recorded = listed | {p.metadata.uid for p in (*new_succeeded, *new_failed)}
        plan.untrack = [p for p in pods if is_tracked(p) and p.metadata.uid in recorded]
        plan.status_first = True
        return plan

    # Step 4: move recorded outcomes whose finalizer is gone into the counts.
    by_uid = {p.metadata.uid: p for p in pods}

    def still_held(uid: str) -> bool:
        pod = by_uid.get(uid)
        return pod is not None and is_tracked(pod)

    held_succeeded = [u for u in uncounted.succeeded if still_held(u)]
    held_failed = [u for u in uncounted.failed if still_held(u)]
    status.succeeded += len(uncounted.succeeded) - len(held_succeeded)
    status.failed += len(uncounted.failed) - len(held_failed)
    del uncounted.succeeded[:]
    del uncounted.failed[:]
    uncounted.succeeded.extend(held_succeeded)
    uncounted.failed.extend(held_failed)
    # A removal that failed earlier (or lagging cache) is retried.
    plan.untrack = [by_uid[u] for u in (*held_succeeded, *held_failed)]

    succeeded = status.succeeded + len(held_succeeded)
    failed = status.failed + len(held_failed)
    active_pods = [p for p in pods if is_active(p)]
    if spec.template.spec.restart_policy == "OnFailure":
        # Containers restarted in place are failures the kubelet absorbed.
        failed_for_limit = failed + sum(restart_count(p) for p in active_pods)
    else:
        failed_for_limit = failed

    suspended = spec.HasField("suspend") and spec.suspend
    _track_suspension(plan, suspended, now)
    start = parse_time(status.start_time)

    failure = _failure(spec, failed_for_limit, start, now, suspended)
    if failure is not None:
        reason, message = failure
        status.succeeded = succeeded
        status.failed = failed + len(active_pods)
        del uncounted.succeeded[:]
        del uncounted.failed[:]
        status.active = 0
        status.ready = 0
        status.terminating = _terminating(pods) + len(active_pods)
        set_condition(status, FAILED, "True", reason, message, now)
        plan.delete = active_pods
        plan.untrack = [p for p in pods if is_tracked(p) and not is_active(p)]
        plan.events.append(("Warning", reason, message))
        plan.status_first = True
        return plan

    if suspended:
        plan.delete = list(active_pods)
    elif indexed and completions is not None:
        _manage_indexed(plan, active_pods, pending, completions, done, spec.parallelism)
    else:
        _manage_non_indexed(plan, active_pods, pending, completions, succeeded, spec.parallelism)

    if plan.create:
        wait = backoff_remaining(backoff_record(pods), now, backoff_base, backoff_max)
        if wait > 0:
            plan.create = []
            plan.requeue_after = wait

    deleting = {id(p) for p in plan.delete}
    staying = [p for p in active_pods if id(p) not in deleting]
    active = len(staying) + len(pending) + len(plan.create)

    if not suspended and _complete(indexed, completions, succeeded, done, active):
        status.succeeded = succeeded
        status.failed = failed
        del uncounted.succeeded[:]
        del uncounted.failed[:]
        status.active = 0
        status.ready = 0
        status.completion_time = format_time(now)
        set_condition(
            status,
            COMPLETE,
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        )
        plan.events.append(("Normal", "Completed", "Job completed"))
        plan.untrack = [p for p in pods if is_tracked(p) and id(p) not in deleting]
        plan.create = []
        plan.requeue_after = None
        plan.status_first = True
        return plan

    status.active = active
    status.ready = sum(1 for p in staying if is_ready(p))
    status.terminating = _terminating(pods) + len(plan.delete)
    if indexed:
        status.completed_indexes = format_indexes(done)
    deadline = spec.active_deadline_seconds if spec.HasField("active_deadline_seconds") else None
    if deadline is not None and start is not None and not suspended:
        left = (start + timedelta(seconds=deadline) - now).total_seconds()
        if plan.requeue_after is None or left < plan.requeue_after:
            plan.requeue_after = left
    return plan


def _terminating(pods: Sequence[Any]) -> int:
    return sum(1 for p in pods if p.metadata.deletion_timestamp and not is_terminal(p))


def _track_suspension(plan: JobPlan, suspended: bool, now: datetime) -> None:
    status = plan.status
    if suspended:
        if set_condition(status, SUSPENDED, "True", "JobSuspended", "Job suspended", now):
            plan.events.append(("Normal", "Suspended", "Job suspended"))
        return
    cond = find_condition(status, SUSPENDED)
    if cond is not None and cond.status == "True":
        set_condition(status, SUSPENDED, "False", "JobResumed", "Job resumed", now)
        plan.events.append(("Normal", "Resumed", "Job resumed"))
        # The deadline counts from the resumption, as in Kubernetes.
        status.start_time = format_time(now)
    if not status.start_time:
        status.start_time = format_time(now)


def _failure(
    spec: Any, failed: int, start: datetime | None, now: datetime, suspended: bool
) -> tuple[str, str] | None:
    limit = spec.backoff_limit if spec.HasField("backoff_limit") else 6
    if failed > limit:
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    if spec.HasField("active_deadline_seconds") and start is not None and not suspended:
        if now >= start + timedelta(seconds=spec.active_deadline_seconds):
            return "DeadlineExceeded", "Job was active longer than specified deadline"
    return None


def _complete(
    indexed: bool, completions: int | None, succeeded: int, done: set[int], active: int
) -> bool:
    if active > 0:
        return False
    if completions is None:
        # Work-queue Job: one success says the queue is drained.
        return succeeded > 0
    if indexed:
        return len(done) >= completions
    return succeeded >= completions


def _manage_non_indexed(
    plan: JobPlan,
    active_pods: list[Any],
    pending: Sequence[int | None],
    completions: int | None,
    succeeded: int,
    parallelism: int,
) -> None:
    active = len(active_pods) + len(pending)
    if completions is None:
        # Once a worker succeeded no new ones start; running ones finish.
        want = active if succeeded > 0 else parallelism
    else:
        want = max(0, min(parallelism, completions - succeeded))
    if active > want:
        plan.delete = deletion_candidates(active_pods)[: active - want]
    elif active < want:
        plan.create = [None] * min(want - active, MAX_CREATES_PER_SYNC)


def _manage_indexed(
    plan: JobPlan,
    active_pods: list[Any],
    pending: Sequence[int | None],
    completions: int,
    done: set[int],
    parallelism: int,
) -> None:
    by_index: dict[int, list[Any]] = {}
    for pod in active_pods:
        index = pod_index(pod)
        if index is None or index >= completions or index in done:
            plan.delete.append(pod)  # nothing left for it to do
        else:
            by_index.setdefault(index, []).append(pod)
    for pods in by_index.values():
        # Two pods on one index: keep the readiest, oldest one.
        ordered = deletion_candidates(pods)
        plan.delete.extend(ordered[:-1])
        pods[:] = ordered[-1:]
    running = set(by_index) | {i for i in pending if i is not None}
    want = max(0, min(parallelism, completions - len(done)))
    if len(running) > want:
        surplus = sorted(by_index, reverse=True)[: len(running) - want]
        plan.delete.extend(by_index[i][0] for i in surplus)
    elif len(running) < want:
        count = min(want - len(running), MAX_CREATES_PER_SYNC)
        plan.create = list(missing_indexes(completions, done, running, count))
