"""CronJob decisions on a fake clock: start times in a time zone across DST,
missed start times (and the >100 rule), startingDeadlineSeconds, concurrency
policies, status.active bookkeeping, history trimming, Job naming."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator.api.cron import parse_schedule
from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.controllers.cronjob_plan import (
    history_to_delete,
    job_ref,
    new_cron_job,
    plan_schedule,
    reconcile_active,
)
from orchestrator.controllers.cronjob_schedule import (
    SCHEDULED_TIMESTAMP_ANNOTATION,
    ZoneError,
    job_name,
    missed_starts,
    next_start,
    resolve_zone,
)
from orchestrator.controllers.job_conditions import format_time

pytestmark = pytest.mark.unit

NY = ZoneInfo("America/New_York")
T0 = datetime(2024, 3, 1, 12, 0, 30, tzinfo=UTC)


def make_cronjob(schedule: str = "* * * * *", **spec: Any) -> batch.CronJob:
    cj = batch.CronJob(api_version="batch/v1", kind="CronJob")
    cj.metadata.name = "report"
    cj.metadata.namespace = "demo"
    cj.metadata.uid = "cj-uid"
    cj.metadata.creation_timestamp = format_time(T0)
    cj.spec.schedule = schedule
    cj.spec.concurrency_policy = spec.pop("concurrency_policy", "Allow")
    for name, value in spec.items():
        setattr(cj.spec, name, value)
    cj.spec.job_template.metadata.labels["app"] = "report"
    cj.spec.job_template.spec.template.spec.containers.add(name="app", image="busybox")
    return cj


def make_job(name: str, outcome: str | None = None, start: datetime | None = None) -> batch.Job:
    job = batch.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = name
    job.metadata.namespace = "demo"
    job.metadata.uid = f"uid-{name}"
    if start is not None:
        job.status.start_time = format_time(start)
    if outcome is not None:
        job.status.conditions.add(type=outcome, status="True")
        if outcome == "Complete" and start is not None:
            job.status.completion_time = format_time(start + timedelta(seconds=5))
    return job


# -- schedule times -------------------------------------------------------------------


def test_next_start_in_zone_across_spring_forward() -> None:
    """2:30 does not exist in New York on 2024-03-10: that day has no run."""
    daily = parse_schedule("30 2 * * *")
    before = datetime(2024, 3, 9, 12, 0, tzinfo=NY)
    first = next_start(daily, NY, before)
    assert (first.day, first.hour, first.minute) == (11, 2, 30)
    assert first.astimezone(UTC) == datetime(2024, 3, 11, 6, 30, tzinfo=UTC)


def test_next_start_in_zone_across_fall_back_fires_once() -> None:
    daily = parse_schedule("30 1 * * *")
    t = datetime(2024, 11, 3, 0, 0, tzinfo=NY)
    first = next_start(daily, NY, t)
    assert first.astimezone(UTC) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # EDT
    second = next_start(daily, NY, first)
    assert second.astimezone(UTC) == datetime(2024, 11, 4, 6, 30, tzinfo=UTC)  # a day on, EST


def test_zone_changes_the_utc_instant() -> None:
    nine = parse_schedule("0 9 * * *")
    assert next_start(nine, UTC, T0) == datetime(2024, 3, 2, 9, 0, tzinfo=UTC)
    assert next_start(nine, NY, T0).astimezone(UTC) == datetime(2024, 3, 1, 14, 0, tzinfo=UTC)


def test_resolve_zone() -> None:
    assert resolve_zone(None) is UTC
    assert resolve_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(ZoneError, match=r'spec\.timeZone "Mars/Olympus": unknown time zone'):
        resolve_zone("Mars/Olympus")
    with pytest.raises(ZoneError, match="explicit"):
        resolve_zone("Local")


def test_missed_starts_counts_and_finds_the_most_recent() -> None:
    every_minute = parse_schedule("* * * * *")
    missed = missed_starts(every_minute, UTC, T0, T0 + timedelta(minutes=5))
    assert missed.count == 5 and not missed.too_many
    assert missed.most_recent == datetime(2024, 3, 1, 12, 5, tzinfo=UTC)
    assert missed_starts(every_minute, UTC, T0, T0 + timedelta(seconds=20)).most_recent is None


def test_more_than_a_hundred_missed_is_flagged_and_found_quickly() -> None:
    every_minute = parse_schedule("* * * * *")
    now = T0 + timedelta(days=365, seconds=15)
    started = time.monotonic()
    missed = missed_starts(every_minute, UTC, T0, now)
    assert time.monotonic() - started < 1.0  # bisection, not a year of minutes
    assert missed.too_many and missed.count == 101
    assert missed.most_recent == now.replace(second=0)
    irregular = parse_schedule("0 0 1,15 * *")
    missed = missed_starts(irregular, NY, T0 - timedelta(days=3650), T0)
    assert missed.too_many
    assert missed.most_recent == datetime(2024, 3, 1, 0, 0, tzinfo=NY)


# -- plan_schedule --------------------------------------------------------------------


def test_due_start_time_runs_and_requeues_for_the_next() -> None:
    cj = make_cronjob()
    now = datetime(2024, 3, 1, 12, 1, 10, tzinfo=UTC)
    plan = plan_schedule(cj, parse_schedule(cj.spec.schedule), UTC, [], now)
    assert plan.run_at == datetime(2024, 3, 1, 12, 1, tzinfo=UTC)
    assert plan.requeue_after == pytest.approx(50.0)


def test_nothing_due_before_the_first_start_time() -> None:
    cj = make_cronjob("0 * * * *")
    plan = plan_schedule(cj, parse_schedule(cj.spec.schedule), UTC, [], T0)
    assert plan.run_at is None
    assert plan.requeue_after == pytest.approx(59 * 60 + 30)


def test_last_schedule_time_is_not_run_again() -> None:
    cj = make_cronjob()
    cj.status.last_schedule_time = "2024-03-01T12:01:00Z"
    now = datetime(2024, 3, 1, 12, 1, 50, tzinfo=UTC)
    assert plan_schedule(cj, parse_schedule("* * * * *"), UTC, [], now).run_at is None


def test_starting_deadline_skips_missed_runs_but_takes_a_fresh_one() -> None:
    cj = make_cronjob("0 * * * *", starting_deadline_seconds=60)
    late = datetime(2024, 3, 1, 13, 2, 0, tzinfo=UTC)
    assert plan_schedule(cj, parse_schedule("0 * * * *"), UTC, [], late).run_at is None
    fresh = datetime(2024, 3, 1, 13, 0, 40, tzinfo=UTC)
    plan = plan_schedule(cj, parse_schedule("0 * * * *"), UTC, [], fresh)
    assert plan.run_at == datetime(2024, 3, 1, 13, 0, tzinfo=UTC)


def test_too_many_missed_warns_and_still_runs_the_latest() -> None:
    cj = make_cronjob()
    now = T0 + timedelta(hours=5)
    plan = plan_schedule(cj, parse_schedule("* * * * *"), UTC, [], now)
    assert plan.run_at == now.replace(second=0)
    assert [e[1] for e in plan.events] == ["TooManyMissedTimes"]
    # A starting deadline bounds the look-back, and the warning goes away.
    cj.spec.starting_deadline_seconds = 200
    plan = plan_schedule(cj, parse_schedule("* * * * *"), UTC, [], now)
    assert plan.events == [] and plan.run_at == now.replace(second=0)


@pytest.mark.parametrize(
    ("policy", "runs", "replaced", "reason"),
    [
        ("Allow", True, [], None),
        ("Forbid", False, [], "JobAlreadyActive"),
        ("Replace", True, ["report-1"], None),
    ],
)
def test_concurrency_policies(
    policy: str, runs: bool, replaced: list[str], reason: str | None
) -> None:
    cj = make_cronjob(concurrency_policy=policy)
    now = T0 + timedelta(minutes=1)
    plan = plan_schedule(cj, parse_schedule("* * * * *"), UTC, ["report-1"], now)
    assert (plan.run_at is not None) == runs
    assert plan.replace == replaced
    assert [e[1] for e in plan.events] == ([reason] if reason else [])


def test_already_active_start_time_is_not_started_twice() -> None:
    cj = make_cronjob()
    now = T0 + timedelta(minutes=1)
    name = job_name("report", now.replace(second=0))
    assert plan_schedule(cj, parse_schedule("* * * * *"), UTC, [name], now).run_at is None


def test_suspended_cronjob_does_nothing_and_sleeps() -> None:
    cj = make_cronjob(suspend=True)
    plan = plan_schedule(cj, parse_schedule("* * * * *"), UTC, [], T0 + timedelta(hours=1))
    assert plan.run_at is None and plan.requeue_after is None


# -- Jobs made, active list, history --------------------------------------------------


def test_job_for_a_start_time() -> None:
    cj = make_cronjob(time_zone="America/New_York")
    scheduled = datetime(2024, 3, 1, 17, 0, tzinfo=UTC)
    job = new_cron_job(cj, scheduled, NY)
    assert job.metadata.name == f"report-{int(scheduled.timestamp()) // 60}" == "report-28488540"
    assert job.metadata.annotations[SCHEDULED_TIMESTAMP_ANNOTATION] == "2024-03-01T12:00:00-05:00"
    assert new_cron_job(cj, scheduled, UTC).metadata.annotations[
        SCHEDULED_TIMESTAMP_ANNOTATION
    ] == ("2024-03-01T17:00:00Z")
    assert job.metadata.labels["app"] == "report"
    ref = job.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("CronJob", "report", "cj-uid", True)
    assert job.spec.template.spec.containers[0].image == "busybox"


def test_reconcile_active() -> None:
    status = batch.CronJobStatus()
    done = make_job("report-1", "Complete", start=T0)
    failed = make_job("report-2", "Failed", start=T0)
    running = make_job("report-3")
    forgotten = make_job("report-4")
    replaced = make_job("report-5")
    status.active.extend([job_ref(done), job_ref(failed), job_ref(running)])
    status.active.add(name="report-0", uid="uid-report-0")  # not in the cache
    result = reconcile_active(
        status, [done, failed, running, forgotten, replaced], {"uid-report-5"}
    )
    assert [r.name for r in result.status.active] == ["report-3", "report-0", "report-4"]
    assert result.missing == ["report-0"]
    assert result.status.last_successful_time == format_time(T0 + timedelta(seconds=5))
    assert [e[1] for e in result.events] == ["SawCompletedJob", "SawCompletedJob"]


def test_history_limits_delete_the_oldest_finished_jobs() -> None:
    jobs = [
        make_job("ok-a", "Complete", start=T0 + timedelta(minutes=3)),
        make_job("ok-b", "Complete", start=T0 + timedelta(minutes=1)),
        make_job("ok-c", "Complete", start=T0 + timedelta(minutes=2)),
        make_job("ok-never-started", "Complete"),
        make_job("bad-a", "Failed", start=T0),
        make_job("bad-b", "Failed", start=T0 + timedelta(minutes=5)),
        make_job("running", None, start=T0),
    ]
    doomed = [j.metadata.name for j in history_to_delete(jobs, 2, 1)]
    assert doomed == ["ok-never-started", "ok-b", "bad-a"]
    assert [j.metadata.name for j in history_to_delete(jobs, 0, 0)] == [
        "ok-never-started",
        "ok-b",
        "ok-c",
        "ok-a",
        "bad-a",
        "bad-b",
    ]
