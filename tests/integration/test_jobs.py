"""The Job and TTL-after-finished controllers as `orchestrator serve` runs
them, against the real apiserver. No node agent runs here: the tests play
the kubelet by writing pod phases through the status subresource."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.meta import parse_rfc3339
from orchestrator.client.client import Client, ConflictError, InvalidError, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TRACKING = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll check until it returns something truthy, and return that."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout}s") from None


def job_manifest(name: str, ns: str, **spec: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "work", "image": "busybox"}],
                    }
                },
                **spec,
            },
        }
    )


async def job_pods(client: Client, ns: str, job: Any, *, active_only: bool = False) -> list[Any]:
    uid = job.metadata.uid
    pods = (
        await client.list("Pod", ns, label_selector=f"batch.kubernetes.io/controller-uid={uid}")
    ).items
    if active_only:
        pods = [
            p
            for p in pods
            if p.status.phase not in ("Succeeded", "Failed") and not p.metadata.deletion_timestamp
        ]
    return sorted(pods, key=lambda p: p.metadata.name)


async def set_phase(client: Client, ns: str, name: str, phase: str) -> None:
    """What the kubelet does when a pod's containers end."""
    for _ in range(20):
        pod = await client.get("Pod", name, ns)
        pod.status.phase = phase
        try:
            await client.update_status(pod)
            return
        except ConflictError:
            continue  # the Job controller touched the pod (its finalizer)
    raise AssertionError(f"could not set pod {ns}/{name} to {phase}")


def condition(job: Any, type_: str) -> Any | None:
    for cond in job.status.conditions:
        if cond.type == type_ and cond.status == "True":
            return cond
    return None


def the_condition(job: Any, type_: str) -> Any:
    cond = condition(job, type_)
    assert cond is not None, f"job {job.metadata.name} has no {type_} condition"
    return cond


async def wait_finished(client: Client, ns: str, name: str, type_: str, timeout: float = 20) -> Any:
    async def check() -> Any:
        job = await client.get("Job", name, ns)
        return job if condition(job, type_) else None

    return await eventually(check, timeout, f"job {ns}/{name} {type_}")


async def event_reasons(client: Client, ns: str, name: str) -> set[str]:
    events = (await client.list("Event", ns)).items
    return {e.reason for e in events if e.involved_object.name == name}


@pytest.fixture
async def client(control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with control_plane.client() as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"jobs-{uuid.uuid4().hex[:10]}"
    await client.create(
        codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    )
    return name


async def test_completions_three_parallelism_two(client: Client, ns: str) -> None:
    job = await client.create(job_manifest("trio", ns, completions=3, parallelism=2))

    async def two_running() -> list[Any]:
        pods = await job_pods(client, ns, job, active_only=True)
        return pods if len(pods) == 2 else []

    first_two = await eventually(two_running, what="two pods")
    for pod in first_two:
        assert TRACKING in pod.metadata.finalizers
        assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "trio"
        assert pod.metadata.owner_references[0].uid == job.metadata.uid
    await set_phase(client, ns, first_two[0].metadata.name, "Succeeded")

    async def third_pod() -> list[Any]:
        pods = await job_pods(client, ns, job, active_only=True)
        fresh = [p for p in pods if p.metadata.name != first_two[1].metadata.name]
        return fresh if len(pods) == 2 and fresh else []

    (third,) = await eventually(third_pod, what="a third pod after one succeeded")
    # Never more than parallelism at once, never more than completions left.
    assert len(await job_pods(client, ns, job)) == 3
    for name in (first_two[1].metadata.name, third.metadata.name):
        await set_phase(client, ns, name, "Succeeded")

    done = await wait_finished(client, ns, "trio", "Complete")
    assert (done.status.succeeded, done.status.failed, done.status.active) == (3, 0, 0)
    assert done.status.completion_time and done.status.start_time
    assert not done.status.uncounted_terminated_pods.succeeded

    async def released() -> bool:
        pods = await job_pods(client, ns, job)
        return len(pods) == 3 and all(TRACKING not in p.metadata.finalizers for p in pods)

    await eventually(released, what="tracking finalizers removed")
    reasons = await eventually(
        lambda: _has(client, ns, "trio", {"SuccessfulCreate", "Completed"}), what="events"
    )
    assert reasons


async def _has(client: Client, ns: str, name: str, wanted: set[str]) -> bool:
    return wanted <= await event_reasons(client, ns, name)


async def test_backoff_limit_exceeded_after_a_backed_off_retry(client: Client, ns: str) -> None:
    job = await client.create(job_manifest("flaky", ns, backoffLimit=1))

    async def one_active() -> Any:
        pods = await job_pods(client, ns, job, active_only=True)
        return pods[0] if len(pods) == 1 else None

    first = await eventually(one_active, what="first pod")
    await set_phase(client, ns, first.metadata.name, "Failed")
    failed_at = time.monotonic()
    retry = await eventually(one_active, timeout=30, what="replacement pod")
    waited = time.monotonic() - failed_at
    assert retry.metadata.name != first.metadata.name
    assert waited >= 8.0, f"replacement came after {waited:.1f}s, before the 10s back-off"
    counted = await client.get("Job", "flaky", ns)
    assert counted.status.failed == 1

    await set_phase(client, ns, retry.metadata.name, "Failed")
    failed = await wait_finished(client, ns, "flaky", "Failed")
    assert the_condition(failed, "Failed").reason == "BackoffLimitExceeded"
    assert failed.status.failed == 2 and failed.status.active == 0
    assert not failed.status.completion_time
    await eventually(
        lambda: _has(client, ns, "flaky", {"BackoffLimitExceeded"}), what="warning event"
    )


async def test_active_deadline_fails_job_and_stops_its_pods(client: Client, ns: str) -> None:
    job = await client.create(
        job_manifest("slow", ns, parallelism=2, completions=4, activeDeadlineSeconds=2)
    )
    await eventually(
        lambda: _count_active(client, ns, job, 2), what="two running pods before the deadline"
    )
    failed = await wait_finished(client, ns, "slow", "Failed", timeout=15)
    assert the_condition(failed, "Failed").reason == "DeadlineExceeded"
    started = parse_rfc3339(failed.status.start_time)
    ended = parse_rfc3339(the_condition(failed, "Failed").last_transition_time)
    assert (ended - started).total_seconds() >= 2
    await eventually(lambda: _no_pods(client, ns, job), what="active pods deleted")


async def _count_active(client: Client, ns: str, job: Any, n: int) -> bool:
    return len(await job_pods(client, ns, job, active_only=True)) == n


async def _no_pods(client: Client, ns: str, job: Any) -> bool:
    return not await job_pods(client, ns, job)


async def test_indexed_job(client: Client, ns: str) -> None:
    job = await client.create(
        job_manifest("shards", ns, completions=3, parallelism=3, completionMode="Indexed")
    )

    async def three() -> list[Any]:
        pods = await job_pods(client, ns, job, active_only=True)
        return pods if len(pods) == 3 else []

    pods = await eventually(three, what="one pod per index")
    by_index = {int(p.metadata.annotations[INDEX_KEY]): p for p in pods}
    assert sorted(by_index) == [0, 1, 2]
    for index, pod in by_index.items():
        assert pod.metadata.labels[INDEX_KEY] == str(index)
        assert pod.spec.hostname == f"shards-{index}"
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["JOB_COMPLETION_INDEX"] == str(index)

    await set_phase(client, ns, by_index[1].metadata.name, "Succeeded")
    await set_phase(client, ns, by_index[2].metadata.name, "Failed")

    async def partial() -> Any:
        j = await client.get("Job", "shards", ns)
        return j if j.status.completed_indexes == "1" and j.status.failed == 1 else None

    await eventually(partial, what="index 1 completed, one failure counted")

    async def index_two_again() -> Any:
        for p in await job_pods(client, ns, job, active_only=True):
            if p.metadata.annotations[INDEX_KEY] == "2":
                return p
        return None

    retry = await eventually(index_two_again, timeout=30, what="index 2 retried")
    await set_phase(client, ns, by_index[0].metadata.name, "Succeeded")
    await set_phase(client, ns, retry.metadata.name, "Succeeded")
    done = await wait_finished(client, ns, "shards", "Complete")
    assert done.status.completed_indexes == "0-2"


async def test_deleted_running_pod_counts_as_failed_and_is_replaced(
    client: Client, ns: str
) -> None:
    job = await client.create(job_manifest("victim", ns))

    async def one_active() -> Any:
        pods = await job_pods(client, ns, job, active_only=True)
        return pods[0] if len(pods) == 1 else None

    pod = await eventually(one_active, what="first pod")
    await client.delete("Pod", pod.metadata.name, ns)

    async def counted() -> Any:
        j = await client.get("Job", "victim", ns)
        return j if j.status.failed == 1 else None

    await eventually(counted, what="the deleted pod counted as failed")
    # The record outlives the pod: its finalizer went only after it was counted.
    await eventually(lambda: _pod_gone(client, ns, pod.metadata.name), what="deleted pod gone")
    replacement = await eventually(one_active, timeout=30, what="replacement pod")
    assert replacement.metadata.name != pod.metadata.name


async def _pod_gone(client: Client, ns: str, name: str) -> bool:
    try:
        await client.get("Pod", name, ns)
    except NotFoundError:
        return True
    return False


async def test_ttl_after_finished_deletes_job_and_pods(client: Client, ns: str) -> None:
    job = await client.create(job_manifest("brief", ns, ttlSecondsAfterFinished=1))

    async def one_active() -> Any:
        pods = await job_pods(client, ns, job, active_only=True)
        return pods[0] if len(pods) == 1 else None

    pod = await eventually(one_active, what="pod")
    await set_phase(client, ns, pod.metadata.name, "Succeeded")
    await wait_finished(client, ns, "brief", "Complete")

    async def all_gone() -> bool:
        try:
            await client.get("Job", "brief", ns)
            return False
        except NotFoundError:
            return not await job_pods(client, ns, job)

    await eventually(all_gone, timeout=20, what="job and its pods deleted after the TTL")


async def test_bad_job_input_is_rejected_clearly(client: Client, ns: str) -> None:
    with pytest.raises(InvalidError) as indexed:
        await client.create(job_manifest("bad", ns, completionMode="Indexed", parallelism=2))
    assert "spec.completions" in indexed.value.message
    with pytest.raises(InvalidError) as negative:
        await client.create(job_manifest("bad", ns, backoffLimit=-1))
    assert "spec.backoffLimit" in negative.value.message
    always = job_manifest("bad", ns)
    always.spec.template.spec.restart_policy = "Always"
    with pytest.raises(InvalidError) as restart:
        await client.create(always)
    assert "spec.template.spec.restartPolicy" in restart.value.message
    with pytest.raises(NotFoundError):
        await client.get("Job", "bad", ns)
