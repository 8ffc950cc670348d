"""When the TTL-after-finished controller deletes a Job, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.controllers.job_conditions import format_time
from orchestrator.controllers.ttl_after_finished import expires_at, ttl_remaining

pytestmark = pytest.mark.unit

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def finished_job(outcome: str | None, ttl: int | None, at: datetime = T0) -> batch.Job:
    job = batch.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = "pi"
    if ttl is not None:
        job.spec.ttl_seconds_after_finished = ttl
    if outcome is not None:
        job.status.conditions.add(type=outcome, status="True", last_transition_time=format_time(at))
    return job


@pytest.mark.parametrize("outcome", ["Complete", "Failed"])
def test_finished_job_expires_ttl_after_its_finish(outcome: str) -> None:
    job = finished_job(outcome, ttl=100)
    assert expires_at(job) == T0 + timedelta(seconds=100)
    assert ttl_remaining(job, T0 + timedelta(seconds=40)) == 60
    assert ttl_remaining(job, T0 + timedelta(seconds=100)) == 0
    assert ttl_remaining(job, T0 + timedelta(seconds=130)) == -30


def test_zero_ttl_means_at_once() -> None:
    assert ttl_remaining(finished_job("Complete", ttl=0), T0) == 0


def test_jobs_that_never_expire() -> None:
    assert ttl_remaining(finished_job("Complete", ttl=None), T0) is None  # no TTL
    assert ttl_remaining(finished_job(None, ttl=5), T0) is None  # still running
    suspended = finished_job(None, ttl=5)
    suspended.status.conditions.add(type="Suspended", status="True")
    assert ttl_remaining(suspended, T0) is None
    going = finished_job("Complete", ttl=5)
    going.metadata.deletion_timestamp = format_time(T0)
    assert ttl_remaining(going, T0 + timedelta(hours=1)) is None  # being deleted already


def test_finish_time_falls_back_to_completion_time() -> None:
    job = finished_job("Complete", ttl=10)
    job.status.conditions[0].last_transition_time = ""
    job.status.completion_time = format_time(T0)
    assert expires_at(job) == T0 + timedelta(seconds=10)
