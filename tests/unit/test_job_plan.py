"""The Job controller's decisions (job_plan.plan_job) on a fake clock: pod
accounting through the tracking finalizer, completions and parallelism,
Indexed Jobs, back-off, the backoff limit, the active deadline, suspension."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.job_conditions import finished_type, format_time
from orchestrator.controllers.job_indexes import COMPLETION_INDEX_KEY
from orchestrator.controllers.job_plan import TRACKING_FINALIZER, JobPlan, plan_job

pytestmark = pytest.mark.unit

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
_uids = itertools.count(1)


def make_job(
    *,
    completions: int | None = 1,
    parallelism: int = 1,
    indexed: bool = False,
    backoff_limit: int = 6,
    deadline: int | None = None,
    suspend: bool = False,
    restart_policy: str = "Never",
) -> batch.Job:
    job = batch.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = "pi"
    job.metadata.namespace = "demo"
    job.metadata.uid = "job-uid"
    if completions is not None:
        job.spec.completions = completions
    job.spec.parallelism = parallelism
    job.spec.backoff_limit = backoff_limit
    job.spec.completion_mode = "Indexed" if indexed else "NonIndexed"
    job.spec.suspend = suspend
    if deadline is not None:
        job.spec.active_deadline_seconds = deadline
    job.spec.template.spec.restart_policy = restart_policy
    job.spec.template.spec.containers.add(name="app", image="busybox")
    return job


def make_pod(
    phase: str = "Pending",
    *,
    index: int | None = None,
    tracked: bool = True,
    created: datetime = T0,
    finished: datetime | None = None,
    deleting: bool = False,
    ready: bool = False,
) -> core.Pod:
    pod = core.Pod(api_version="v1", kind="Pod")
    n = next(_uids)
    pod.metadata.name = f"pi-{n}"
    pod.metadata.namespace = "demo"
    pod.metadata.uid = f"pod-{n}"
    pod.metadata.creation_timestamp = format_time(created)
    if tracked:
        pod.metadata.finalizers.append(TRACKING_FINALIZER)
    if index is not None:
        pod.metadata.annotations[COMPLETION_INDEX_KEY] = str(index)
    if deleting:
        pod.metadata.deletion_timestamp = format_time(created)
    pod.status.phase = phase
    if finished is not None:
        cs = pod.status.container_statuses.add(name="app")
        cs.state.terminated.finished_at = format_time(finished)
    if ready:
        pod.status.conditions.add(type="Ready", status="True")
    return pod


def started(job: batch.Job, at: datetime = T0) -> batch.Job:
    job.status.start_time = format_time(at)
    return job


def apply_status(job: batch.Job, plan: JobPlan) -> batch.Job:
    """The Job as it reads after the plan's status is written."""
    out = batch.Job()
    out.CopyFrom(job)
    out.status.CopyFrom(plan.status)
    return out


def untrack(pods: list[core.Pod], plan: JobPlan) -> None:
    for pod in plan.untrack:
        pod.metadata.finalizers.remove(TRACKING_FINALIZER)


def settle(job: batch.Job, pods: list[core.Pod], now: datetime = T0) -> tuple[batch.Job, JobPlan]:
    """Run plans (writing status, dropping finalizers) until one needs no
    more counting: what the controller converges to with a fresh cache."""
    for _ in range(5):
        plan = plan_job(job, pods, now)
        job = apply_status(job, plan)
        untrack(pods, plan)
        if not plan.status_first or finished_type(job):
            return job, plan
    raise AssertionError("plan did not settle")


# -- creating pods --------------------------------------------------------------------


def test_new_job_starts_parallelism_pods_and_its_clock() -> None:
    plan = plan_job(make_job(completions=5, parallelism=2), [], T0)
    assert plan.create == [None, None]
    assert plan.status.active == 2
    assert plan.status.start_time == "2024-03-01T12:00:00Z"
    assert not plan.status_first


def test_never_more_pods_than_completions_left() -> None:
    job = started(make_job(completions=3, parallelism=5))
    assert len(plan_job(job, [], T0).create) == 3
    job.status.succeeded = 2
    assert plan_job(job, [], T0).create == [None]


def test_pods_created_but_not_yet_seen_count_as_active() -> None:
    job = started(make_job(completions=4, parallelism=2))
    plan = plan_job(job, [make_pod("Running")], T0, pending=[None])
    assert plan.create == []
    assert plan.status.active == 2


def test_surplus_pods_deleted_pending_and_newest_first() -> None:
    job = started(make_job(completions=10, parallelism=1))
    old_running = make_pod("Running", created=T0, ready=True)
    new_running = make_pod("Running", created=T0 + timedelta(seconds=5), ready=True)
    pending = make_pod("Pending", created=T0 - timedelta(seconds=5))
    plan = plan_job(job, [old_running, new_running, pending], T0)
    assert plan.delete == [pending, new_running]
    assert plan.status.active == 1


def test_parallelism_zero_stops_all_pods_without_finishing() -> None:
    job = started(make_job(completions=3, parallelism=0))
    pods = [make_pod("Running")]
    plan = plan_job(job, pods, T0)
    assert plan.delete == pods and plan.create == []
    assert finished_type(apply_status(job, plan)) is None


# -- tracking outcomes ----------------------------------------------------------------


def test_finished_pod_recorded_before_its_finalizer_goes() -> None:
    job = started(make_job(completions=2))
    done = make_pod("Succeeded")
    plan = plan_job(job, [done], T0)
    assert plan.status_first
    assert list(plan.status.uncounted_terminated_pods.succeeded) == [done.metadata.uid]
    assert plan.status.succeeded == 0
    assert plan.untrack == [done]
    assert plan.create == []  # decisions wait for the counts to be durable


def test_recorded_outcome_counted_once_finalizer_is_gone() -> None:
    job = started(make_job(completions=2))
    done = make_pod("Succeeded")
    job = apply_status(job, plan_job(job, [done], T0))
    # The cache still shows the finalizer: not counted yet, removal retried.
    plan = plan_job(job, [done], T0)
    assert plan.status.succeeded == 0 and plan.untrack == [done]
    done.metadata.finalizers.remove(TRACKING_FINALIZER)
    plan = plan_job(job, [done], T0)
    assert plan.status.succeeded == 1
    assert not plan.status.uncounted_terminated_pods.succeeded
    job = apply_status(job, plan)
    # Seen again later, the untracked pod is never counted a second time.
    assert plan_job(job, [done], T0).status.succeeded == 1


def test_counts_survive_pod_deletion() -> None:
    job = started(make_job(completions=3, parallelism=3))
    pods = [make_pod("Succeeded"), make_pod("Failed"), make_pod("Running")]
    job, _ = settle(job, pods)
    assert (job.status.succeeded, job.status.failed) == (1, 1)
    # Someone deletes the finished pods: the counts stay.
    job, _ = settle(job, pods[2:])
    assert (job.status.succeeded, job.status.failed) == (1, 1)


def test_pod_deleted_while_running_counts_as_failed_and_is_replaced() -> None:
    job = started(make_job(completions=1))
    victim = make_pod("Running", deleting=True)
    job, plan = settle(job, [victim])
    assert job.status.failed == 1
    assert plan.create == [None]
    assert job.status.terminating == 1


def test_own_deletions_do_not_count_as_failures() -> None:
    """Pods the controller removes lose their finalizer before the delete,
    so when they show up as deleted they are not counted."""
    job = started(make_job(completions=5, parallelism=1))
    surplus = make_pod("Running", tracked=False, deleting=True)
    job, _ = settle(job, [surplus])
    assert job.status.failed == 0


# -- completion -----------------------------------------------------------------------


def test_completes_when_enough_pods_succeeded() -> None:
    job = started(make_job(completions=2, parallelism=2))
    pods = [make_pod("Succeeded"), make_pod("Succeeded")]
    later = T0 + timedelta(seconds=30)
    job, plan = settle(job, pods, later)
    assert finished_type(job) == "Complete"
    assert job.status.succeeded == 2 and job.status.active == 0
    assert job.status.completion_time == format_time(later)
    assert ("Normal", "Completed", "Job completed") in plan.events


def test_extra_active_pods_are_stopped_once_completions_reached() -> None:
    job = started(make_job(completions=1, parallelism=2))
    pods = [make_pod("Succeeded"), make_pod("Running")]
    job, plan = settle(job, pods)
    assert plan.delete == [pods[1]]
    assert finished_type(job) == "Complete"


def test_work_queue_job_done_when_one_succeeded_and_none_active() -> None:
    job = started(make_job(completions=None, parallelism=3))
    assert len(plan_job(job, [], T0).create) == 3
    pods = [make_pod("Succeeded"), make_pod("Running"), make_pod("Running")]
    job, plan = settle(job, pods)
    assert plan.create == [] and plan.delete == []  # the others finish their share
    assert finished_type(job) is None
    for pod in pods[1:]:
        pod.status.phase = "Succeeded"
    job, _ = settle(job, pods)
    assert finished_type(job) == "Complete"
    assert job.status.succeeded == 3


def test_finished_job_releases_its_pods() -> None:
    job = started(make_job())
    job, _ = settle(job, [make_pod("Succeeded")])
    assert finished_type(job) == "Complete"
    straggler = make_pod("Succeeded")
    plan = plan_job(job, [straggler], T0)
    assert plan.untrack == [straggler] and plan.status == job.status


# -- Indexed --------------------------------------------------------------------------


def test_indexed_job_creates_lowest_missing_indexes() -> None:
    job = started(make_job(completions=5, parallelism=3, indexed=True))
    job.status.completed_indexes = "0,2"
    plan = plan_job(job, [make_pod("Running", index=1)], T0)
    assert plan.create == [3, 4]


def test_indexed_completed_indexes_and_completion() -> None:
    job = started(make_job(completions=3, parallelism=3, indexed=True))
    pods = [make_pod("Succeeded", index=i) for i in (0, 2)] + [make_pod("Failed", index=1)]
    job, plan = settle(job, pods)
    assert job.status.completed_indexes == "0,2"
    assert job.status.failed == 1
    assert plan.create == [1]  # the failed index is retried
    pods.append(make_pod("Succeeded", index=1))
    job, _ = settle(job, pods)
    assert job.status.completed_indexes == "0-2"
    assert finished_type(job) == "Complete"


def test_indexed_duplicates_and_strays_are_removed() -> None:
    job = started(make_job(completions=3, parallelism=3, indexed=True))
    job.status.completed_indexes = "2"
    older = make_pod("Running", index=0, ready=True)
    duplicate = make_pod("Pending", index=0, created=T0 + timedelta(seconds=1))
    finished_index = make_pod("Running", index=2)
    out_of_range = make_pod("Running", index=7)
    no_index = make_pod("Running")
    plan = plan_job(job, [older, duplicate, finished_index, out_of_range, no_index], T0)
    assert {p.metadata.name for p in plan.delete} == {
        p.metadata.name for p in (duplicate, finished_index, out_of_range, no_index)
    }
    assert plan.create == [1]


def test_indexed_pending_indexes_are_not_created_twice() -> None:
    job = started(make_job(completions=3, parallelism=3, indexed=True))
    plan = plan_job(job, [], T0, pending=[0, 2])
    assert plan.create == [1]


# -- failure: backoff limit, back-off, deadline ---------------------------------------


def test_backoff_limit_exceeded_fails_job_and_stops_pods() -> None:
    job = started(make_job(completions=3, parallelism=2, backoff_limit=1))
    pods = [make_pod("Failed", finished=T0), make_pod("Failed", finished=T0), make_pod("Running")]
    job, plan = settle(job, pods, T0 + timedelta(seconds=1))
    assert finished_type(job) == "Failed"
    cond = next(c for c in job.status.conditions if c.type == "Failed")
    assert cond.reason == "BackoffLimitExceeded"
    assert plan.delete == [pods[2]]
    assert job.status.failed == 3  # the killed pod counts too
    assert ("Warning", "BackoffLimitExceeded", cond.message) in plan.events
    assert not job.status.completion_time


def test_restarts_count_against_backoff_limit_with_on_failure() -> None:
    job = started(make_job(backoff_limit=2, restart_policy="OnFailure"))
    pod = make_pod("Running")
    pod.status.container_statuses.add(name="app", restart_count=3)
    job, _ = settle(job, [pod])
    assert finished_type(job) == "Failed"


def test_replacement_waits_for_backoff() -> None:
    job = started(make_job(completions=1, backoff_limit=6))
    failed = [make_pod("Failed", finished=T0)]
    job, plan = settle(job, failed, T0 + timedelta(seconds=4))
    assert plan.create == []
    assert plan.requeue_after == pytest.approx(6.0)
    job, plan = settle(job, failed, T0 + timedelta(seconds=10))
    assert plan.create == [None]


def test_deadline_exceeded_fails_job() -> None:
    job = started(make_job(completions=1, deadline=30))
    pods = [make_pod("Running")]
    plan = plan_job(job, pods, T0 + timedelta(seconds=10))
    assert finished_type(apply_status(job, plan)) is None
    assert plan.requeue_after == pytest.approx(20.0)
    plan = plan_job(job, pods, T0 + timedelta(seconds=30))
    job = apply_status(job, plan)
    assert finished_type(job) == "Failed"
    assert job.status.conditions[-1].reason == "DeadlineExceeded"
    assert plan.delete == pods and plan.status_first


# -- suspension -----------------------------------------------------------------------


def test_suspended_job_stops_pods_and_resumes_with_a_new_start_time() -> None:
    job = started(make_job(completions=2, parallelism=2, suspend=True, deadline=60))
    pods = [make_pod("Running"), make_pod("Pending")]
    plan = plan_job(job, pods, T0 + timedelta(seconds=100))
    job = apply_status(job, plan)
    assert plan.delete == pods and plan.create == []
    assert ("Normal", "Suspended", "Job suspended") in plan.events
    assert finished_type(job) is None  # a suspended Job's deadline does not run
    job.spec.suspend = False
    resumed_at = T0 + timedelta(seconds=200)
    plan = plan_job(job, [], resumed_at)
    assert plan.create == [None, None]
    assert plan.status.start_time == format_time(resumed_at)
    assert ("Normal", "Resumed", "Job resumed") in plan.events
