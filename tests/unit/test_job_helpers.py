"""Job helpers: completion-index intervals, back-off delays, the pods a Job makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.pb import batch_v1_pb2 as batch
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.job import Expectations
from orchestrator.controllers.job_backoff import (
    backoff_delay,
    backoff_record,
    backoff_remaining,
)
from orchestrator.controllers.job_conditions import format_time
from orchestrator.controllers.job_indexes import (
    COMPLETION_INDEX_KEY,
    format_indexes,
    missing_indexes,
    parse_indexes,
    pod_index,
)
from orchestrator.controllers.job_plan import TRACKING_FINALIZER
from orchestrator.controllers.job_pods import new_job_pod

pytestmark = pytest.mark.unit

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_index_intervals_round_trip() -> None:
    assert format_indexes([5, 1, 3, 4, 7, 2, 9]) == "1-5,7,9"
    assert format_indexes([0, 1]) == "0-1"
    assert format_indexes([]) == ""
    assert parse_indexes("1-5,7,9") == {1, 2, 3, 4, 5, 7, 9}
    assert parse_indexes("") == set()


def test_index_parsing_tolerates_junk_and_clips_to_completions() -> None:
    assert parse_indexes("0-2,x,4-y,,8", limit=5) == {0, 1, 2}
    assert parse_indexes("3-9", limit=5) == {3, 4}


def test_missing_indexes_lowest_first() -> None:
    assert missing_indexes(6, done={0, 3}, running={1}, count=2) == [2, 4]
    assert missing_indexes(3, done={0, 1, 2}, running=set(), count=5) == []


def test_pod_index_from_annotation_or_label() -> None:
    pod = core.Pod()
    assert pod_index(pod) is None
    pod.metadata.labels[COMPLETION_INDEX_KEY] = "4"
    assert pod_index(pod) == 4
    pod.metadata.annotations[COMPLETION_INDEX_KEY] = "²"
    assert pod_index(pod) is None


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (1, 10), (2, 20), (3, 40), (6, 320), (7, 360), (60, 360)],
)
def test_backoff_doubles_from_ten_seconds_capped_at_six_minutes(
    failures: int, delay: float
) -> None:
    assert backoff_delay(failures) == delay


def _finished(phase: str, at: datetime) -> core.Pod:
    pod = core.Pod()
    pod.status.phase = phase
    pod.status.container_statuses.add(name="app").state.terminated.finished_at = format_time(at)
    return pod


def test_backoff_counts_failures_after_the_last_success() -> None:
    pods = [
        _finished("Failed", T0),
        _finished("Succeeded", T0 + timedelta(seconds=10)),
        _finished("Failed", T0 + timedelta(seconds=20)),
        _finished("Failed", T0 + timedelta(seconds=30)),
        core.Pod(status=core.PodStatus(phase="Running")),
    ]
    record = backoff_record(pods)
    assert record.failures_after_success == 2
    assert record.last_failure == T0 + timedelta(seconds=30)
    # Two failures: 20 s from the last one.
    assert backoff_remaining(record, T0 + timedelta(seconds=35)) == 15
    assert backoff_remaining(record, T0 + timedelta(seconds=50)) == 0
    # A clock that jumped back never waits longer than one full delay.
    assert backoff_remaining(record, T0 - timedelta(hours=1)) == 20


def _job(indexed: bool) -> batch.Job:
    job = batch.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = "render"
    job.metadata.namespace = "demo"
    job.metadata.uid = "u1"
    job.spec.completion_mode = "Indexed" if indexed else "NonIndexed"
    job.spec.template.metadata.labels["batch.kubernetes.io/job-name"] = "render"
    job.spec.template.spec.containers.add(name="app", image="busybox")
    job.spec.template.spec.init_containers.add(name="init", image="busybox")
    return job


def test_job_pod_is_owned_tracked_and_labelled() -> None:
    pod = new_job_pod(_job(indexed=False), None)
    assert pod.metadata.generate_name == "render-"
    assert list(pod.metadata.finalizers) == [TRACKING_FINALIZER]
    ref = pod.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Job", "render", "u1", True)
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "render"
    assert COMPLETION_INDEX_KEY not in pod.metadata.annotations


def test_indexed_job_pod_carries_its_index_everywhere() -> None:
    pod = new_job_pod(_job(indexed=True), 3)
    assert pod.metadata.generate_name == "render-3-"
    assert pod.metadata.annotations[COMPLETION_INDEX_KEY] == "3"
    assert pod.metadata.labels[COMPLETION_INDEX_KEY] == "3"
    assert pod.spec.hostname == "render-3"
    for container in (*pod.spec.containers, *pod.spec.init_containers):
        assert [(e.name, e.value) for e in container.env] == [("JOB_COMPLETION_INDEX", "3")]


def test_expectations_hold_until_observed_or_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("orchestrator.controllers.job.time.monotonic", lambda: now[0])
    expected = Expectations(ttl=300)
    expected.expect("demo/pi", "pi-0-abcde", 0)
    expected.expect("demo/pi", "pi-1-fghij", 1)
    assert expected.pending("demo/pi") == {"pi-0-abcde": 0, "pi-1-fghij": 1}
    expected.observed("demo/pi", "pi-0-abcde")
    assert expected.pending("demo/pi") == {"pi-1-fghij": 1}
    now[0] += 301  # the watch never showed it: stop waiting
    assert expected.pending("demo/pi") == {}
    expected.expect("demo/pi", "pi-2-klmno", 2)
    expected.forget("demo/pi")
    assert expected.pending("demo/pi") == {}
